"""Placeholder: filled in by the demo work."""

COMMANDS: list = []
