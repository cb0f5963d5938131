"""Errors that reach a user: the CLI prints them as one line, the service maps them to 4xx."""

from __future__ import annotations


class PixelsceneError(Exception):
    """Base class for errors caused by input (files, configs, arguments), not by bugs."""


class DataError(PixelsceneError):
    """A dataset file is unreadable or malformed; the message names the file and line."""


class ModelLoadError(PixelsceneError):
    """A model folder is missing, incomplete or does not match its config."""


class OutputError(PixelsceneError):
    """A palette spec or file, a scale, or a code-grid file is invalid; the message says where."""
