"""Sensors of the memories.ai provider."""
