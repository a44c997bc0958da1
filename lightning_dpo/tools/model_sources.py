"""What ``lightning-dpo evaluate`` can evaluate, and how each is loaded.

A source is one of:

- a Lightning checkpoint (``.ckpt``): ``DPOModule.load_from_checkpoint(weights_only=True)``; its policy, and
  its reference as the module rebuilds it (the frozen copy of the model source, or a separate model);
- a run directory (``lightning_logs/version_N``) with an ``hf_model/`` export: the final export, and with
  ``all_steps`` every ``hf_model/step-N`` export before it (``HFExportCallback(every_n_train_steps=...)``);
  a folder of such runs (``lightning_logs``) stands for its newest ``version_N``;
- a Hugging Face model directory (``save_pretrained``), a Hub id, or ``embedded:<name>``.

The reference of an exported model is read from the run's ``hparams.yaml`` (``reference.model_name_or_path``,
else ``model_name_or_path``) when the export sits inside a run directory; an explicit reference overrides it.
"""

from __future__ import annotations

import filecmp
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_dpo.models import load_causal_lm, load_tokenizer
from lightning_dpo.tools.runs import newest_run_below


@dataclass
class ModelSource:
    """One model to evaluate."""

    path: str
    """What to load: a ``.ckpt`` file, an HF directory, a Hub id or ``embedded:<name>``."""
    label: str
    """The point's name in the CSV and the plot."""
    group: str
    """Points of one group (one run) are joined by a line in the plot, in ``step`` order."""
    reference: str | None = None
    """The reference read from the run, if any."""
    beta: float | None = None
    step: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def is_checkpoint(self) -> bool:
        return self.path.endswith(".ckpt")


def expand_source(spec: str, group: str | None = None, all_steps: bool = True) -> list[ModelSource]:
    """One command-line source -> the models it stands for (several for a run directory with step exports)."""
    path = Path(spec)
    if spec.endswith(".ckpt"):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {spec!r} does not exist")
        return [_source(spec, _run_hparams(path.parent.parent), group, _step_from_ckpt(path.name))]
    if path.is_dir() and not (path / "hf_model").is_dir() and not (path / "config.json").exists():
        path = newest_run_below(path, _is_run_dir) or path  # runs/beta-0.1, lightning_logs or a root dir
    if path.is_dir() and (path / "hf_model").is_dir():  # a run directory
        hparams = _run_hparams(path)
        exports = sorted(_step_exports(path / "hf_model")) if all_steps else []
        sources = [_source(str(p), hparams, group, n) for n, p in exports]
        if not exports or not _same_weights(exports[-1][1], path / "hf_model"):
            sources.append(_source(str(path / "hf_model"), hparams, group, None))
        return sources
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{spec!r} is neither a Hugging Face model directory (no config.json) nor a run directory "
                "(no hf_model/ inside): give an HFExportCallback export, a run directory or a .ckpt file"
            )
        # hf_model/ -> version_N/hparams.yaml; hf_model/step-N/ -> version_N/hparams.yaml
        step = _step_from_dir(path.name)
        run = path.parent.parent if step is not None else path.parent
        return [_source(spec, _run_hparams(run), group, step)]
    return [_source(spec, {}, group, None)]  # a Hub id or embedded:<name>


def _source(path: str, hparams: dict[str, Any], group: str | None, step: int | None) -> ModelSource:
    loss, reference = hparams.get("loss") or {}, hparams.get("reference") or {}
    beta = loss.get("beta")
    default_group = f"β={beta:g}" if isinstance(beta, (int, float)) else _short_name(path)
    group = group or default_group
    label = group if step is None else f"{group} step {step}"
    reference = reference.get("model_name_or_path") or hparams.get("model_name_or_path")
    return ModelSource(path, label, group, reference, beta, step, hparams)


def _short_name(path: str) -> str:
    """runs/pft/version_0/hf_model/step-25 -> "pft": the last path part that is not a run/export name."""
    skip = re.compile(r"hf_model|step-\d+|version_\d+|lightning_logs|\.")
    parts = [p for p in Path(path).parts if not skip.fullmatch(p)]
    return parts[-1] if parts else path


def _step_exports(hf_model: Path) -> list[tuple[int, Path]]:
    return [(n, p) for p in hf_model.iterdir() if p.is_dir() and (n := _step_from_dir(p.name)) is not None]


def _is_run_dir(path: Path) -> bool:
    return (path / "hf_model").is_dir()


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two exports hold byte-identical weight files (the final export repeats the last step's
    when training ended on an export step)."""
    names = sorted(p.name for p in a.glob("*.safetensors")) or sorted(p.name for p in a.glob("*.bin"))
    if not names or names != sorted(p.name for p in b.glob("*.safetensors")) + sorted(p.name for p in b.glob("*.bin")):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def _step_from_dir(name: str) -> int | None:
    m = re.fullmatch(r"step-(\d+)", name)
    return int(m.group(1)) if m else None


def _step_from_ckpt(name: str) -> int | None:
    m = re.search(r"step=(\d+)", name)
    return int(m.group(1)) if m else None


def _run_hparams(run_dir: Path) -> dict[str, Any]:
    """The run's ``hparams.yaml`` (CSVLogger / TensorBoardLogger), or {}. Read as plain data, never
    instantiated: the ``_instantiator`` key and any tag are ignored."""
    path = run_dir / "hparams.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class LoadedModel:
    """A policy ready to generate, its tokenizer, and the reference that comes with it, if any."""

    policy: nn.Module
    tokenizer: PreTrainedTokenizerBase
    module: nn.Module | None = None
    """The ``DPOModule`` of a checkpoint, whose reference strategy gives the reference model."""

    def reference_context(self) -> AbstractContextManager[nn.Module | None]:
        """The checkpoint's own reference (its strategy's ``as_reference()``), or ``None``."""
        return self.module.reference.as_reference() if self.module is not None else nullcontext(None)


def load_source(source: ModelSource, device: str = "cpu") -> LoadedModel:
    """Load a source's policy (eval mode, on ``device``) and tokenizer; a checkpoint also brings its module."""
    if not source.is_checkpoint:
        return LoadedModel(load_causal_lm(source.path).to(device).eval(), load_tokenizer(source.path))
    from lightning_dpo.module import DPOModule

    module = DPOModule.load_from_checkpoint(source.path, map_location="cpu", weights_only=True)
    module.to(device).eval()
    return LoadedModel(module.policy, load_source_tokenizer(source), module)


def load_source_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """A source's tokenizer without loading its weights. For a checkpoint: the data module's
    ``tokenizer_name_or_path`` when the run named one, else the model's own."""
    if not source.is_checkpoint:
        return load_tokenizer(source.path)
    import torch

    checkpoint = torch.load(source.path, map_location="cpu", weights_only=True, mmap=True)
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    model = checkpoint.get("hyper_parameters") or {}
    name = data.get("tokenizer_name_or_path") or model.get("model_name_or_path")
    if name is None:
        raise ValueError(f"checkpoint {source.path!r} names no model or tokenizer in its hyperparameters")
    return load_tokenizer(name)


def load_reference(name_or_path: str, device: str = "cpu") -> nn.Module:
    """A reference model from a Hub id, a directory or ``embedded:<name>``, in eval mode on ``device``."""
    return load_causal_lm(name_or_path).to(device).eval()
