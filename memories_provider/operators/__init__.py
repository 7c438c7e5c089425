"""Operators of the memories.ai provider."""
