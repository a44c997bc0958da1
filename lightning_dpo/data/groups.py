"""Rankings and unpaired feedback: raw rows -> examples -> token ids, for the rankings and KTO losses.

Row formats (text prompts and completions; conversations are not read here yet):

- **rankings**, ``{prompt, completions: [..], scores: [..]}`` or ``{prompt, completions: [..], ranks: [..]}``:
  K ≥ 2 completions and one score (higher is better) or rank (1 is best) each. UltraFeedback's own shape
  is read too: the prompt under ``instruction``, each completion an object with its text under
  ``response`` and its score under ``overall_score`` (or ``score``).
- **unpaired** (TRL's unpaired preference format), ``{prompt, completion, label}``: ``label`` is a bool,
  true for a desirable completion. With ``unpair``, a pair (``prompt``/``chosen``/``rejected``, read as
  :mod:`~lightning_dpo.data.formats` reads pairs) gives one desirable and one undesirable example.

**Ties.** Completions with equal scores are tied: neither is above the other. A ranking keeps its
completions sorted best first (ties in their order in the record); the Plackett–Luce loss lets a completion
compete only with those scored strictly below it, so a tie adds no term between the tied completions. A
ranking whose completions all tie says nothing and is dropped (``all_tied``).

Tokens follow the pairwise rule (:mod:`~lightning_dpo.data.text`): each prompt + completion is tokenised as
one text, and the prompt is where the ids of all of a record's sequences diverge, so its K completions share
one prompt token sequence (the packed path runs it once). Truncation follows
:mod:`~lightning_dpo.data.truncation` with the longest of the K completions in the role of the longer one.

Every record left out is counted by ``kind`` in a :class:`GroupTally` (the reasons of
:data:`~lightning_dpo.data.sources.BAD_RECORD_KINDS` and :data:`GROUP_RECORD_KINDS`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import PreferenceExample, to_example
from lightning_dpo.data.sources import InvalidJSON, PreferenceDataError, Row
from lightning_dpo.data.text import common_prefix_length, encode_batch, special_prefix, with_eos, with_prefix
from lightning_dpo.data.truncation import TokenSettings, keep_prompt_end

GROUP_RECORD_KINDS = {
    "too_few_completions": "a ranking with fewer than two completions",
    "completion_count": "a ranking with another number of completions than the data's (num_completions)",
    "all_tied": "a ranking whose completions all have the same score",
    "not_a_number": "a score or rank that is not a finite number",
    "paired_record": "a pair (chosen/rejected) in unpaired data without unpair",
    "no_completion_tokens": "a record that max_length leaves without a token of some completion",
}
"""Reasons, beside ``BAD_RECORD_KINDS``, for which a ranking or unpaired record is skipped."""

FIRST_PER_KIND = 5
PROMPT_FIELDS = ("prompt", "instruction")
TEXT_FIELDS = ("response", "text", "content", "completion")
SCORE_FIELDS = ("overall_score", "score", "rating")


class RankingExample(NamedTuple):
    prompt: str
    completions: list[str]
    """Best first (stable: tied completions keep their order in the record)."""
    scores: list[float]
    """Higher is better, non-increasing; a rank r was read as the score −r."""


class UnpairedExample(NamedTuple):
    prompt: str
    completion: str
    label: bool
    """True: a desirable completion."""


class GroupTally:
    """Records read, kept and dropped by reason, with the first few dropped of each reason."""

    def __init__(self) -> None:
        self.read = 0
        self.dropped: Counter[str] = Counter()
        self.first: list[dict[str, Any]] = []

    def drop(self, error: PreferenceDataError) -> None:
        self.dropped[error.kind] += 1
        if self.dropped[error.kind] <= FIRST_PER_KIND:
            self.first.append(
                {"kind": error.kind, "location": error.location, "field": error.field, "message": error.reason}
            )

    def to_dict(self, kept: int) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": kept,
            "dropped": dict(sorted(self.dropped.items())),
            "first_dropped": self.first,
        }

    def warning(self, split: str) -> str | None:
        if not self.dropped:
            return None
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.dropped.items()))
        first = self.first[0]
        skipped = sum(self.dropped.values())
        where = f"{first['location']}: {first['message']}"
        return f"{split}: skipped {skipped} of {self.read} records ({counts}); first: {where}"


# -- rows -> examples -------------------------------------------------------------------------------------


def to_ranking(row: Any, location: str, columns: Mapping[str, str] | None = None) -> RankingExample:
    """One raw row -> a :class:`RankingExample` sorted best first; raise :class:`PreferenceDataError`."""
    row = _record(row, location)
    names = {role: (columns or {}).get(role, role) for role in ("prompt", "completions", "scores", "ranks")}
    prompt = _prompt(row, location, names["prompt"])
    raw = row.get(names["completions"])
    if not isinstance(raw, list):
        kind = "missing_field" if raw is None else "not_a_string"
        raise PreferenceDataError(location, names["completions"], "expected a list of completions", kind=kind)
    texts, scores = [], []
    for i, item in enumerate(raw):
        text, score = _completion(item, location, f"{names['completions']}[{i}]")
        texts.append(text)
        scores.append(score)
    if row.get(names["scores"]) is not None:
        scores = _numbers(row[names["scores"]], len(texts), location, names["scores"])
    elif row.get(names["ranks"]) is not None:
        scores = [-r for r in _numbers(row[names["ranks"]], len(texts), location, names["ranks"])]
    if any(s is None for s in scores):
        raise PreferenceDataError(
            location,
            names["scores"],
            "each completion needs a score: give scores, ranks or overall_score",
            kind="missing_field",
        )
    if len(texts) < 2:
        raise PreferenceDataError(
            location, names["completions"], "a ranking needs two completions or more", kind="too_few_completions"
        )
    if len(set(scores)) == 1:
        raise PreferenceDataError(
            location, names["scores"], "every completion has the same score: no preference", kind="all_tied"
        )
    order = sorted(range(len(texts)), key=lambda i: -scores[i])  # stable: ties keep the record's order
    return RankingExample(prompt, [texts[i] for i in order], [float(scores[i]) for i in order])


def to_unpaired(
    row: Any, location: str, columns: Mapping[str, str] | None = None, unpair: bool = False
) -> list[UnpairedExample]:
    """One raw row -> its unpaired examples: one for ``{prompt, completion, label}``, two for a pair (with
    ``unpair``); raise :class:`PreferenceDataError`."""
    row = _record(row, location)
    names = {role: (columns or {}).get(role, role) for role in ("prompt", "completion", "label", "chosen", "rejected")}
    if row.get(names["completion"]) is None and row.get(names["chosen"]) is not None:
        if not unpair:
            raise PreferenceDataError(
                location,
                names["chosen"],
                "a pair in unpaired data: set data.unpair: true to use it",
                kind="paired_record",
            )
        pair = to_example(row, location, columns)
        if not isinstance(pair, PreferenceExample):
            raise PreferenceDataError(
                location, names["chosen"], "conversational pairs are not unpaired yet", kind="not_a_string"
            )
        return [UnpairedExample(pair.prompt, pair.chosen, True), UnpairedExample(pair.prompt, pair.rejected, False)]
    prompt = _prompt(row, location, names["prompt"])
    completion = row.get(names["completion"])
    if not isinstance(completion, str):
        kind = "missing_field" if completion is None else "not_a_string"
        raise PreferenceDataError(location, names["completion"], "expected a completion string", kind=kind)
    label = row.get(names["label"])
    if not isinstance(label, bool):
        kind = "missing_field" if label is None else "not_a_string"
        raise PreferenceDataError(location, names["label"], "expected a bool label (true: desirable)", kind=kind)
    return [UnpairedExample(prompt, completion, label)]


def _record(row: Any, location: str) -> Mapping:
    if isinstance(row, InvalidJSON):
        raise PreferenceDataError(location, None, row.message, kind="invalid_json")
    if not isinstance(row, Mapping):
        raise PreferenceDataError(location, None, f"expected an object, got {type(row).__name__}", kind="not_a_record")
    return row


def _prompt(row: Mapping, location: str, field: str) -> str:
    fields = [field] if field != "prompt" else list(PROMPT_FIELDS)
    found = next((f for f in fields if row.get(f) is not None), None)
    if found is None:
        raise PreferenceDataError(location, field, "the field is missing", kind="missing_field")
    if not isinstance(row[found], str):
        kind = "not_a_string"
        raise PreferenceDataError(
            location, found, f"expected a text prompt, got {type(row[found]).__name__}", kind=kind
        )
    if not row[found].strip():
        raise PreferenceDataError(location, found, "the prompt is empty", kind="empty_prompt")
    return row[found]


def _completion(item: Any, location: str, field: str) -> tuple[str, float | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, Mapping):
        text = next((item[f] for f in TEXT_FIELDS if isinstance(item.get(f), str)), None)
        if text is not None:
            score = next((item[f] for f in SCORE_FIELDS if item.get(f) is not None), None)
            return text, None if score is None else _number(score, location, field)
    raise PreferenceDataError(
        location, field, f"expected a string or an object with one of {list(TEXT_FIELDS)}", kind="not_a_string"
    )


def _numbers(value: Any, count: int, location: str, field: str) -> list[float]:
    if not isinstance(value, list) or len(value) != count:
        raise PreferenceDataError(
            location, field, f"expected a list of {count} numbers, one per completion", kind="not_a_number"
        )
    return [_number(v, location, field) for v in value]


def _number(value: Any, location: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PreferenceDataError(location, field, f"{value!r} is not a finite number", kind="not_a_number")
    return float(value)


def read_examples(rows: Iterable[Row], parse, tally: GroupTally, strict: bool = False) -> list[tuple[str, Any]]:
    """(location, example) of every row ``parse(row, location)`` accepts (a list: several examples); the others
    counted in ``tally`` (or, ``strict``, raised). Exact duplicates are dropped (``duplicate``)."""
    out, seen = [], {}
    for location, row in rows:
        tally.read += 1
        try:
            parsed = parse(row, location)
            for example in parsed if isinstance(parsed, list) else [parsed]:
                key = repr(example)
                if key in seen:
                    raise PreferenceDataError(location, None, f"exact duplicate of {seen[key]}", kind="duplicate")
                seen[key] = location
                out.append((location, example))
        except PreferenceDataError as e:
            if strict:
                raise
            tally.drop(e)
    return out


# -- examples -> tokens -----------------------------------------------------------------------------------


def encode_groups(
    prompts: Sequence[str], completions: Sequence[Sequence[str]], tokenizer: PreTrainedTokenizerBase
) -> list[tuple[list[int], list[list[int]]] | None]:
    """(prompt ids, [completion ids, ...]) per prompt, each prompt + completion tokenised as one text and the
    prompt where all of them diverge (the pairwise rule); ``None`` where no prompt token is left."""
    texts = list(prompts) + [p + c for p, group in zip(prompts, completions) for c in group]
    prefix = special_prefix(tokenizer)
    ids = [with_prefix(i, prefix) for i in encode_batch(tokenizer, texts)]
    eos, at = tokenizer.eos_token_id, len(prompts)
    out = []
    for i, group in enumerate(completions):
        full = ids[at : at + len(group)]
        at += len(group)
        n = min(common_prefix_length(ids[i], f) for f in full)
        out.append((full[0][:n], [with_eos(f[n:], eos) for f in full]) if n else None)
    return out


def truncate_group(
    prompt: list[int], completions: list[list[int]], settings: TokenSettings, bos_token_id: int | None
) -> tuple[list[int], list[list[int]], bool]:
    """:func:`~lightning_dpo.data.truncation.truncate`'s rules for one prompt and K completions:
    (prompt, completions, whether anything was cut)."""
    longest = max(len(c) for c in completions)
    kept = prompt
    if settings.truncation_mode == "keep_end":
        keep = max(min(len(prompt), settings.prompt_floor), min(len(prompt), settings.max_length - longest))
        kept = keep_prompt_end(prompt, keep, bos_token_id)
    room = max(settings.max_length - len(kept), 0)
    cut = [c[:room] for c in completions]
    return kept, cut, len(kept) < len(prompt) or any(len(a) < len(b) for a, b in zip(cut, completions))


def tokenize_rankings(
    examples: Sequence[tuple[str, RankingExample]],
    tokenizer: PreTrainedTokenizerBase,
    settings: TokenSettings,
    tally: GroupTally,
    num_completions: int | None = None,
) -> list[dict[str, Any]]:
    """Items ``{prompt_input_ids, completions_input_ids, scores, location, truncated}`` for the
    :class:`~lightning_dpo.data.collate.RankingCollator`; records dropped here are counted in ``tally``.
    Every item has K completions: ``num_completions``, or the first record's count."""
    k = num_completions or (len(examples[0][1].completions) if examples else 2)
    kept = []
    for location, example in examples:
        if len(example.completions) != k:
            message = f"{len(example.completions)} completions where the data has {k} (num_completions)"
            tally.drop(PreferenceDataError(location, "completions", message, kind="completion_count"))
        else:
            kept.append((location, example))
    encoded = encode_groups([e.prompt for _, e in kept], [e.completions for _, e in kept], tokenizer)
    items = []
    for (location, example), ids in zip(kept, encoded):
        item = _tokens(location, ids, settings, tokenizer, tally)
        if item is not None:
            prompt, completions, truncated = item
            items.append(
                {
                    "location": location,
                    "prompt_input_ids": prompt,
                    "completions_input_ids": completions,
                    "scores": example.scores,
                    "truncated": truncated,
                }
            )
    return items


def tokenize_unpaired(
    examples: Sequence[tuple[str, UnpairedExample]],
    tokenizer: PreTrainedTokenizerBase,
    settings: TokenSettings,
    tally: GroupTally,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Items ``{prompt_input_ids, completion_input_ids, kl_completion_input_ids, label, ...}`` for the
    :class:`~lightning_dpo.data.collate.UnpairedCollator`.

    The KL completion of each example is another example's completion, fixed here by a seeded derangement
    of the split (a shuffled cycle: no example gets its own), so the KL rows are the same in every epoch and
    their reference log-probs can be precomputed. TRL mismatches within each batch of a sequential order; the
    estimate is of the same quantity, E over prompts x and unrelated completions y' of log πθ(y'|x)/πref(y'|x).
    """
    encoded = encode_groups([e.prompt for _, e in examples], [[e.completion] for _, e in examples], tokenizer)
    items = []
    for (location, example), ids in zip(examples, encoded):
        item = _tokens(location, ids, settings, tokenizer, tally)
        if item is not None:
            prompt, (completion,), truncated = item
            items.append(
                {
                    "location": location,
                    "prompt_input_ids": prompt,
                    "completion_input_ids": completion,
                    "label": example.label,
                    "truncated": truncated,
                }
            )
    assign_kl_completions(items, settings.max_length, seed)
    return items


def assign_kl_completions(items: list[dict[str, Any]], max_length: int, seed: int) -> None:
    """Set each item's ``kl_completion_input_ids`` to another item's completion (cut to fit ``max_length``
    after its own prompt), by a seeded derangement of ``items``: a shuffled cycle, so none gets its own."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    for i, j in zip(order, order[1:] + order[:1]):  # each example takes the next one's completion in the cycle
        room = max(max_length - len(items[i]["prompt_input_ids"]), 1)
        items[i]["kl_completion_input_ids"] = items[j]["completion_input_ids"][:room]


def _tokens(location: str, ids, settings: TokenSettings, tokenizer: PreTrainedTokenizerBase, tally: GroupTally):
    if ids is None:
        message = "the prompt's tokens all merge with the completions' (a one-word prompt, and no BOS)"
        tally.drop(PreferenceDataError(location, "prompt", message, kind="empty_prompt"))
        return None
    prompt, completions, truncated = truncate_group(*ids, settings, tokenizer.bos_token_id)
    if min(len(c) for c in completions) == 0:
        limit = f"max_length={settings.max_length} (truncation_mode={settings.truncation_mode})"
        message = f"the prompt leaves no completion token within {limit}"
        tally.drop(PreferenceDataError(location, None, message, kind="no_completion_tokens"))
        return None
    return prompt, completions, truncated
