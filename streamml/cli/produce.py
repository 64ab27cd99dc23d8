"""Placeholder: filled in by the produce work."""

COMMANDS: list = []
