"""Generated sections of markdown files: the text between a pair of HTML-comment markers, rewritten atomically.

`tools.model_table` (model tables) and `tools.cli_reference` (command-line
reference) generate their sections from the code; tests regenerate each and
compare it with the pages, so the docs never drift from the registry and the flags.
"""

from __future__ import annotations

from pathlib import Path

from keras_vit.training.io import atomic_path

ROOT = Path(__file__).resolve().parent.parent


def replace_section(text: str, start: str, end: str, body: str, what: str) -> str:
    """`text` with everything between the `start` and `end` markers replaced by `body`.

    Raises:
        ValueError: when a marker is missing, naming both and what goes there.
    """
    if start not in text or end not in text:
        raise ValueError(f"The page has no {start} ... {end} markers to put the {what} between.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically (a reader sees the old or the new file, never half of one)."""
    with atomic_path(str(path)) as tmp:
        Path(tmp).write_text(text)


def update_file(path: Path, render) -> bool:
    """Rewrites `path` with `render(text)` when that changes it; returns whether it did."""
    text = path.read_text()
    new = render(text)
    if new != text:
        write_text(path, new)
    return new != text
