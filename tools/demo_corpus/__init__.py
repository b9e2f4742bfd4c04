"""Synthetic finance demo corpus generator."""
