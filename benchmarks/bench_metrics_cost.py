"""What TRL's extra metrics cost: the policy's log-prob pass (forward and backward) with and without the
entropy and top-1 statistics that the fused head computes block by block (``with_stats``).

    python benchmarks/bench_metrics_cost.py [--repeats 5]

Two shapes: the embedded default (1.4 M-parameter Llama, 1,024-token vocabulary, its own 16-pair batches) and
a 131,072-token vocabulary (2 layers, hidden 256), where the head's blocks dominate. Runs alternate, and the
ratio is of medians measured in this one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_common import save_random_model, special_tokens  # noqa: E402

from lightning_dpo import PreferenceDataModule  # noqa: E402
from lightning_dpo.embedded import DEFAULT_MODEL  # noqa: E402
from lightning_dpo.logps import completion_logps  # noqa: E402
from lightning_dpo.models import load_causal_lm  # noqa: E402


def large_vocab(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=131_072, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       **special_tokens(tokenizer))  # fmt: skip


def batch_of(model_dir: str, pairs: int, max_length: int) -> dict[str, torch.Tensor]:
    data = PreferenceDataModule(tokenizer_name_or_path=model_dir, batch_size=pairs, max_length=max_length)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def timed(model, batch, with_stats: bool) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = completion_logps(model, batch, with_stats=with_stats)
    out.logps.sum().backward()
    return time.perf_counter() - start


def measure(name: str, model_dir: str, pairs: int, max_length: int, repeats: int) -> None:
    model = load_causal_lm(model_dir).train()
    batch = batch_of(model_dir, pairs, max_length)
    for stats in (False, True):  # warm-up: packing checks, allocator
        timed(model, batch, stats)
    times = {False: [], True: []}
    for _ in range(repeats):
        for stats in (False, True):
            times[stats].append(timed(model, batch, stats))
    plain, full = statistics.median(times[False]), statistics.median(times[True])
    print(f"{name:<28} without {plain * 1e3:8.1f} ms   with {full * 1e3:8.1f} ms   ratio {full / plain:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    measure("default (vocab 1,024)", DEFAULT_MODEL, pairs=16, max_length=128, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        save_random_model(Path(tmp), large_vocab)
        measure("vocab 131,072 (2 layers)", tmp, pairs=4, max_length=512, repeats=args.repeats)


if __name__ == "__main__":
    main()
