"""``GenerationSamples``: what the policy (and the reference) write, every N validation runs.

A loss curve says little about what DPO did to the text; a few fixed prompts sampled at every validation
do. Samples go to the logger as a table and always to ``samples.jsonl`` in the run's log directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions, preserved_rng
from lightning_dpo.evaluation.rewards import RewardFn, load_reward
from lightning_dpo.models import load_tokenizer
from lightning_dpo.namespace import pl, submodule

COLUMNS = ("step", "epoch", "model", "prompt", "completion", "num_tokens", "reward")


class GenerationSamples(pl.Callback):
    """Generates completions of fixed prompts from the policy, and from the reference where there is one,
    at the end of every ``every_n_val_runs``-th validation run (never during the sanity check).

    - **Prompts**: ``prompts`` if given (tokenised like training prompts), else the first ``num_prompts``
      prompts of the data module's validation split.
    - **Reference**: whatever the reference strategy's ``as_reference()`` yields: the frozen copy, or under
      ``adapter`` the policy with its adapter disabled; nothing when training is reference-free or uses
      precomputed reference log-probs.
    - **Output**: ``samples.jsonl`` in ``trainer.log_dir`` (one JSON object per completion, appended), and a
      table for each logger that shows one: TensorBoard (text, markdown table), Weights & Biases
      (``log_table``), MLflow (``log_table`` as a JSON artifact).
    - **Distribution**: every process generates the same prompts (with ``synced_gpus`` when there are several,
      so sharded parameters are gathered in step); only global rank 0 writes.
    - **Randomness**: sampling runs inside a forked RNG seeded with ``seed``; the training's torch, Python and
      NumPy random streams continue exactly as without this callback.

    Args:
        every_n_val_runs: Generate at every N-th validation run (1: every run).
        num_prompts: Prompts taken from the validation split when ``prompts`` is not given.
        prompts: Prompt texts to use instead, e.g. ``"\\n\\nHuman: Hi!\\n\\nAssistant:"``.
        max_new_tokens: Tokens per completion at most.
        temperature: Sampling temperature.
        top_p: Nucleus-sampling threshold (1: off).
        top_k: Top-k truncation (0: off).
        do_sample: ``False`` for greedy decoding.
        seed: Sampling seed; the same at every run, so changes between runs come from the weights.
        include_reference: Also generate from the reference.
        reward: Fills the ``reward`` column: a ``(prompts, completions) -> rewards`` callable or its dotted path
            (``lightning_dpo.tasks.politeness.politeness_reward`` for the bundled task), or ``hf:<model>``.
        filename: The JSONL file in the run's log directory; ``None`` to skip it.
        log_key: The name of the table in the loggers.
        batch_size: Prompts per ``generate`` call.
    """

    def __init__(
        self,
        every_n_val_runs: int = 1,
        num_prompts: int = 4,
        prompts: list[str] | None = None,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = True,
        seed: int = 0,
        include_reference: bool = True,
        reward: str | RewardFn | None = None,
        filename: str | None = "samples.jsonl",
        log_key: str = "samples",
        batch_size: int = 16,
    ) -> None:
        if every_n_val_runs < 1:
            raise ValueError(f"every_n_val_runs must be at least 1, got {every_n_val_runs}")
        self.every_n_val_runs = every_n_val_runs
        self.num_prompts = num_prompts
        self.prompts = prompts
        self.settings = SamplingSettings(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            do_sample=do_sample,
            seed=seed,
        )
        self.include_reference = include_reference
        self.reward = reward
        self.filename = filename
        self.log_key = log_key
        self.batch_size = batch_size
        self._val_runs = 0
        self.last_rows: list[dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_runs += 1
        if self._val_runs % self.every_n_val_runs:
            return
        with preserved_rng():  # belt and braces: a reward function may draw random numbers too
            self.last_rows = self.generate(trainer, pl_module)  # every rank
        self.write(trainer, self.last_rows)  # rank 0 only

    def state_dict(self) -> dict[str, Any]:
        return {"val_runs": self._val_runs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._val_runs = state_dict.get("val_runs", 0)

    # -- generation (all ranks) ------------------------------------------------------------------------

    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        """Sample from the policy and the reference; the rows of the table (the same on every rank)."""
        tokenizer = _tokenizer(trainer, pl_module)
        prompt_ids = self._prompt_ids(trainer, tokenizer)
        prompt_texts = tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        synced = trainer.world_size > 1
        kwargs = dict(
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            batch_size=self.batch_size,
            synced_gpus=synced,
        )

        outputs: list[tuple[str, list[list[int]]]] = [
            ("policy", generate_completions(pl_module.policy, prompt_ids, self.settings, **kwargs))
        ]
        if self.include_reference:
            with pl_module.reference.as_reference() as reference:
                if isinstance(reference, nn.Module):
                    outputs.append(("reference", generate_completions(reference, prompt_ids, self.settings, **kwargs)))

        if isinstance(self.reward, str):
            self.reward = load_reward(self.reward)
        rows = []
        for model, completions in outputs:
            texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
            rewards = list(self.reward(prompt_texts, texts)) if self.reward is not None else [None] * len(texts)
            for prompt, text, ids, reward in zip(prompt_texts, texts, completions, rewards):
                rows.append(
                    {
                        "step": trainer.global_step,
                        "epoch": trainer.current_epoch,
                        "model": model,
                        "prompt": prompt,
                        "completion": text,
                        "num_tokens": len(ids),
                        "reward": None if reward is None else float(reward),
                    }
                )
        return rows

    def _prompt_ids(self, trainer: pl.Trainer, tokenizer: Any) -> list[list[int]]:
        if self.prompts:
            return [_encode_prompt(tokenizer, p) for p in self.prompts]
        val_data = getattr(trainer.datamodule, "val_data", None) if trainer.datamodule is not None else None
        if val_data is None or "prompt_input_ids" not in getattr(val_data, "column_names", ()):
            raise ValueError(
                "GenerationSamples found no validation prompts: give it prompts=[...], or use a data module whose "
                "val_data has a prompt_input_ids column (PreferenceDataModule)"
            )
        n = min(self.num_prompts, len(val_data))
        return [list(ids) for ids in val_data.select(range(n))["prompt_input_ids"]]

    # -- output (rank 0) -------------------------------------------------------------------------------

    def write(self, trainer: pl.Trainer, rows: Sequence[dict[str, Any]]) -> None:
        """Append the rows to ``samples.jsonl`` and log the table; only on global rank 0. Call it on every
        rank: ``trainer.log_dir`` is a broadcast under DDP, which all processes must join."""
        log_dir = trainer.log_dir or trainer.default_root_dir
        if not trainer.is_global_zero or not rows:
            return
        if self.filename and log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            with open(os.path.join(log_dir, self.filename), "a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for logger in trainer.loggers:
            try:
                _log_table(logger, self.log_key, rows, trainer.global_step)
            except Exception as e:  # a logging backend's hiccup must not stop training
                submodule("utilities").rank_zero_warn(
                    f"GenerationSamples could not log to {type(logger).__name__}: {e}"
                )


def _tokenizer(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
    tokenizer = getattr(trainer.datamodule, "tokenizer", None) if trainer.datamodule is not None else None
    if tokenizer is not None:
        return tokenizer
    source = getattr(pl_module, "hparams", {}).get("model_name_or_path")
    if source is None:
        raise ValueError(
            "GenerationSamples needs a tokenizer: use PreferenceDataModule, or a module with model_name_or_path"
        )
    return load_tokenizer(source)


def _encode_prompt(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return ids[1:] if bos is not None and ids[:2] == [bos, bos] else ids  # as training tokenises prompts


def _log_table(logger: Any, key: str, rows: Sequence[dict[str, Any]], step: int) -> None:
    columns = [c for c in COLUMNS if c != "reward" or any(r["reward"] is not None for r in rows)]
    loggers = submodule("loggers")
    if isinstance(logger, loggers.TensorBoardLogger):
        logger.experiment.add_text(key, markdown_table(rows, columns), step)
    elif isinstance(logger, loggers.WandbLogger):
        logger.log_table(key=key, columns=list(columns), data=[[r[c] for c in columns] for r in rows], step=step)
    elif isinstance(logger, loggers.MLFlowLogger):
        logger.experiment.log_table(
            data={c: [r[c] for r in rows] for c in columns},
            artifact_file=f"{key}/step-{step}.json",
            run_id=logger.run_id,
        )


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table (TensorBoard renders text summaries as markdown); cell text escaped."""

    def cell(value: Any) -> str:
        text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
