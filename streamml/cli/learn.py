"""Placeholder: filled in by the learn work."""

COMMANDS: list = []
