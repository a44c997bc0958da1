"""What happened to the data, for people: counts by reason, length percentiles, padding, a marked example.

``split_report`` combines a split's tally (records read and dropped, from ``pipeline``) with statistics of
the pairs that remain. ``PreferenceDataModule.data_report`` holds one per split; ``flatten_report`` turns
it into ``{"data/train/dropped/duplicate": 3, ...}`` for a logger, and ``format_report`` into the text
that ``lightning-dpo data`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.arrow import column, list_lengths
from lightning_dpo.data.sampler import grouped_order, padding_fraction, shuffled_order

PERCENTILES = (50, 90, 95, 99, 100)
SHOWN = 5  # record locations named in a warning


def percentiles(values: np.ndarray) -> dict[str, int]:
    """``{"p50": …, "p90": …, "p95": …, "p99": …, "max": …}`` of token counts (0s when empty)."""
    if len(values) == 0:
        return {("max" if q == 100 else f"p{q}"): 0 for q in PERCENTILES}
    found = np.percentile(values, PERCENTILES, method="inverted_cdf")
    return {("max" if q == 100 else f"p{q}"): int(v) for q, v in zip(PERCENTILES, found)}


def split_report(
    tally: Mapping[str, Any],
    data: datasets.Dataset,
    batch_size: int,
    seed: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """A split's tally plus statistics of its pairs: lengths before truncation, pairs truncated and the tokens
    cut by cause, padding."""
    prompt = list_lengths(data, "prompt_input_ids")  # (N,) after truncation
    completions = list_lengths(data, "chosen_input_ids") + list_lengths(data, "rejected_input_ids")  # (N,)
    chosen = prompt + list_lengths(data, "chosen_input_ids")  # (N,) tokens of each pair's chosen row
    rejected = prompt + list_lengths(data, "rejected_input_ids")
    report = {key: value for key, value in tally.items() if key not in ("first_dropped", "first_empty")}
    report["first_dropped"] = list(tally.get("first_dropped", []))[:SHOWN]
    if "first_empty" in tally:
        report["first_empty"] = list(tally["first_empty"])[:SHOWN]
    report["pairs"] = len(data)
    report["truncated"] = int(column(data, "truncated").sum())
    prompt_cut = column(data, "prompt_length") - prompt  # (N,) tokens cut from each prompt's start
    completion_cut = column(data, "chosen_length") + column(data, "rejected_length") - completions  # (N,) at ends
    report["cut"] = {
        "prompt": {"pairs": int((prompt_cut > 0).sum()), "tokens": int(prompt_cut.sum())},
        "completion": {"pairs": int((completion_cut > 0).sum()), "tokens": int(completion_cut.sum())},
    }
    report["lengths"] = {
        "prompt": percentiles(column(data, "prompt_length")),
        "completion": percentiles(np.concatenate([column(data, "chosen_length"), column(data, "rejected_length")])),
    }
    if len(data):
        widths = np.maximum(chosen, rejected)
        report["padding"] = {
            "shuffled": round(
                padding_fraction(
                    chosen, rejected, shuffled_order(len(data), 1, 0, seed), batch_size, pad_to_multiple_of
                ),
                4,
            ),
            "grouped_by_length": round(
                padding_fraction(
                    chosen, rejected, grouped_order(widths, batch_size, 1, 0, seed), batch_size, pad_to_multiple_of
                ),
                4,
            ),
        }
    return report


def skipped_warning(split: str, report: Mapping[str, Any]) -> str | None:
    """The summary warning for records left out of a split, or None when none was."""
    dropped = report.get("dropped", {})
    total = sum(dropped.values())
    if not total:
        return None
    reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
    first = "; ".join(
        f"{e['location']}" + (f" field {e['field']!r}" if e.get("field") else "") + f": {e['message']}"
        for e in report.get("first_dropped", [])[:SHOWN]
    )
    hint = "set data.strict=true to stop at the first bad record"
    if "no_completion_tokens" in dropped:
        hint += "; raise data.max_length, or set data.truncation_mode=keep_end to cut long prompts at their start"
    return f"{split}: dropped {total} of {report['read']} records ({reasons}); first: {first} ({hint})"


def flatten_report(data_report: Mapping[str, Any], prefix: str = "data") -> dict[str, float]:
    """Numbers of a data report as flat metric names: ``data/train/read``, ``data/train/dropped/<kind>``,
    ``data/train/empty_completions/chosen``, ``data/train/cut/prompt/tokens``, ``data/train/lengths/prompt/p90``,
    ``data/train/padding/shuffled``, ..."""
    out: dict[str, float] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, f"{name}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value

    for split, report in data_report.items():
        for key in (
            "read",
            "kept",
            "pairs",
            "truncated",
            "carved_to_val",
            "dropped",
            "empty_completions",
            "cut",
            "lengths",
            "padding",
        ):
            if key in report:
                walk(report[key], f"{prefix}/{split}/{key}")
    return out


def marked_example(tokenizer: PreTrainedTokenizerBase, pair: Mapping[str, list[int]]) -> str:
    """One pair decoded with special tokens, each part between ``⟦`` and ``⟧`` so boundaries show
    (newlines and tabs written as ``\\n`` and ``\\t``)."""

    def show(ids: list[int]) -> str:
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return "⟦" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") + "⟧"

    return "\n".join(
        [
            f"  prompt   ({len(pair['prompt_input_ids'])} tokens) {show(pair['prompt_input_ids'])}",
            f"  chosen   ({len(pair['chosen_input_ids'])} tokens) {show(pair['chosen_input_ids'])}",
            f"  rejected ({len(pair['rejected_input_ids'])} tokens) {show(pair['rejected_input_ids'])}",
        ]
    )


def format_report(data_report: Mapping[str, Any], example: str | None = None, source: str = "") -> str:
    """The text of ``lightning-dpo data``."""
    lines = [f"data: {source}" if source else "data"]
    for split, r in data_report.items():
        lines.append(f"\n[{split}]")
        if r.get("carved_from_train"):
            lines.append(f"  {r['pairs']} pairs carved out of the train split (data.val_size)")
        else:
            lines.append(f"  rows read {r['read']}, kept {r['kept']}, dropped {r['read'] - r['kept']}")
            for kind, n in r.get("dropped", {}).items():
                lines.append(f"    {kind:<22} {n}")
            for e in r.get("first_dropped", []):
                field = f" field {e['field']!r}" if e.get("field") else ""
                lines.append(f"      e.g. {e['location']}{field}: {e['message']}")
        empty = r.get("empty_completions", {})
        if any(empty.values()):
            sides = ", ".join(f"{n} {side}" for side, n in empty.items() if n)
            lines.append(f"  kept with an empty completion (EOS only): {sides}")
            for e in r.get("first_empty", []):
                lines.append(f"      e.g. {e['location']} field {e['field']!r}")
        if len(r.get("sources", [])) > 1:
            for s in r["sources"]:
                lines.append(f"  source {s['name']}: read {s['read']}, kept {s['kept']}, weight {s['weight']}")
        if r.get("carved_to_val"):
            lines.append(f"  {r['carved_to_val']} kept pairs moved to validation (data.val_size)")
        lines.append(f"  pairs {r.get('pairs', r.get('kept', 0))}; truncation touched {r.get('truncated', 0)}")
        if "cut" in r:
            prompt, completion = r["cut"]["prompt"], r["cut"]["completion"]
            lines.append(
                f"  tokens cut         {prompt['tokens']} from prompt starts ({prompt['pairs']} pairs), "
                f"{completion['tokens']} from completion ends ({completion['pairs']} pairs)"
            )
        for part, stats in r.get("lengths", {}).items():
            text = "  ".join(f"{k} {v}" for k, v in stats.items())
            lines.append(f"  {part + ' tokens':<18} {text}   (before truncation)")
        if "padding" in r:
            p = r["padding"]
            lines.append(
                f"  padding            {p['shuffled']:.1%} shuffled -> {p['grouped_by_length']:.1%} grouped by length"
                " (data.group_by_length)"
            )
    if example:
        lines += ["\nexample (first train pair; ⟦ ⟧ mark prompt and completions, special tokens shown):", example]
    return "\n".join(lines)
