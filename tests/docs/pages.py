"""The markdown a user reads: README.md and every page under docs/ (globbed, so new pages are covered too)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SITE = "https://keras-vit.github.io/keras-vit/"


def pages() -> list[Path]:
    """README.md, then docs/**/*.md in path order."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def python_blocks() -> list[tuple[str, int, str]]:
    """(page, index within the page, code) of every ```python block."""
    blocks = []
    for path in pages():
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)):
            blocks.append((page_name(path), index, code))
    return blocks


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.DOTALL)


def shell_lines() -> list[str]:
    """Shell lines of every page, with backslash continuations joined."""
    lines = []
    for path in pages():
        for block in shell_blocks(path.read_text()):
            lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    return lines


def cli_commands() -> list[list[str]]:
    """Every `keras-vit ...` command line in the shell blocks of every page, in page order."""
    commands = []
    for line in shell_lines():
        for part in re.split(r"&&|;", line.split("#")[0]):
            part = part.strip()
            if part.startswith("keras-vit"):
                commands.append(shlex.split(part))
    return commands


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (mkdocs' default)."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s-]+", "-", text).strip("-")


def anchors(path: Path) -> set[str]:
    """Anchors of a page's headings, outside code blocks."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(match) for match in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}
