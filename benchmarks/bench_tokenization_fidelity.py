"""Token for token: the package's ids against the tokenization of the whole text, per tokenizer family;
what HH-shaped data keeps and cuts.

    python benchmarks/bench_tokenization_fidelity.py [--pairs 2312] [--fidelity-pairs 300] [--work DIR]
        [--tokenizer-pairs 2000]

Data and tokenizers come from ``scripts/make_hh_shaped_data.py`` (HH-shaped synthetic transcripts, not
the real HH-RLHF split, which is not available offline). It prints:

1. per family (byte-level BPE, SentencePiece layout, whitespace-ended prompts on each), how many of the
   first ``--fidelity-pairs`` pairs with two non-empty answers have ``prompt ids + completion ids`` different
   from ``tokenizer(prompt + completion)`` + EOS (the whole text, as the model saw text in pre-training),
   and how many completions begin with a token that the whole-text tokenization does not have there;
2. the records kept at ``max_length=4096`` (through ``PreferenceDataModule.dry_run``, so every drop counts);
3. at the data module's default lengths (``max_length=512`` and its default ``max_prompt_length``), the
   prompts cut, how many of those pairs would have fit whole, and the tokens cut by cause.

It reads only public functions that every version has, so running it with ``PYTHONPATH`` at another
checkout measures that version ("before" and "after" a change).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

import datasets  # noqa: E402
import make_hh_shaped_data as hh  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import lightning_dpo  # noqa: E402
from lightning_dpo.data import PreferenceDataModule  # noqa: E402
from lightning_dpo.data.formats import to_example  # noqa: E402
from lightning_dpo.data.sources import PreferenceDataError  # noqa: E402
from lightning_dpo.data.tokenize import tokenize_examples  # noqa: E402
from lightning_dpo.data.truncation import TokenSettings  # noqa: E402


def build(work: Path, pairs: int, seed: int, tokenizer_pairs: int) -> None:
    """Write the data and tokenizers into ``work``, unless a previous run with as many pairs left them there."""
    if not (work / "test.jsonl").is_file() or len((work / "test.jsonl").read_text().splitlines()) != pairs:
        hh.main(
            ["--out", str(work), "--pairs", str(pairs), "--seed", str(seed), "--tokenizer-pairs", str(tokenizer_pairs)]
        )


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def examples(rows: list[dict], name: str, both_answered: bool) -> list:
    out = []
    for i, row in enumerate(rows):
        if both_answered and not all(hh_answer(row, role) for role in ("chosen", "rejected")):
            continue
        try:
            out.append(to_example(row, f"{name}:{i + 1}"))
        except PreferenceDataError:
            continue
    return out


def hh_answer(row: dict, role: str) -> str:
    """The record's answer on ``role`` (implicit prompt: what follows the last ``Assistant:``)."""
    if "prompt" in row:
        return row[role].strip()
    return row[role].rsplit("\n\nAssistant:", 1)[-1].strip()


def fidelity(examples_: list, tokenizer) -> tuple[int, int, int]:
    """(pairs, pairs whose ids differ from the whole text's, completions starting with a stray token)."""
    settings = TokenSettings(max_length=10**9)
    differ = stray = 0
    for example, pair in zip(examples_, tokenize_examples(examples_, tokenizer, settings)):
        bad = False
        for role in ("chosen", "rejected"):
            whole = tokenizer(example.prompt + getattr(example, role))["input_ids"] + [tokenizer.eos_token_id]
            ours = list(pair["prompt_input_ids"]) + list(pair[f"{role}_input_ids"])
            bad |= ours != whole
            first = pair[f"{role}_input_ids"][:1]
            stray += bool(first) and whole[len(pair["prompt_input_ids"]) : len(pair["prompt_input_ids"]) + 1] != first
        differ += bad
    return len(examples_), differ, stray


def cuts(examples_: list, tokenizer, settings: TokenSettings) -> dict[str, int]:
    out = dict.fromkeys(
        ("pairs", "prompts_cut", "of_which_would_fit", "prompt_tokens_cut", "completions_cut", "completion_tokens_cut"),
        0,
    )
    out["dropped"] = 0
    for pair in tokenize_examples(examples_, tokenizer, settings):
        out["pairs"] += 1
        if pair["dropped"]:
            out["dropped"] += 1
            continue
        longest = max(pair["chosen_length"], pair["rejected_length"])
        cut = pair["prompt_length"] - len(pair["prompt_input_ids"])
        if cut:
            out["prompts_cut"] += 1
            out["prompt_tokens_cut"] += cut
            out["of_which_would_fit"] += pair["prompt_length"] + longest <= settings.max_length
        for role in ("chosen", "rejected"):
            lost = pair[f"{role}_length"] - len(pair[f"{role}_input_ids"])
            out["completions_cut"] += lost > 0
            out["completion_tokens_cut"] += lost
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2312)
    parser.add_argument("--fidelity-pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-pairs", type=int, default=2000)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "lightning_dpo_hh_shaped"))
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    work = Path(args.work)
    build(work, args.pairs, args.seed, args.tokenizer_pairs)
    implicit, spaced = read(work / "test.jsonl"), read(work / "test_whitespace.jsonl")
    tokenizers = {family: AutoTokenizer.from_pretrained(work / family) for family in hh.FAMILIES}
    print(f"lightning_dpo from {Path(lightning_dpo.__file__).parent}; HH-shaped synthetic data in {work}")

    print(f"\n1. pairs whose ids differ from the whole text's (first {args.fidelity_pairs} with two answers)")
    print(f"   {'case':<34} {'pairs':>6} {'differ':>7} {'stray first tokens':>19}")
    cases = [
        ("byte-level BPE, HH prompts", implicit, "byte_bpe"),
        ("SentencePiece layout, HH prompts", implicit, "sentencepiece"),
        ("byte-level BPE, prompts end in ' '", spaced, "byte_bpe"),
        ("SentencePiece, prompts end in ' '", spaced, "sentencepiece"),
    ]
    for label, rows, family in cases:
        chosen = examples(rows[: args.fidelity_pairs * 2], label, both_answered=True)[: args.fidelity_pairs]
        n, differ, stray = fidelity(chosen, tokenizers[family])
        print(f"   {label:<34} {n:>6} {differ:>7} {stray:>19}")

    print("\n2. records kept at max_length=4096 (byte-level BPE)")
    with tempfile.TemporaryDirectory() as cache:
        data = PreferenceDataModule(
            dataset=str(work / "test.jsonl"),
            tokenizer_name_or_path=str(work / "byte_bpe"),
            max_length=4096,
            val_size=1,
            cache_dir=cache,
        )
        report = data.dry_run()["train"]
    print(f"   read {report['read']}, kept {report['kept']}, dropped {report['dropped'] or 0}")
    if "empty_completions" in report:
        print(f"   kept with an empty (EOS-only) completion: {report['empty_completions']}")

    default = inspect.signature(PreferenceDataModule).parameters["max_prompt_length"].default
    settings = TokenSettings(max_length=512, max_prompt_length=default)
    print(f"\n3. at the defaults (max_length=512, max_prompt_length={default}, keep_end), byte-level BPE")
    everything = examples(implicit, "test", both_answered=False)
    for key, value in cuts(everything, tokenizers["byte_bpe"], settings).items():
        print(f"   {key:<24} {value}")


if __name__ == "__main__":
    main()
