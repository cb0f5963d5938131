"""Blueprints mounted under /v1."""
