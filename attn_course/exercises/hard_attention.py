"""Exercises (being written)."""
