"""Triggers of the memories.ai provider."""
