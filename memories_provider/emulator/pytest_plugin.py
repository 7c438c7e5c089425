"""pytest plugin exposing the ``memories_emulator`` fixture (placeholder)."""
