"""A Python file with no step."""

VALUE = 1
