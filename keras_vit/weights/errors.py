"""The one error type of weight loading, and readable reports of what did not fit."""

from __future__ import annotations

from collections.abc import Iterable


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not fit the model; nothing was loaded.

    A `ValueError`, so the CLI prints it as a clean error and callers that
    already catch bad input catch this too.
    """


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def listing(title: str, lines: Iterable[str], limit: int = 25) -> str:
    """`title` followed by one indented line per entry, cut after `limit` entries."""
    lines = list(lines)
    shown = [f"    {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"    ... and {len(lines) - limit} more")
    return "\n".join([f"  {title} ({len(lines)}):", *shown])
