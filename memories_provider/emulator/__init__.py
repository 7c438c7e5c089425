"""A local emulator of the memories.ai HTTP API (placeholder until the emulator lands)."""
