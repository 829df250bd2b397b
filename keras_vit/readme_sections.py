"""Generated README sections: the text between a pair of HTML-comment markers, rewritten atomically.

`keras_vit.models.table` (model table) and `keras_vit.cli_reference`
(command-line reference) generate their sections from the code; a test
regenerates each and compares it with the README.
"""

from __future__ import annotations

from pathlib import Path

from keras_vit.training.io import atomic_path


def replace_section(text: str, start: str, end: str, body: str, what: str) -> str:
    """`text` with everything between the `start` and `end` markers replaced by `body`.

    Raises:
        ValueError: when a marker is missing, naming both and `what` goes there.
    """
    if start not in text or end not in text:
        raise ValueError(f"The README has no {start} ... {end} markers to put the {what} between.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically (a reader sees the old or the new file, never half of one)."""
    with atomic_path(str(path)) as tmp:
        Path(tmp).write_text(text)
