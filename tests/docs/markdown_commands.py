"""The command blocks of the README and the docs pages, and how the tests run them.

The convention (docs/writing-docs.md says it for writers): the line before every fenced shell block
(```bash, ```sh, ```shell, ```console) is one marker,

    <!-- test: run -->                 run as written;
    <!-- test: run shortened -->       run shortened (SHORTENED below says how);
    <!-- test: skip reason="..." -->   not run, and why (it needs a GPU, the Hub, minutes, ...).

A ```python block may carry a run marker too; it then runs as a script. Other blocks (output, YAML, plain
text) are not commands. The run blocks of one Markdown file run in order, in one scratch directory that
holds links to the repository's configs/, examples/, scripts/ and benchmarks/, as a reader would type them
in a checkout, so a later block may use what an earlier one wrote (``lightning_logs/version_0``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r'^\s*<!-- test: (?P<action>run shortened|run|skip reason="(?P<reason>[^"]+)") -->\s*$')
LINKED = ("configs", "examples", "scripts", "benchmarks")

# What "shortened" means. Shell: every `lightning-dpo fit` gets SHORT_FIT appended, and every
# `python examples/<name>.py` gets --fast-dev-run (each example's own two-step switch). Python: every
# Trainer is built with SHORT_TRAINER overriding its arguments. A shortened block in which nothing was
# shortened fails, so the marker cannot go stale.
SHORT_FIT = "--trainer.max_steps 2 --trainer.val_check_interval 2 --trainer.limit_val_batches 2"
SHORT_TRAINER = {"max_steps": 2, "max_epochs": None, "val_check_interval": 2, "limit_val_batches": 2}
SHORTENED = {
    "lightning-dpo fit ...": f"appends {SHORT_FIT}",
    "python examples/NAME.py ...": "appends --fast-dev-run",
    "a Trainer built in a ```python block": f"its arguments overridden with {SHORT_TRAINER}",
}

SHELL_PREAMBLE = f"""\
set -e -o pipefail
lightning-dpo() {{
  if [ "$1" = fit ]; then echo fit >> "$SHORTENED_LOG"; command lightning-dpo "$@" {SHORT_FIT};
  else command lightning-dpo "$@"; fi
}}
python() {{
  if [[ "$1" == examples/*.py ]]; then echo "$1" >> "$SHORTENED_LOG"; command python "$@" --fast-dev-run;
  else command python "$@"; fi
}}
"""

PYTHON_PREAMBLE = f"""\
import os as _os, sys as _sys
def _shorten(cls):
    init = cls.__init__
    def short_init(self, *args, **kwargs):
        with open(_os.environ["SHORTENED_LOG"], "a") as log:
            log.write("Trainer\\n")
        init(self, *args, **{{**kwargs, **{SHORT_TRAINER!r}}})
    cls.__init__ = short_init
# Only the namespace the block imports: importing the other first would change which one lightning_dpo uses.
import {{namespace}} as _pl
_shorten(_pl.Trainer)
"""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its marker (``None`` if it has none) and its text."""

    path: Path
    line: int
    lang: str
    action: str | None
    reason: str | None
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.action is not None and self.action.startswith("run")

    @property
    def shortened(self) -> bool:
        return self.action == "run shortened"


def markdown_files() -> list[Path]:
    """The README and every page of the docs site."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the marker on the nearest non-blank line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        start, indent, fence = i, opening["indent"], opening["fence"]
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        body = textwrap.dedent("\n".join(line[len(indent) :] for line in lines[start + 1 : i]))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        action = marker["action"].split(" reason=")[0] if marker else None
        found.append(Block(path, start + 1, opening["lang"], action, marker["reason"] if marker else None, body + "\n"))
        i += 1
    return found


def command_blocks(path: Path) -> list[Block]:
    """The blocks a test runs or skips: every shell block, and python blocks with a marker."""
    return [b for b in blocks(path) if b.lang in SHELL or (b.lang == "python" and b.action is not None)]


def scratch_directory(where: Path) -> Path:
    """A working directory that looks like a checkout to the documented commands."""
    where.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = where / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    return where


def environment(log: Path) -> dict[str, str]:
    """The test's environment, with this interpreter's bin/ first (``lightning-dpo``, ``python``) and no
    network: the documented commands run offline on the embedded default."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(SHORTENED_LOG=str(log), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("PYTHONPATH", str(REPO))
    return env


def namespace_of(source: str) -> str:
    return "lightning.pytorch" if re.search(r"^\s*(import|from) lightning\b", source, re.M) else "pytorch_lightning"


def run_block(block: Block, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one block in ``cwd``; raise AssertionError with its output when it fails, or when a shortened
    block shortened nothing."""
    log = cwd / ".shortened.log"
    log.unlink(missing_ok=True)
    log.touch()
    if block.lang == "python":
        script = cwd / f".block_{block.line}.py"
        preamble = PYTHON_PREAMBLE.replace("{namespace}", namespace_of(block.text)) if block.shortened else ""
        script.write_text(preamble + block.text, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-c", SHELL_PREAMBLE + block.text]
    done = subprocess.run(
        command, cwd=cwd, env=environment(log), capture_output=True, text=True, timeout=timeout, check=False
    )
    output = f"{block.where} exited {done.returncode}\n--- block\n{block.text}--- stdout\n{done.stdout[-4000:]}"
    assert done.returncode == 0, output + f"--- stderr\n{done.stderr[-8000:]}"
    if block.shortened:
        assert log.read_text().strip(), f"{block.where} is marked 'run shortened' but nothing in it was shortened"
    return done
