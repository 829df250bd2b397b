"""The docs work as written: README.md and every docs/ page run their Python blocks, their generated
sections equal today's registry and flags, and their links lead somewhere."""

import re

import pytest

from tests.docs.pages import DOCS, README, ROOT, SITE, anchors, cli_commands, pages, python_blocks, shell_blocks
from tests.docs.reader_files import prepare_for_python_block
from tools import cli_reference, model_table, speed_table

README_TEXT = README.read_text()
BLOCKS = python_blocks()


def first_showings() -> list[tuple[str, int]]:
    """(page, index) of each distinct block: one shown on two pages (the quick tour) runs once."""
    seen, result = set(), []
    for page, index, code in BLOCKS:
        if code not in seen:
            seen.add(code)
            result.append((page, index))
    return result


def test_readme_top_has_exactly_two_setup_commands():
    first_block = shell_blocks(README_TEXT)[0]
    assert README_TEXT.index(first_block) < README_TEXT.index("\n## "), "the set-up commands open the README"
    lines = [line for line in first_block.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("pip install") and "keras-vit train" in lines[0]
    assert lines[1].startswith("pip install") and "pytest" in lines[1]


def test_readme_is_a_front_page():
    assert len(README_TEXT.splitlines()) <= 400


def test_pages_are_found_under_docs():
    found = {path.relative_to(DOCS).as_posix() for path in pages() if path != README}
    assert {"index.md", "models.md", "cli.md", "benchmarks.md", "api/index.md"} <= found, found


def test_model_table_equals_registry():
    page = model_table.MODELS_PAGE.read_text()
    assert model_table.replace_table(page) == page, "run: python -m tools.model_table --write"
    assert model_table.replace_summary(README_TEXT) == README_TEXT, "run: python -m tools.model_table --write"


def test_model_table_groups_every_model_by_family():
    import keras_vit

    table = model_table.markdown_table()
    for name in keras_vit.list_models():
        assert f"| `{name}` |" in table, name
    assert table.index("### ViT") < table.index("### DeiT") < table.index("### Transformer")


def test_speed_table_equals_paired_results():
    assert speed_table.replace_table(README_TEXT) == README_TEXT, "run: python -m tools.speed_table --write"


def test_speed_table_reads_the_rotation_with_most_columns():
    paired = """**predict vit_base_patch16_224 batch 8, 2 rounds x 1 calls, AMD EPYC, load 1.0**

| variant | GFLOP/s (median) | vs first, per-round median (quartiles) |
|---|---:|---:|
| keras_hub:float32:auto | 1.0 | 1.00 (1.00-1.00) |
| keras_vit:float32:off | 1.2 | 1.20 (1.10-1.30) |
| matmul:float32 | 9.0 | n/a |

**predict vit_base_patch16_224 batch 8, 2 rounds x 1 calls, AMD EPYC, load 1.0**

| variant | GFLOP/s (median) | vs first, per-round median (quartiles) |
|---|---:|---:|
| keras_hub:float32:auto | 1.0 | 1.00 (1.00-1.00) |
| keras_vit:float32:off | 1.1 | 1.10 (1.00-1.20) |
| timm:float32 | 0.5 | 0.50 (0.40-0.60) |
"""
    tables = speed_table.paired_tables(paired)
    assert [t["ratios"] for t in tables] == [
        {"keras_hub:float32:auto": "1.00", "keras_vit:float32:off": "1.20"},
        {"keras_hub:float32:auto": "1.00", "keras_vit:float32:off": "1.10", "timm:float32": "0.50"},
    ]
    with pytest.raises(ValueError, match="no paired table for predict vit_tiny_patch16_224 batch 8"):
        speed_table.markdown_table(paired)


def test_cli_reference_equals_flags():
    page = cli_reference.CLI_PAGE.read_text()
    assert cli_reference.replace_reference(page) == page, "run: python -m tools.cli_reference --write"


def test_generated_sections_name_the_missing_markers():
    with pytest.raises(ValueError, match="no <!-- model-table:start -->"):
        model_table.replace_table("# a page without markers\n")


def readme_links() -> list[str]:
    return re.findall(r"\]\((https://keras-vit\.github\.io/keras-vit/[^)]*)\)", README_TEXT)


def test_readme_links_lead_to_docs_pages_and_headings():
    """README links point at the site; each must be a page in docs/ (and a heading there, with an anchor)."""
    links = readme_links()
    assert len(links) >= 8, links
    assert not re.findall(r"\]\((?!https?://|#)[^)]*\)", README_TEXT), "README links to the site, not relative paths"
    for link in links:
        assert page_of(link).is_file(), f"{link}: no docs page {page_of(link).relative_to(ROOT)}"
        if "#" in link:
            anchor = link.split("#", 1)[1]
            assert anchor in anchors(page_of(link)), f"{link}: no heading with anchor #{anchor}"


def page_of(link: str):
    """The docs/ file a site link is built from: `<SITE>x/` from docs/x.md, or docs/x/index.md for a folder."""
    path = link[len(SITE) :].split("#", 1)[0].strip("/")
    if not path:
        return DOCS / "index.md"
    return DOCS / f"{path}.md" if not (DOCS / path).is_dir() else DOCS / path / "index.md"


def test_a_link_to_a_missing_page_is_caught():
    assert not page_of(f"{SITE}no-such-page/").is_file()
    assert page_of(f"{SITE}models/#vit") == DOCS / "models.md" and "vit" in anchors(DOCS / "models.md")
    assert page_of(SITE) == DOCS / "index.md" and page_of(f"{SITE}api/") == DOCS / "api" / "index.md"


@pytest.mark.slow
@pytest.mark.parametrize("page, index", first_showings())
def test_python_block_runs(page, index, tmp_path, monkeypatch):
    """Each block alone, in an empty folder holding only the files a reader brings (see reader_files)."""
    code = next(code for p, i, code in BLOCKS if (p, i) == (page, index))
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("KERAS_VIT_CACHE", str(cache))  # catalogue names resolve to files written there
    prepare_for_python_block(code, work, cache)
    exec(compile(code, f"{page} block {index}", "exec"), {"__name__": "__docs__"})


def test_pages_show_keras_vit_commands_that_exist():
    from keras_vit.cli import COMMANDS

    commands = cli_commands()
    assert commands, "the docs show no keras-vit command"
    for argv in commands:
        assert len(argv) == 1 or argv[1] in COMMANDS or argv[1] in ("--help", "--version"), argv
