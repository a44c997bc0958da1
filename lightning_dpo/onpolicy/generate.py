"""Preference pairs from a model's own samples (``lightning-dpo generate``): sample, score, pair, write.

    prompts --tokenise as training does--> fixed batches --Trainer.predict, each rank its share-->
        K samples per prompt, scored --one line per prompt--> <output>.parts/*.part (append-only)
        --rank 0, at the end--> pairs (pairing.py) --> <output> (.jsonl or .parquet) + .meta.yaml + .samples.jsonl.gz

- **Deterministic batches.** The prompts are cut into fixed batches of ``batch_size`` in their order, and
  batch b is sampled with a seed derived from (``sampling.seed``, b). So the samples do not depend on how
  many devices share the work, nor on where an earlier run stopped.
- **Resumable.** Every finished prompt is one whole line of a rank's part file, written and flushed
  before the next batch. A new run reads the complete lines of every part file (a line a kill cut short
  does not count), skips the prompts they hold, and redoes the rest in their original batches: nothing is
  duplicated, nothing lost, and the result equals an uninterrupted run's. Resuming with other settings
  that change samples (model, prompts, K, sampling, scoring, batch size) is refused.
- **Devices.** ``Trainer.predict`` under the given strategy: each rank takes every W-th pending batch
  (padded with a repeat, not written, where parameters are sharded so ranks generate in step). Rank 0
  merges the parts into one dataset.
- **Output.** ``PreferenceDataModule`` reads the pairs file as it is: ``prompt``, ``chosen``, ``rejected``
  (strings, or message lists for conversations), plus ``chosen_score``, ``rejected_score``,
  ``prompt_index``, ``model`` and ``seed`` in every record. Under ``pairs.rule: ranking`` each record is
  one prompt's ranking instead, ``prompt``, ``completions`` (best first) and ``scores``, which
  ``RankingDataModule`` reads as it is (text prompts only, as rankings are). Beside it, not read as data: ``.meta.yaml``
  (every setting, the counts of what was paired and skipped, the files) and ``.samples.jsonl.gz`` (all K
  samples of every prompt with their scores, to re-pair or compute Best-of-N without sampling again).

Samples that did not end with EOS are never paired here: DPO's data module appends EOS to every
completion of a file, which would teach the model that a cut-off text is a whole answer. Empty samples
are not paired either (the data module would drop them). Both are counted (``unusable``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import yaml
from torch.utils.data import DataLoader, Dataset

from lightning_dpo.data.prompts import Prompt, PromptSet, build_prompts, dropped_summary, read_prompt_rows
from lightning_dpo.data.sources import DataSource, describe_dataset
from lightning_dpo.embedded import DEFAULT_DATASET, resolve_model
from lightning_dpo.evaluation.generation import SamplingSettings, preserved_rng
from lightning_dpo.models import disable_dropout, load_causal_lm, load_tokenizer
from lightning_dpo.namespace import pl, submodule
from lightning_dpo.onpolicy.pairing import PairCounts, PairSettings, pair_group, rank_group
from lightning_dpo.onpolicy.sampling import check_room, context_length, derive_seed, sample_groups
from lightning_dpo.onpolicy.scoring import Scorer, ScoringSettings
from lightning_dpo.storage import append_records, atomic_write, atomic_write_with, complete_records

OUTPUT_SUFFIXES = (".jsonl", ".parquet")
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
"""Strategies whose ranks hold parts of the parameters: they must run every forward pass together."""


def output_files(output: str | Path) -> dict[str, Path]:
    """The pairs file and the files beside it (none of which a data module reads as data)."""
    out = Path(output)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {str(output)!r} must end with {' or '.join(OUTPUT_SUFFIXES)}")
    return {
        "pairs": out,
        "meta": out.with_name(out.name + ".meta.yaml"),
        "samples": out.with_name(out.name + ".samples.jsonl.gz"),
        "parts": out.with_name(out.name + ".parts"),
    }


def is_sharded(trainer: Any) -> bool:
    return trainer.world_size > 1 and type(trainer.strategy).__name__ in SHARDED_STRATEGIES


class _Batches(Dataset):
    def __init__(self, batches: Sequence[dict[str, Any]]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.batches[i]


def _identity(x: Any) -> Any:
    return x


class PairGeneration(pl.LightningModule):
    """``Trainer.predict`` over fixed prompt batches: each batch's K samples per prompt, scored, appended to
    this rank's part file (one line per prompt). See the module docstring."""

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer: Any,
        prompts: Sequence[Prompt],
        *,
        samples_per_prompt: int,
        sampling: SamplingSettings,
        scorer: Scorer,
        batch_size: int,
        parts_dir: str | Path,
        settings: dict[str, Any],
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.model_name_or_path, self.tokenizer, self.prompts = model_name_or_path, tokenizer, list(prompts)
        self.k, self.sampling, self.scorer, self.batch_size = samples_per_prompt, sampling, scorer, batch_size
        self.parts_dir, self.settings = Path(parts_dir), settings
        self.load_dtype, self.trust_remote_code = dtype, trust_remote_code
        self.policy = None
        self.done: set[int] = set()
        self._stream = None
        self.written = 0

    def configure_model(self) -> None:
        if self.policy is None:
            policy = load_causal_lm(
                self.model_name_or_path, dtype=self.load_dtype, trust_remote_code=self.trust_remote_code
            )
            disable_dropout(policy)
            self.policy = policy.eval().requires_grad_(False)

    def setup(self, stage: str) -> None:
        """Every rank reads what earlier runs finished; rank 0 then records this run's settings. A barrier
        keeps every reader ahead of any writer."""
        self.done = done_prompts(self.parts_dir)
        self.trainer.strategy.barrier()
        run = self.trainer.strategy.broadcast(f"{int(time.time() * 1000)}-{os.getpid()}")
        if self.trainer.is_global_zero:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(
                self.parts_dir / "run.yaml", yaml.safe_dump({"settings": self.settings}, sort_keys=True).encode()
            )
        self.trainer.strategy.barrier()
        self._part = self.parts_dir / f"rank{self.global_rank}-{run}.part"

    def predict_dataloader(self) -> DataLoader:
        batches = [
            {"batch": b, "prompts": self.prompts[start : start + self.batch_size], "dummy": False}
            for b, start in enumerate(range(0, len(self.prompts), self.batch_size))
        ]
        pending = [batch for batch in batches if any(p.index not in self.done for p in batch["prompts"])]
        world, rank = self.trainer.world_size, self.global_rank
        share = pending[rank::world]
        if is_sharded(self.trainer) and pending:  # every rank makes the same number of generate calls
            per_rank = -(-len(pending) // world)
            share += [{**pending[0], "dummy": True}] * (per_rank - len(share))
        return DataLoader(_Batches(share), batch_size=None, collate_fn=_identity)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        prompts: list[Prompt] = batch["prompts"]
        groups = sample_groups(
            self.policy,
            self.tokenizer,
            [p.ids for p in prompts],
            self.k,
            self.sampling,
            seed=derive_seed(self.sampling.seed, "generate", batch["batch"]),
            synced_gpus=is_sharded(self.trainer),
        )
        if batch["dummy"]:
            return []
        with preserved_rng():  # a reward may draw random numbers
            scores = self.scorer.score(
                [p.text for p in prompts], [g.texts for g in groups], [p.location for p in prompts], seed=batch["batch"]
            )
        return [
            {
                "prompt_index": p.index,
                "location": p.location,
                "samples": [
                    {"text": t, "score": s, "finished": f, "num_tokens": len(c)}
                    for t, s, f, c in zip(g.texts, score, g.finished, g.completions)
                ],
            }
            for p, g, score in zip(prompts, groups, scores)
            if p.index not in self.done
        ]

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not outputs:
            return
        if self._stream is None:
            self._stream = open(self._part, "ab")
        append_records(self._stream, outputs)
        self.written += len(outputs)

    def on_predict_end(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self.trainer.strategy.barrier()  # every rank's lines are on disk before rank 0 merges


def done_prompts(parts_dir: Path) -> set[int]:
    """Indices of the prompts whose line is complete in some part file."""
    if not parts_dir.is_dir():
        return set()
    return {r["prompt_index"] for part in sorted(parts_dir.glob("*.part")) for r in complete_records(part)}


def generate_pairs(
    model: str,
    output: str,
    prompts: str | list[DataSource] = DEFAULT_DATASET,
    split: str = "train",
    num_prompts: int | None = None,
    samples_per_prompt: int = 4,
    reward: str | None = None,
    judge: str | None = None,
    on_invalid: Literal["error", "skip"] = "error",
    pairs: PairSettings = PairSettings(),
    sampling: SamplingSettings = SamplingSettings(),
    max_prompt_length: int | None = 256,
    system_prompt: str | None = None,
    chat_template: str | None = None,
    columns: dict[str, str] | None = None,
    tokenizer: str | None = None,
    batch_size: int = 16,
    dtype: str | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    precision: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample ``samples_per_prompt`` completions of each prompt from ``model``, score them with a reward or a
    pairwise judge, pair them, and write a preference data set that ``PreferenceDataModule`` reads as it is.

    Args:
        model: The model to sample: a Hugging Face directory, a Hub id or ``embedded:<name>``.
        output: The pairs file, ``.jsonl`` or ``.parquet``. Beside it: ``<output>.meta.yaml`` (settings and
            counts) and ``<output>.samples.jsonl.gz`` (every sample with its score); while it runs,
            ``<output>.parts/`` (what a resumed run continues from).
        prompts: Where the prompts come from: anything ``data.dataset`` takes; prompt-only records
            (``{"prompt": ...}``) or full preference records.
        split: The split of ``prompts`` to use.
        num_prompts: The first N usable prompts of the split (``None``: all).
        samples_per_prompt: K, the samples per prompt (at least 2).
        reward: ``(prompts, completions) -> rewards``: a dotted path or ``hf:<id or dir>`` (give this or ``judge``);
            from Python, the callable itself.
        judge: A pairwise ``(prompt, a, b) -> P(a better)`` judge's dotted path (from Python, the callable),
            instead of a reward.
        on_invalid: A NaN / None reward, or a judge that fails: ``error`` (stop, naming the prompt) or ``skip``
            (leave the sample out, counted).
        pairs: The pair rule: best vs worst of the K (default), every pair with a margin of at least m, or
            ``ranking``: each prompt's K samples as one ranking (``RankingDataModule``, ``plackett_luce``).
        sampling: Hugging Face ``generate`` settings and the seed (the default: temperature 1, no top-p/top-k).
        max_prompt_length: Prompts keep their last tokens, as training does; use the value you will train with.
        system_prompt: Put in front of every prompt, as ``data.system_prompt`` does.
        chat_template: A chat template (or file) for conversational prompts, as ``data.chat_template``.
        columns: Column names by role, e.g. ``{prompt: question}``.
        tokenizer: The tokenizer, if not the model's.
        batch_size: Prompts per ``generate`` call (each gives K rows). Part of what fixes the samples.
        dtype: Weight dtype at load (``None``: float32; ``bfloat16``, ``auto``, ...).
        accelerator: Lightning's accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Devices (processes) sharing the prompts.
        strategy: Lightning's strategy (``auto``, ``ddp``, ...).
        precision: Lightning's precision, e.g. ``bf16-mixed``.
        overwrite: Start afresh even where a finished or partial output exists.
        progress: Show a progress bar.

    Returns:
        The counts (:class:`~lightning_dpo.onpolicy.pairing.PairCounts`) and the files written.
    """
    files = output_files(output)
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be at least 2 to make a pair, got {samples_per_prompt}")
    callables = {"reward": reward if callable(reward) else None, "judge": judge if callable(judge) else None}
    scoring = ScoringSettings(
        reward=_spec(reward) if reward is not None else None,
        judge=_spec(judge) if judge is not None else None,
        on_invalid=on_invalid,
    )
    model_path = resolve_model(model)
    tok = load_tokenizer(tokenizer or model)
    prompt_set = read_and_check_prompts(
        prompts, split, tok, model_path, num_prompts, max_prompt_length, system_prompt, chat_template, columns, sampling
    )
    if pairs.rule == "ranking" and any(isinstance(p.prompt, list) for p in prompt_set.prompts):
        raise ValueError(
            f"pairs.rule ranking: {describe_dataset(prompts)} holds conversational prompts, and rankings are text "
            "only (RankingDataModule); use rule best_vs_worst or margin, or text prompts"
        )
    settings = {
        "model": model,
        "tokenizer": tokenizer or model,
        "prompts": describe_dataset(prompts),
        "split": split,
        "num_prompts": len(prompt_set),
        "prompts_fingerprint": prompt_set.fingerprint(),
        "max_prompt_length": max_prompt_length,
        "system_prompt": system_prompt,
        "samples_per_prompt": samples_per_prompt,
        "sampling": asdict(sampling),
        "scoring": asdict(scoring),
        "batch_size": batch_size,
        "dtype": dtype,
    }
    if overwrite:
        for key in ("pairs", "meta", "samples"):
            files[key].unlink(missing_ok=True)
        shutil.rmtree(files["parts"], ignore_errors=True)
    finished = _finished_run(files, settings)
    if finished is not None:
        return finished
    _check_resumable(files["parts"], settings)
    already = len(done_prompts(files["parts"]))
    if already:
        print(f"resuming {files['pairs']}: {already} of {len(prompt_set)} prompts already done", flush=True)

    started = time.perf_counter()
    module = PairGeneration(
        model,
        tok,
        prompt_set.prompts,
        samples_per_prompt=samples_per_prompt,
        sampling=sampling,
        scorer=Scorer(scoring, **callables),
        batch_size=batch_size,
        parts_dir=files["parts"],
        settings=settings,
        dtype=dtype,
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
    )
    trainer.predict(module, return_predictions=False)
    if not trainer.is_global_zero:
        return {}
    seconds = time.perf_counter() - started
    new = len(prompt_set) - already
    throughput = {
        "prompts": new,
        "seconds": round(seconds, 2),
        "prompts_per_s": round(new / seconds, 3),
        "samples_per_s": round(new * samples_per_prompt / seconds, 3),
        "devices": trainer.world_size,
    }
    return merge(files, prompt_set, settings, pairs, throughput)


def _spec(value: Any) -> str:
    """A reward or judge as it is recorded: its spec, or a callable's import path."""
    if isinstance(value, str):
        return value
    return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"


def read_and_check_prompts(
    prompts: Any,
    split: str,
    tokenizer: Any,
    model_path: str,
    num_prompts: int | None,
    max_prompt_length: int | None,
    system_prompt: str | None,
    chat_template: str | None,
    columns: dict[str, str] | None,
    sampling: SamplingSettings,
) -> PromptSet:
    """The prompts, tokenised as training does, each checked to leave room for ``max_new_tokens``."""
    from transformers import AutoConfig

    from lightning_dpo.data.templates import resolve_chat_template

    template = resolve_chat_template(chat_template)
    if template is not None:
        tokenizer.chat_template = template
    rows = [row for _, source_rows in read_prompt_rows(prompts, split) for row in source_rows]
    prompt_set = build_prompts(
        rows,
        tokenizer,
        max_prompt_length=max_prompt_length,
        chat_template=template,
        system_prompt=system_prompt,
        columns=columns,
        limit=num_prompts,
    )
    message = dropped_summary(prompt_set.tally)
    if message:
        submodule("utilities").rank_zero_warn(message)
    if not len(prompt_set):
        raise ValueError(f"no usable prompts in split {split!r} of {describe_dataset(prompts)}. {message or ''}")

    check_room(
        [len(p.ids) for p in prompt_set.prompts],
        [p.location for p in prompt_set.prompts],
        sampling.max_new_tokens,
        context_length(SimpleNamespace(config=AutoConfig.from_pretrained(model_path))),
        model_path,
    )
    return prompt_set


def _finished_run(files: dict[str, Path], settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a finished output made with these settings; an error if made with others."""
    if not files["meta"].is_file() or not files["pairs"].is_file():
        return None
    meta = yaml.safe_load(files["meta"].read_text(encoding="utf-8"))
    differ = _differences(meta.get("settings", {}), settings)
    if differ:
        raise ValueError(
            f"{files['pairs']} exists, made with other settings ({'; '.join(differ)}): choose another output or pass "
            "overwrite"
        )
    shutil.rmtree(files["parts"], ignore_errors=True)  # a run killed after its last write
    print(f"{files['pairs']} is complete: {meta['counts']['pairs']} pairs (pass overwrite to generate again)")
    _require_pairs(PairCounts(**meta["counts"]), settings)
    return {"counts": meta["counts"], "files": {k: str(v) for k, v in files.items() if k != "parts"}}


def _check_resumable(parts: Path, settings: dict[str, Any]) -> None:
    run = parts / "run.yaml"
    if not run.is_file():
        return
    earlier = (yaml.safe_load(run.read_text(encoding="utf-8")) or {}).get("settings", {})
    differ = _differences(earlier, settings)
    if differ:
        raise ValueError(
            f"{parts} holds a partial run with other settings ({'; '.join(differ)}): resuming would mix samples of "
            "two set-ups. Use the same settings, another output, or overwrite"
        )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    new = yaml.safe_load(yaml.safe_dump(new))  # compare as stored (tuples become lists)
    return [
        f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    ]


def merge(
    files: dict[str, Path],
    prompt_set: PromptSet,
    settings: dict[str, Any],
    rule: PairSettings,
    throughput: dict[str, Any],
) -> dict[str, Any]:
    """Rank 0: the part files -> the pairs file, the samples file and the meta file; then the parts go."""
    groups: dict[int, dict[str, Any]] = {}
    for part in sorted(files["parts"].glob("*.part")):
        for record in complete_records(part):
            groups.setdefault(record["prompt_index"], record)
    missing = [p.location for p in prompt_set.prompts if p.index not in groups]
    if missing:
        raise RuntimeError(
            f"{len(missing)} prompts have no samples in {files['parts']} (first: {missing[0]}); run again"
        )
    records, counts = [], PairCounts()
    for prompt in prompt_set.prompts:
        samples = groups[prompt.index]["samples"]
        scores = [s["score"] for s in samples]
        usable = [s["finished"] and bool(s["text"].strip()) for s in samples]
        if rule.rule == "ranking":
            order, group_counts = rank_group(scores, usable)
            counts = counts + group_counts
            if order:
                records.append(
                    {
                        "prompt": prompt.prompt,
                        "completions": [samples[i]["text"] for i in order],
                        "scores": [samples[i]["score"] for i in order],
                        "prompt_index": prompt.index,
                        "model": settings["model"],
                        "seed": settings["sampling"]["seed"],
                    }
                )
            continue
        found, group_counts = pair_group(scores, usable, rule, keys=[s["text"] for s in samples])
        counts = counts + group_counts
        for pair in found:
            chosen, rejected = samples[pair.chosen], samples[pair.rejected]
            records.append(
                {
                    "prompt": prompt.prompt,
                    "chosen": _completion(prompt, chosen["text"]),
                    "rejected": _completion(prompt, rejected["text"]),
                    "chosen_score": chosen["score"],
                    "rejected_score": rejected["score"],
                    "prompt_index": prompt.index,
                    "model": settings["model"],
                    "seed": settings["sampling"]["seed"],
                }
            )
    _write_pairs(files["pairs"], records)
    lines = [{"prompt": p.prompt, **groups[p.index]} for p in prompt_set.prompts]
    atomic_write_with(files["samples"], lambda tmp: _write_gzip_lines(tmp, lines))
    meta = {
        "settings": settings,
        "pairs": asdict(rule),
        "counts": counts.to_dict(),
        "prompts_report": prompt_set.tally,
        "files": {k: str(v.name) for k, v in files.items() if k != "parts"},
        "throughput": throughput,
    }
    atomic_write(
        files["meta"], yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).encode()
    )  # last: the run is done
    shutil.rmtree(files["parts"], ignore_errors=True)
    made = "rankings" if rule.rule == "ranking" else "pairs"
    print(
        f"wrote {files['pairs']}: {counts.summary(made)}; sampled {throughput['prompts']} prompts x "
        f"{settings['samples_per_prompt']} in {throughput['seconds']} s ({throughput['prompts_per_s']} prompts/s on "
        f"{throughput['devices']} device(s))",
        flush=True,
    )
    _require_pairs(counts, settings, made)
    return {
        "counts": counts.to_dict(),
        "throughput": throughput,
        "files": {k: str(v) for k, v in files.items() if k != "parts"},
    }


def _completion(prompt: Prompt, text: str) -> Any:
    """A completion as the data module reads it next to this prompt: a string, or one assistant message."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt.prompt, list) else text


def _write_pairs(path: Path, records: list[dict[str, Any]]) -> None:
    if path.suffix == ".jsonl":
        atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
        return
    import datasets

    try:
        table = datasets.Dataset.from_list(records)
    except Exception as e:  # pyarrow's type errors: e.g. string prompts beside message lists
        raise ValueError(f"cannot write {path} as Parquet ({e}); write .jsonl instead") from e
    atomic_write_with(path, lambda tmp: table.to_parquet(tmp))


def _write_gzip_lines(path: str, lines: list[dict[str, Any]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _require_pairs(counts: PairCounts, settings: dict[str, Any], made: str = "pairs") -> None:
    """No pair (or ranking) at all is an error that says why (the files stay, for inspection)."""
    if getattr(counts, made):
        return
    hint = ""
    if counts.unusable and counts.unusable >= counts.samples - counts.unscored:
        hint = (
            f" No usable sample: they were cut at max_new_tokens={settings['sampling']['max_new_tokens']} without EOS "
            "(or empty); a model that never emits its EOS token cannot make pairs: raise max_new_tokens, or check "
            "the tokenizer's EOS"
        )
    elif counts.partial:
        hint = (
            " A ranking keeps all K samples, and some of every prompt's were cut at max_new_tokens, empty or "
            "unscored: raise max_new_tokens, or use rule best_vs_worst"
        )
    elif counts.all_equal or counts.ties:
        hint = " Every prompt's samples scored the same: sample more per prompt, or use a finer reward"
    what = "preference pairs" if made == "pairs" else "rankings"
    raise ValueError(f"no {what}: {counts.summary(made)}.{hint}")
