"""First run against cached run of the data pipeline, on generated preference data.

    python benchmarks/bench_tokenize_cache.py [--pairs 24000] [--num-proc N] [--formats text chat]

For each format it writes ``--pairs`` unique pairs (multi-turn polite-vs-rude transcripts from
``lightning_dpo.tasks.politeness``, 1 to 4 earlier turns, so lengths vary) to a temporary directory, then
times ``prepare_data()`` + ``setup("fit")`` of two fresh ``PreferenceDataModule``s with the same settings
and an empty temporary cache: the first reads, validates, tokenises (``datasets.map``, ``num_proc``) and
writes the cache; the second finds it and tokenises nothing (counted, and checked). ``chat`` rows are
conversations rendered by a chat template. Figures are this run's measurements, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from lightning_dpo.tasks.politeness import build_splits

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def generate(n: int, chat: bool, seed: int = 0) -> list[dict]:
    """``n`` unique pairs: earlier turns drawn from the bundled task, then the pair's own question."""
    base = build_splits(seed=seed, n_train=2000, n_val=10)["train"]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        record = base[i % len(base)]
        history = rng.sample(base, rng.randint(1, 4))
        question = record["prompt"].split("Human: ", 1)[1].rsplit("\n\nAssistant:", 1)[0] + f" (#{i})"
        if chat:
            turns = []
            for h in history:
                q = h["prompt"].split("Human: ", 1)[1].rsplit("\n\nAssistant:", 1)[0]
                turns += [{"role": "user", "content": q}, {"role": "assistant", "content": h["chosen"].strip()}]
            turns.append({"role": "user", "content": question})
            reply = lambda text: [{"role": "assistant", "content": text.strip()}]  # noqa: E731
            rows.append({"prompt": turns, "chosen": reply(record["chosen"]), "rejected": reply(record["rejected"])})
        else:
            prompt = "".join(h["prompt"] + h["chosen"] for h in history) + f"\n\nHuman: {question}\n\nAssistant:"
            rows.append({"prompt": prompt, "chosen": record["chosen"], "rejected": record["rejected"]})
    return rows


def timed_run(data_dir: Path, cache_dir: Path, num_proc: int | None, chat: bool) -> tuple[float, int, int]:
    """(seconds of prepare_data + setup, train pairs, tokenising calls)."""
    from lightning_dpo import PreferenceDataModule
    from lightning_dpo.data import datamodule

    calls = []
    real = datamodule.build_split
    datamodule.build_split = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    try:
        data = PreferenceDataModule(
            dataset=str(data_dir),
            tokenizer_name_or_path="embedded:tiny-polite-sft",
            cache_dir=str(cache_dir),
            max_length=256,
            max_prompt_length=192,
            num_proc=num_proc,
            chat_template=TEMPLATE if chat else None,
        )
        start = time.perf_counter()
        data.prepare_data()
        data.setup("fit")
        seconds = time.perf_counter() - start
    finally:
        datamodule.build_split = real
    return seconds, len(data.train_data), len(calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24_000)
    parser.add_argument("--num-proc", type=int, default=None, help="None: one process per 10k records, up to the CPUs")
    parser.add_argument("--formats", nargs="+", default=["text", "chat"], choices=["text", "chat"])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    print(f"{args.pairs} pairs, {os.cpu_count()} CPUs, num_proc={args.num_proc or 'auto'}")
    for fmt in args.formats:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir, cache_dir = Path(tmp) / "data", Path(tmp) / "cache"
            data_dir.mkdir()
            rows = generate(args.pairs, chat=fmt == "chat")
            with open(data_dir / "train.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            size = (data_dir / "train.jsonl").stat().st_size / 1e6
            first, pairs, first_calls = timed_run(data_dir, cache_dir, args.num_proc, fmt == "chat")
            cached, _, cached_calls = timed_run(data_dir, cache_dir, args.num_proc, fmt == "chat")
            assert cached_calls == 0, "the cached run tokenised"
            print(
                f"{fmt:>4}: {size:5.1f} MB jsonl, {pairs} train pairs | first run {first:6.2f} s "
                f"(tokenised {first_calls} splits) | cached run {cached:5.2f} s (tokenised {cached_calls}) | "
                f"{first / cached:5.1f}x faster"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
