"""Every command block of the README and the docs pages is marked to run or to skip (with a reason), and the
blocks marked to run do, in order, on the embedded default, offline. The convention and what "shortened"
appends are in ``markdown_commands.py`` and docs/writing-docs.md; docs/examples.md runs in tests/examples."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def load_helper():
    """tests/docs/markdown_commands.py, once per process (tests are not a package)."""
    if "markdown_commands" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "markdown_commands", Path(__file__).with_name("markdown_commands.py")
        )
        sys.modules["markdown_commands"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["markdown_commands"]


md = load_helper()

EXAMPLES_PAGE = md.REPO / "docs" / "examples.md"
PAGES = [p for p in md.markdown_files() if p != EXAMPLES_PAGE and any(b.runs for b in md.command_blocks(p))]


def test_every_command_block_is_marked():
    unmarked = [b.where for p in md.markdown_files() for b in md.command_blocks(p) if b.action is None]
    assert not unmarked, f"command blocks without <!-- test: run|run shortened|skip reason=... -->: {unmarked}"


def test_every_marker_is_well_formed_and_precedes_a_block():
    problems = []
    for path in md.markdown_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.lstrip().startswith("<!-- test"):
                continue
            following = next((x for x in lines[i + 1 :] if x.strip()), "")
            if not md.MARKER.match(line) or not md.FENCE.match(following):
                problems.append(f"{path.relative_to(md.REPO)}:{i + 1}: {line.strip()}")
    assert not problems, f"malformed or stray markers: {problems}"


def test_the_readme_and_the_pages_have_commands_that_run():
    """A guard against the convention silently matching nothing (a renamed fence, a changed marker)."""
    assert md.REPO / "README.md" in PAGES and len(PAGES) >= 5
    assert sum(b.runs for p in md.markdown_files() for b in md.command_blocks(p)) >= 10


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(md.REPO)) for p in PAGES])
def test_documented_commands_run(path, tmp_path):
    cwd = md.scratch_directory(tmp_path / "checkout")
    for block in md.command_blocks(path):
        if block.runs:
            md.run_block(block, cwd)
