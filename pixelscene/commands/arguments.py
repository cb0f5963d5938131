"""Argument types shared by the commands: argparse reports their errors as usage errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _items(text: str, parse: Callable[[str], object], what: str) -> list:
    """Comma-separated values parsed one by one; at least one."""
    try:
        values = [parse(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
    return values


def float_list(text: str) -> list[float]:
    """Comma-separated numbers, at least one."""
    return _items(text, float, "numbers")


def positive_int_list(text: str) -> list[int]:
    """Comma-separated whole numbers >= 1, at least one."""
    values = _items(text, int, "whole numbers")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    """Comma-separated names, at least one."""
    return _items(text, str, "names")
