"""Every file in examples/ is documented on docs/examples.md in a block that runs it, and each such block runs,
shortened (``--fast-dev-run``: two steps), on the embedded default, offline."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest


def load_helper():
    """tests/docs/markdown_commands.py, once per process (tests are not a package)."""
    if "markdown_commands" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "markdown_commands", Path(__file__).parents[1] / "docs" / "markdown_commands.py"
        )
        sys.modules["markdown_commands"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["markdown_commands"]


md = load_helper()

PAGE = md.REPO / "docs" / "examples.md"
EXAMPLES = sorted(p.name for p in (md.REPO / "examples").glob("*.py"))
BLOCKS = [b for b in md.command_blocks(PAGE) if b.runs]


def test_every_example_is_documented_in_a_block_that_runs_it():
    missing = [name for name in EXAMPLES if not any(f"python examples/{name}" in b.text for b in BLOCKS)]
    assert not missing, f"add a '<!-- test: run shortened -->' block to docs/examples.md for {missing}"
    assert all(b.shortened for b in BLOCKS), "examples run shortened: their --fast-dev-run keeps CI short"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return md.scratch_directory(tmp_path_factory.mktemp("examples") / "checkout")


def example_names(block) -> str:
    return "+".join(re.findall(r"examples/(\w+)\.py", block.text)) or f"line{block.line}"


@pytest.mark.parametrize("block", BLOCKS, ids=[example_names(b) for b in BLOCKS])
def test_example_runs(block, checkout):
    done = md.run_block(block, checkout)
    assert "Traceback" not in done.stderr
