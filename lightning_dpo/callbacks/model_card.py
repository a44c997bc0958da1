"""The model card written beside every export (``README.md`` in the Hub's format), and the opt-in push to the Hub.

The card has YAML front matter that the Hub reads (``base_model``, ``datasets``, ``library_name``, ``tags``,
``license`` where known, built with ``huggingface_hub.ModelCardData``), then the recipe (loss, β, reference,
optimizer, steps, batch), the final validation metrics, and how to reproduce the run: the config the
LightningCLI saved, or the command line.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_dpo.embedded import is_embedded

TAGS = ["dpo", "lightning", "lightning-dpo"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""``org/name``: what the Hub takes as ``base_model`` or ``datasets``; local paths and ``embedded:`` are not."""


@dataclass(frozen=True)
class HubSettings:
    """Where ``HFExportCallback`` uploads the final export (``push_to_hub`` in YAML), through ``huggingface_hub``."""

    repo_id: str
    """``user/name`` or ``org/name``; created when missing."""
    private: bool = False
    """Create the repository as private (an existing one keeps its visibility)."""
    revision: str | None = None
    """The branch to push to (created when missing); ``None``: the default branch."""
    commit_message: str = "Upload DPO model trained with lightning_dpo"


def hub_id(name: Any) -> str | None:
    """``name`` when it is a Hub id (``org/name``) and not a local path, else ``None``."""
    if not isinstance(name, str) or is_embedded(name) or os.path.exists(name) or not HUB_ID.match(name):
        return None
    return name


def card_metadata(trainer: Any, pl_module: Any, adapter: bool) -> dict[str, Any]:
    """The front matter: what the Hub indexes the model by."""
    hparams = dict(getattr(pl_module, "hparams", {}))
    data = dict(getattr(trainer.datamodule, "hparams", {}) or {}) if trainer.datamodule is not None else {}
    sources = data.get("dataset")
    sources = [sources] if isinstance(sources, str) else [s.get("path") for s in sources or []]
    metadata: dict[str, Any] = {
        "base_model": hub_id(hparams.get("model_name_or_path")),
        "datasets": [d for d in map(hub_id, sources) if d] or None,
        "library_name": "peft" if adapter else "transformers",
        "tags": TAGS,
        "license": _base_license(hparams.get("model_name_or_path")),
    }
    return {key: value for key, value in metadata.items() if value is not None}


def _base_license(source: Any) -> str | None:
    """The license of a local base model, read from its own card; ``None`` when unknown (no network lookup)."""
    card = Path(str(source)) / "README.md" if isinstance(source, str) and not is_embedded(source) else None
    if card is None or not card.is_file():
        return None
    from huggingface_hub import ModelCard

    return ModelCard.load(card).data.to_dict().get("license")


def recipe(trainer: Any, pl_module: Any) -> list[tuple[str, str]]:
    """(setting, value) rows of how the model was trained."""
    rows = []
    loss = getattr(pl_module, "loss_settings", None)
    if loss is not None:
        rows.append(("loss", f"{loss.type} (β = {loss.beta:g})"))
    reference = getattr(getattr(pl_module, "reference", None), "name", None)
    if reference:
        rows.append(("reference", reference))
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        lr = optimizer.defaults.get("lr")
        rows.append(("optimizer", f"{type(optimizer).__name__}" + (f" (lr {lr:g})" if lr is not None else "")))
    rows.append(("optimizer steps", str(trainer.global_step)))
    data = getattr(trainer.datamodule, "hparams", None) if trainer.datamodule is not None else None
    if data is not None and "batch_size" in data:
        per_device, devices, accumulate = data["batch_size"], trainer.world_size, trainer.accumulate_grad_batches
        rows.append(
            (
                "pairs per optimizer step",
                f"{per_device * devices * accumulate} ({per_device} per device × {devices} device(s) × {accumulate} "
                "accumulated)",
            )
        )
        rows.append(("data", str(data.get("dataset"))))
    rows.append(("precision", str(trainer.precision)))
    return rows


def final_metrics(trainer: Any) -> list[tuple[str, float]]:
    """The last logged validation metrics, by name."""
    out = []
    for name, value in sorted(trainer.callback_metrics.items()):
        if name.startswith("val/"):
            number = float(value)
            if math.isfinite(number):
                out.append((name, number))
    return out


def reproduction(log_dir: str | None) -> str:
    """The config the LightningCLI saved in the run directory, else the command line that ran."""
    config = Path(log_dir) / "config.yaml" if log_dir else None
    if config is not None and config.is_file():
        return (
            "The run's config, as the LightningCLI saved it (`lightning-dpo fit --config config.yaml`):\n\n"
            f"```yaml\n{config.read_text(encoding='utf-8').rstrip()}\n```"
        )
    return f"The command that ran:\n\n```bash\n{shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}\n```"


def model_card(trainer: Any, pl_module: Any, log_dir: str | None, adapter: bool = False) -> str:
    """The whole ``README.md`` of an export. ``log_dir``: the run's (``trainer.log_dir`` is a collective under
    DDP, so the caller reads it on every rank)."""
    from huggingface_hub import ModelCardData

    __version__ = importlib.metadata.version("lightning-dpo")

    metadata = card_metadata(trainer, pl_module, adapter)
    base = metadata.get("base_model") or getattr(pl_module, "hparams", {}).get("model_name_or_path", "a causal LM")
    lines = [
        f"---\n{ModelCardData(**metadata).to_yaml()}\n---",
        "",
        f"# {'LoRA adapter of ' if adapter else ''}{base}, trained with DPO",
        "",
        f"Fine-tuned from `{base}` with Direct Preference Optimization (DPO, Rafailov et al. 2023, "
        f"arXiv:2305.18290) using lightning_dpo {__version__} on PyTorch Lightning.",
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in recipe(trainer, pl_module)),
    ]
    metrics = final_metrics(trainer)
    if metrics:
        lines += ["", "## Final validation metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{name}` | {value:.4f} |" for name, value in metrics]
    lines += ["", "## Reproduce", "", reproduction(log_dir), ""]
    return "\n".join(lines)


def push_to_hub(path: str, settings: HubSettings) -> str:
    """Upload the export folder ``path``; return the commit URL. Errors say what to do and that ``path`` is intact."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(settings.repo_id, private=settings.private, exist_ok=True)
        if settings.revision is not None:
            api.create_branch(settings.repo_id, branch=settings.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=settings.repo_id,
            folder_path=path,
            revision=settings.revision,
            commit_message=settings.commit_message,
        )
    except Exception as e:  # no token, no network, offline mode, no rights: all the user's to fix
        raise RuntimeError(
            f"push_to_hub to {settings.repo_id!r} failed ({type(e).__name__}: {e}). The export is intact at {path}; "
            "log in (`hf auth login` or HF_TOKEN), check the network and HF_HUB_OFFLINE, then upload it with "
            f"`hf upload {settings.repo_id} {path}`"
        ) from e
    return str(getattr(commit, "commit_url", commit))
