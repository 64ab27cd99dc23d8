"""Placeholder: filled in by the score work."""

COMMANDS: list = []
