"""``HFExportCallback``: save the policy, its tokenizer and a model card in Hugging Face format; push to the Hub."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from lightning_dpo import storage
from lightning_dpo.callbacks.model_card import HubSettings, model_card, push_to_hub
from lightning_dpo.models import is_peft_model
from lightning_dpo.namespace import pl, submodule
from lightning_dpo.settings import as_settings
from lightning_dpo.sharding import full_policy_state_dict


class HFExportCallback(pl.Callback):
    """Writes ``policy.save_pretrained`` and the data module's tokenizer into ``<log_dir>/<dirname>`` at the
    end of ``fit``, and, with ``every_n_train_steps``, into ``<log_dir>/<dirname>/step-<N>`` during it.
    ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load the result. Each
    export is written to a hidden folder beside its target and renamed into place (:func:`publish_export`),
    so a crash mid-export never leaves a half-written model.

    Every export gets a ``README.md`` model card in the Hub's format (:mod:`lightning_dpo.callbacks.model_card`):
    front matter, the recipe, the final validation metrics and the config that reproduces it.

    A LoRA policy is saved as its adapter alone (``PeftModel.from_pretrained`` loads it onto the base), or,
    with ``merge_adapter``, merged into the base weights (``AutoModelForCausalLM`` loads it). Under sharded
    strategies (FSDP1, FSDP2, DeepSpeed ZeRO-3) every rank helps gather the full policy; only global rank 0
    writes.

    Args:
        dirname: Folder inside the run's log directory (or an absolute path).
        every_n_train_steps: Also export every N optimizer steps. ``None``: only at the end of fit.
        merge_adapter: For a LoRA policy, save the merged model instead of the adapter.
        push_to_hub: Upload the final export to the Hugging Face Hub (rank 0, after it is written): a
            :class:`HubSettings` or its dict, e.g. ``{repo_id: me/my-dpo-model, private: true}``. Needs a token
            (``hf auth login`` or ``HF_TOKEN``) and the network; a failure says so and leaves the export intact.
    """

    def __init__(
        self,
        dirname: str = "hf_model",
        every_n_train_steps: int | None = None,
        merge_adapter: bool = False,
        push_to_hub: HubSettings | None = None,
    ):
        self.dirname = dirname
        self.every_n_train_steps = every_n_train_steps
        self.merge_adapter = merge_adapter
        self.push_to_hub = (
            as_settings(HubSettings, push_to_hub, "HFExportCallback(push_to_hub=...)") if push_to_hub else None
        )
        self.last_export: str | None = None
        self._last_step: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        n = self.every_n_train_steps
        step = trainer.global_step
        if n and step > 0 and step % n == 0 and step != self._last_step:
            self._last_step = step
            self.export(trainer, pl_module, os.path.join(self._root(trainer), f"step-{step}"))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self._root(trainer)
        self.export(trainer, pl_module, path)
        if self.push_to_hub is not None and trainer.is_global_zero:
            url = push_to_hub(path, self.push_to_hub)
            submodule("utilities").rank_zero_info(f"pushed {path} to the Hub: {url}")

    def _root(self, trainer: pl.Trainer) -> str:
        return os.path.join(trainer.log_dir or trainer.default_root_dir, self.dirname)

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, path: str) -> None:
        # Under FSDP1/FSDP2/ZeRO-3 every rank takes part in gathering the full policy; rank 0 gets it.
        state = full_policy_state_dict(pl_module.policy, trainer.strategy.model)
        log_dir = trainer.log_dir  # a collective under DDP: read on every rank
        if trainer.is_global_zero:
            tokenizer = getattr(trainer.datamodule, "tokenizer", None) if trainer.datamodule is not None else None

            def write(folder: str) -> None:
                save_policy(pl_module.policy, folder, self.merge_adapter, state_dict=state)
                if tokenizer is not None:
                    tokenizer.save_pretrained(folder)
                (Path(folder) / "README.md").write_text(card, encoding="utf-8")

            adapter = is_peft_model(pl_module.policy) and not self.merge_adapter
            card = model_card(trainer, pl_module, log_dir, adapter=adapter)
            publish_export(path, write)
            submodule("utilities").rank_zero_info(
                f"exported the policy{' and tokenizer' if tokenizer else ''} to {path}"
            )
        self.last_export = path
        trainer.strategy.barrier()


def publish_export(path: str, write: Callable[[str], None]) -> None:
    """Run ``write(folder)`` on a hidden staging folder beside ``path``, then rename it to ``path``: a crash
    mid-export leaves the previous export, or none, never a folder that ``from_pretrained`` half-loads.

    Replacing an existing export (the end-of-fit export goes into the folder that holds the ``step-N``
    exports): the old folder is renamed aside, the new one renamed into place, and the old one's ``step-*``
    folders moved into it before the old one is deleted. A crash between those renames leaves a complete
    export (or the complete staging folder) and the step exports in the hidden old folder: nothing is lost.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = storage.staging_path(final)
    try:
        write(str(staging))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # only this export's partial files
        raise
    if not final.exists():
        os.rename(staging, final)
        return
    old = storage.staging_path(final, "old")
    os.rename(final, old)
    os.rename(staging, final)
    for child in sorted(old.iterdir()):
        if child.is_dir() and child.name.startswith("step-") and not (final / child.name).exists():
            os.rename(child, final / child.name)
    shutil.rmtree(old, ignore_errors=True)


def save_policy(
    policy: nn.Module, path: str, merge_adapter: bool = False, state_dict: dict[str, Tensor] | None = None
) -> None:
    """``save_pretrained`` of the policy; a LoRA policy as its trained adapter, or merged into a copy.

    ``state_dict``: the full weights gathered from a sharded policy (``sharding.full_policy_state_dict``);
    ``None`` when the policy holds them itself.
    """
    policy = getattr(policy, "_fsdp_wrapped_module", policy)  # an FSDP1 unit: save the model inside it
    kwargs = {} if state_dict is None else {"state_dict": state_dict}
    if not is_peft_model(policy):
        policy.save_pretrained(path, **kwargs)
    elif merge_adapter:
        if state_dict is not None:
            raise ValueError(
                "HFExportCallback(merge_adapter=True) cannot merge a sharded LoRA policy; export the adapter "
                "(merge_adapter: false) and merge it offline with PeftModel.from_pretrained(...).merge_and_unload()"
            )
        copy.deepcopy(policy).merge_and_unload().save_pretrained(path)  # merging in place would end training
    else:
        policy.save_pretrained(path, selected_adapters=[policy.active_adapter], **kwargs)  # not TR-DPO's frozen copy
