"""Losses, audio metrics, experiments and the report."""
