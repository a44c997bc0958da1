"""The docs site: ``mkdocs build --strict`` passes, renders the API reference from the docstrings, and fails on
a broken link or a missing reference (so CI catches both)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the site whose mkdocs.yml is in ``root``. The doc tools are in the ``test``
    extra (through ``docs``); without them this fails rather than skips, so CI cannot lose the check."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(site)]
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)}
    import os

    return subprocess.run(
        command, cwd=root, env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_site_builds_strictly_with_the_api_reference(tmp_path):
    done = build(REPO, tmp_path / "site")
    assert done.returncode == 0, f"mkdocs build --strict failed (pip install -e '.[docs]'):\n{done.stderr[-6000:]}"
    losses = (tmp_path / "site" / "api" / "losses" / "index.html").read_text(encoding="utf-8")
    # mkdocstrings rendered the docstrings, not just the headings: register_loss's own sentence is there.
    assert "Decorator: add" in losses and "preference_loss" in losses
    assert (tmp_path / "site" / "frontier.png").is_file()


@pytest.mark.parametrize(
    ("page", "mutation", "named"),
    [
        ("losses.md", "\nSee [the missing page](no-such-page.md).\n", "no-such-page.md"),
        ("losses.md", "\nSee [a missing heading](reference-modes.md#no-such-heading).\n", "no-such-heading"),
        ("api/losses.md", "\n::: lightning_dpo.losses.no_such_function\n", "no_such_function"),
    ],
    ids=["broken-link", "broken-anchor", "missing-reference"],
)
def test_a_broken_link_or_a_missing_reference_fails_the_build(tmp_path, page, mutation, named):
    """The same configuration on a copy of the docs with one mistake: the strict build must refuse it."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "lightning_dpo").symlink_to(REPO / "lightning_dpo", target_is_directory=True)
    with open(root / "docs" / page, "a", encoding="utf-8") as f:
        f.write(mutation)
    done = build(root, tmp_path / "site")
    assert done.returncode != 0, f"the strict build accepted {mutation.strip()!r}"
    assert named in done.stdout + done.stderr
