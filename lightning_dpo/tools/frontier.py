"""The reward–KL frontier (the DPO paper's Figure 2) and win rates, over several models.

For each model: sample completions of held-out prompts (temperature 1, no top-p / top-k, so they are
samples of πθ), score them with a reward function, estimate KL(πθ ‖ πref) from the same samples, and,
against a baseline, a win rate under a judge. The rows go to a CSV, the samples to a JSONL file and the
frontier to a PNG.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import Example, to_example
from lightning_dpo.data.sources import read_splits
from lightning_dpo.data.tokenize import tokenize_example
from lightning_dpo.data.truncation import TokenSettings, keep_prompt_end
from lightning_dpo.embedded import DEFAULT_DATASET
from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions
from lightning_dpo.evaluation.judges import Judge, WinRate, win_rate
from lightning_dpo.evaluation.kl import Estimate, kl_estimate, mean_and_sem, sequence_logprobs
from lightning_dpo.evaluation.rewards import RewardFn, load_reward
from lightning_dpo.models import vocab_size
from lightning_dpo.settings import import_object
from lightning_dpo.tools.model_sources import (
    ModelSource,
    expand_source,
    load_reference,
    load_source,
    load_source_tokenizer,
)

DEFAULT_REWARD = "lightning_dpo.tasks.politeness.politeness_reward"
"""The bundled default task's reward (named, not imported: the tools hold no task code)."""
DEFAULT_JUDGE = "lightning_dpo.tasks.politeness.politeness_judge"

CSV_FIELDS = (
    "label",
    "group",
    "model",
    "reference",
    "beta",
    "step",
    "n",
    "reward_mean",
    "reward_sem",
    "kl_mean",
    "kl_sem",
    "mean_tokens",
    "eos_fraction",
    "win_rate",
    "win_low",
    "win_high",
    "wins",
    "ties",
    "losses",
    "seconds",
)


@dataclass
class Samples:
    """Completions of one model for the (repeated) prompts, as token ids and text."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    stopped: list[bool]
    """Whether the completion ended with EOS (else it was cut at ``max_new_tokens``)."""


def read_prompts(dataset: str, split: str, num_prompts: int | None) -> list[Example]:
    """The first ``num_prompts`` records of a split, normalised like the training data."""
    splits = read_splits(dataset)
    if split not in splits:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; it has {sorted(splits)}")
    examples = []
    for location, row in splits[split]:
        if num_prompts is not None and len(examples) >= num_prompts:
            break
        examples.append(to_example(row, location))
    if not examples:
        raise ValueError(f"split {split!r} of {dataset!r} is empty")
    return examples


@dataclass
class PromptSet:
    """Held-out prompts as one tokenizer sees them."""

    ids: list[list[int]]
    """Prompt token ids exactly as training builds them (BOS, chat template, left truncation)."""
    texts: list[str]
    """The prompt as text: the record's own string, or the decoded ids for conversations."""
    chosen: list[str]
    """The data set's chosen completion as text (the ``chosen`` baseline)."""


def tokenize_prompts(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_prompt_length: int
) -> PromptSet:
    """Tokenise held-out records like the training data (completions kept whole); each prompt then keeps its
    last ``max_prompt_length`` tokens (and BOS), a budget for generation."""
    settings = TokenSettings(max_length=1_000_000)
    pairs = [tokenize_example(e, tokenizer, settings) for e in examples]
    ids = [keep_prompt_end(list(p["prompt_input_ids"]), max_prompt_length, tokenizer.bos_token_id) for p in pairs]
    texts = [
        e.prompt if isinstance(e.prompt, str) else tokenizer.decode(i, skip_special_tokens=True)
        for e, i in zip(examples, ids)
    ]
    chosen = [
        e.chosen if isinstance(e.chosen, str) else tokenizer.decode(p["chosen_input_ids"], skip_special_tokens=True)
        for e, p in zip(examples, pairs)
    ]
    return PromptSet(ids, texts, chosen)


def sample(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    settings: SamplingSettings,
    batch_size: int,
) -> Samples:
    """Generate one completion per entry of ``prompt_ids`` and decode it (special tokens dropped)."""
    completions = generate_completions(
        model,
        prompt_ids,
        settings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        batch_size=batch_size,
    )
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    stopped = [bool(c) and c[-1] == tokenizer.eos_token_id for c in completions]
    return Samples(prompt_ids, completions, texts, stopped)


def measure(
    samples: Samples,
    policy: nn.Module,
    reference: nn.Module,
    prompts: Sequence[str],
    reward_fn: RewardFn,
    pad_token_id: int,
    batch_size: int,
) -> tuple[Estimate, Estimate, list[float], torch.Tensor]:
    """Mean reward and KL(πθ ‖ πref) of a model's own samples. Returns (reward, kl, rewards, log ratios)."""
    rewards = [float(r) for r in reward_fn(list(prompts), samples.texts)]
    if len(rewards) != len(samples.texts):
        raise ValueError(f"the reward function returned {len(rewards)} values for {len(samples.texts)} completions")
    args = (samples.prompt_ids, samples.completion_ids)
    policy_logps = sequence_logprobs(policy, *args, pad_token_id=pad_token_id, batch_size=batch_size)
    if reference is policy:
        reference_logps = policy_logps
    else:
        reference_logps = sequence_logprobs(reference, *args, pad_token_id=pad_token_id, batch_size=batch_size)
    return mean_and_sem(rewards), kl_estimate(policy_logps, reference_logps), rewards, policy_logps - reference_logps


def evaluate(
    models: list[str],
    labels: list[str] | None = None,
    reference: str | None = None,
    reward: str = DEFAULT_REWARD,
    baseline: str | None = None,
    judge: str = DEFAULT_JUDGE,
    dataset: str = DEFAULT_DATASET,
    split: str = "val",
    num_prompts: int | None = 200,
    samples_per_prompt: int = 1,
    max_new_tokens: int = 48,
    max_prompt_length: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    all_steps: bool = True,
    device: str = "auto",
    output_dir: str = "evaluation",
    plot: bool = True,
) -> list[dict[str, Any]]:
    """Reward against KL(πθ ‖ πref) for each model, and win rates against a baseline.

    Samples ``samples_per_prompt`` completions of each held-out prompt at temperature 1 with no top-p or
    top-k (true samples of πθ), and writes ``frontier.csv``, ``samples.jsonl`` and ``frontier.png`` into
    ``output_dir``.

    Args:
        models: Models to evaluate: run directories (``lightning_logs/version_N``; every ``hf_model/step-N``
            export and the final ``hf_model``), Lightning ``.ckpt`` files, Hugging Face model directories,
            Hub ids or ``embedded:<name>``.
        labels: A name per entry of ``models`` (a run's points share it). Default: ``β=<beta>`` from the
            run's hparams.yaml, else the directory name.
        reference: πref for the KL. Default: a checkpoint's own reference, or the ``model_name_or_path`` /
            ``ref_model_name_or_path`` of the run an export came from. Required for other models.
        reward: ``(prompts, completions) -> rewards``: a dotted path to a callable, or ``hf:<id or directory>``
            for a sequence-classification reward model. Default: the bundled task's rule.
        baseline: Also report each model's win rate against this: a model (any form ``models`` takes; its
            samples use the same settings and seed) or ``chosen`` (the data set's chosen completions).
        judge: Dotted path of a ``(prompt, a, b) -> P(a better)`` judge. Default: the bundled task's rule.
        dataset: The data set whose prompts are used (as ``data.dataset`` takes it).
        split: The held-out split.
        num_prompts: Prompts from the start of the split; ``None`` for all.
        samples_per_prompt: Completions per prompt.
        max_new_tokens: Tokens per completion at most.
        max_prompt_length: Prompts keep their last this many tokens (and BOS), as generation's context.
        batch_size: Sequences per generate / forward call.
        seed: Sampling seed (the same for every model, so models are compared on common random numbers)
            and the seed of the judge's presentation order.
        all_steps: Expand run directories to their ``step-N`` exports too.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ...
        output_dir: Where the CSV, samples and PNG go.
        plot: Write ``frontier.png`` (needs matplotlib: ``pip install 'lightning-dpo[plot]'``).
    """
    if labels is not None and len(labels) != len(models):
        raise ValueError(f"{len(labels)} labels for {len(models)} models: give one label per model")
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be at least 1, got {samples_per_prompt}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    settings = SamplingSettings(max_new_tokens=max_new_tokens, seed=seed)  # temperature 1, no truncation
    examples = read_prompts(dataset, split, num_prompts)
    k = samples_per_prompt  # each prompt is repeated k times: every per-sample list below has N = k·prompts rows
    sources = [s for i, m in enumerate(models) for s in expand_source(m, labels[i] if labels else None, all_steps)]
    reward_fn = load_reward(reward)
    judge_fn: Judge | None = import_object(judge) if baseline is not None else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    baseline_texts = _baseline_texts(baseline, examples, sources[0], k, settings, max_prompt_length, batch_size, device)
    references: dict[str, nn.Module] = {}  # loaded once, shared by every model that names them
    rows: list[dict[str, Any]] = []
    with open(out / "samples.jsonl", "w", encoding="utf-8") as samples_file:
        for source in sources:
            row, records = _evaluate_one(
                source,
                examples,
                k,
                settings,
                reward_fn,
                judge_fn,
                baseline_texts,
                reference,
                references,
                max_prompt_length,
                batch_size,
                seed,
                device,
            )
            rows.append(row)
            print(_summary_line(row), flush=True)
            samples_file.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    write_csv(rows, out / "frontier.csv")
    if plot:
        from lightning_dpo.tools.plotting import plot_frontier

        plot_frontier(rows, out / "frontier.png", reward_name=_reward_name(reward))
    print(f"wrote {out / 'frontier.csv'}, {out / 'samples.jsonl'}" + (f", {out / 'frontier.png'}" if plot else ""))
    return rows


def _baseline_texts(
    baseline: str | None,
    examples: Sequence[Example],
    first: ModelSource,
    k: int,
    settings: SamplingSettings,
    max_prompt_length: int,
    batch_size: int,
    device: str,
) -> list[str] | None:
    """The baseline's completion per sample (N = k·prompts): the data set's chosen ones, or a model's samples."""
    if baseline is None:
        return None
    if baseline == "chosen":  # prompts tokenised as the first model sees them (chat templates decode to text)
        return _repeat(tokenize_prompts(examples, load_source_tokenizer(first), max_prompt_length).chosen, k)
    base = load_source(expand_source(baseline, all_steps=False)[-1], device)
    ids = tokenize_prompts(examples, base.tokenizer, max_prompt_length).ids
    return sample(base.policy, base.tokenizer, _repeat(ids, k), settings, batch_size).texts


def _evaluate_one(
    source: ModelSource,
    examples: Sequence[Example],
    k: int,
    settings: SamplingSettings,
    reward_fn: RewardFn,
    judge_fn: Judge | None,
    baseline_texts: list[str] | None,
    reference: str | None,
    references: dict[str, nn.Module],
    max_prompt_length: int,
    batch_size: int,
    seed: int,
    device: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One model: its CSV row and its samples' records."""
    start = time.perf_counter()
    loaded = load_source(source, device)
    tokenizer = loaded.tokenizer
    prompt_set = tokenize_prompts(examples, tokenizer, max_prompt_length)
    prompts = _repeat(prompt_set.texts, k)
    samples = sample(loaded.policy, tokenizer, _repeat(prompt_set.ids, k), settings, batch_size)
    with loaded.reference_context() as own_reference:
        ref_model, ref_name = _pick_reference(source, loaded.policy, own_reference, reference, references, device)
        reward_est, kl, rewards, log_ratios = measure(
            samples, loaded.policy, ref_model, prompts, reward_fn, tokenizer.pad_token_id, batch_size
        )
    wr = win_rate(prompts, samples.texts, baseline_texts, judge_fn, seed) if baseline_texts else None
    row = _row(source, ref_name, reward_est, kl, samples, wr, time.perf_counter() - start)
    records = [
        {
            "label": source.label,
            "prompt": prompts[i],
            "completion": text,
            "reward": rewards[i],
            "log_ratio": float(log_ratios[i]),
            **({"baseline": baseline_texts[i]} if baseline_texts else {}),
        }
        for i, text in enumerate(samples.texts)
    ]
    return row, records


def _repeat(items: list[Any], k: int) -> list[Any]:
    return [x for x in items for _ in range(k)]


def _pick_reference(
    source: ModelSource,
    policy: nn.Module,
    own: nn.Module | None,
    explicit: str | None,
    cache: dict[str, nn.Module],
    device: str,
) -> tuple[nn.Module, str]:
    """(model, name): an explicit ``reference`` wins; then the checkpoint's own; then the one its run names."""
    if own is not None and explicit is None:
        return own, f"{source.path} (its own reference)"
    name = explicit or source.reference
    if name is None:
        raise ValueError(
            f"no reference model for {source.path!r}: it is not a checkpoint and not inside a run directory "
            "with an hparams.yaml; pass --reference (for the bundled default: embedded:tiny-polite-sft)"
        )
    if name not in cache:
        cache[name] = load_reference(name, device)
    if vocab_size(cache[name]) != vocab_size(policy):
        raise ValueError(
            f"reference {name!r} has a vocabulary of {vocab_size(cache[name])} tokens but {source.path!r} has "
            f"{vocab_size(policy)}: the KL compares log-probs of the same token ids, so use the policy's own base model"
        )
    return cache[name], name


def _row(
    source: ModelSource,
    reference: str | None,
    reward: Estimate,
    kl: Estimate,
    samples: Samples,
    wr: WinRate | None,
    seconds: float,
) -> dict[str, Any]:
    lengths = [len(c) for c in samples.completion_ids]
    return {
        "label": source.label,
        "group": source.group,
        "model": source.path,
        "reference": reference,
        "beta": source.beta,
        "step": source.step,
        "n": reward.n,
        "reward_mean": reward.mean,
        "reward_sem": reward.sem,
        "kl_mean": kl.mean,
        "kl_sem": kl.sem,
        "mean_tokens": sum(lengths) / len(lengths),
        "eos_fraction": sum(samples.stopped) / len(samples.stopped),
        "win_rate": wr.rate if wr else None,
        "win_low": wr.low if wr else None,
        "win_high": wr.high if wr else None,
        "wins": wr.wins if wr else None,
        "ties": wr.ties if wr else None,
        "losses": wr.losses if wr else None,
        "seconds": round(seconds, 2),
    }


def _reward_name(reward: str) -> str:
    return "politeness reward" if reward == DEFAULT_REWARD else f"reward ({reward.rsplit('.', 1)[-1]})"


def _summary_line(row: dict[str, Any]) -> str:
    text = (
        f"{row['label']:<24} reward {row['reward_mean']:+.3f} ± {row['reward_sem']:.3f}   "
        f"KL {row['kl_mean']:7.3f} ± {row['kl_sem']:.3f} nats   ({row['n']} samples, {row['seconds']:.1f} s)"
    )
    if row["win_rate"] is not None:
        text += (
            f"   win rate {row['win_rate']:.3f} [{row['win_low']:.3f}, {row['win_high']:.3f}]"
            f" ({row['wins']}/{row['ties']}/{row['losses']} W/T/L)"
        )
    return text


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One row per model, columns :data:`CSV_FIELDS` (empty where not measured)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``frontier.csv``, numbers as floats (``None`` where empty)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    text_fields = {"label", "group", "model", "reference"}
    return [{k: (v if k in text_fields else (float(v) if v != "" else None)) for k, v in r.items()} for r in rows]
