"""Step time of one K = 4 listwise (Plackett–Luce) step against two pairwise DPO steps over the same
completions: for each prompt of the bundled rankings, its four completions best first (c0 > c1 > c2 > c3),
as one rankings batch, or as two batches of pairs, (c0, c1) and (c2, c3). Each step is a policy forward and
backward, the frozen reference's forward, and an AdamW update. The ratio is printed, not asserted.

    python benchmarks/bench_listwise.py                    # the bundled tiny model, 8 prompts a batch
    python benchmarks/bench_listwise.py --hidden 256 --layers 4 --prompts 16

Default options (CPU, sdpa): packed rows with each prompt run once per batch row group, so the listwise
step runs a prompt once for four completions where the two pairwise steps run it twice.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from lightning_dpo import DPOModule  # noqa: E402
from lightning_dpo.data.collate import PreferenceCollator, RankingCollator  # noqa: E402
from lightning_dpo.data.group_datamodule import RankingDataModule  # noqa: E402
from lightning_dpo.embedded import DEFAULT_MODEL  # noqa: E402


def module(model: str, loss: str) -> tuple[DPOModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    m = DPOModule(model_name_or_path=model, loss={"type": loss, "beta": 0.5})
    m.configure_model()
    return m, torch.optim.AdamW([p for p in m.policy.parameters() if p.requires_grad], lr=1e-5)


def step(m: DPOModule, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    loss, _ = m.dpo_step(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--hidden", type=int, default=None, help="a random Llama of this width instead of --model")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per batch")
    parser.add_argument("--batches", type=int, default=6, help="distinct batches, cycled")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the batches (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model
    if args.hidden:
        from bench_common import save_random_model, special_tokens
        from transformers import LlamaConfig

        model = tempfile.mkdtemp(prefix="bench-listwise-")
        heads = max(1, args.hidden // 64)
        save_random_model(
            Path(model),
            lambda tok: LlamaConfig(
                vocab_size=len(tok),
                hidden_size=args.hidden,
                intermediate_size=4 * args.hidden,
                num_hidden_layers=args.layers,
                num_attention_heads=heads,
                num_key_value_heads=heads,
                **special_tokens(tok),
            ),
        )
    data = RankingDataModule(tokenizer_name_or_path=model, batch_size=args.prompts, max_length=128)
    data.setup("fit")
    items = data.train_data[: args.prompts * args.batches]
    groups = [items[i : i + args.prompts] for i in range(0, len(items), args.prompts)]
    pad = data.tokenizer.pad_token_id
    rankings = [RankingCollator(pad)(g) for g in groups]

    def pairs(g, a, b):
        rows = [
            {"prompt_input_ids": x["prompt_input_ids"], "chosen_input_ids": x["completions_input_ids"][a]} for x in g
        ]
        for row, x in zip(rows, g):
            row["rejected_input_ids"] = x["completions_input_ids"][b]
        return PreferenceCollator(pad)(rows)

    pairwise = [(pairs(g, 0, 1), pairs(g, 2, 3)) for g in groups]
    listwise_module, listwise_opt = module(model, "plackett_luce")
    pairwise_module, pairwise_opt = module(model, "sigmoid")

    def run_listwise():
        for batch in rankings:
            step(listwise_module, listwise_opt, batch)

    def run_pairwise():
        for first, second in pairwise:
            step(pairwise_module, pairwise_opt, first)
            step(pairwise_module, pairwise_opt, second)

    listwise, pairwise_times = [], []
    for r in range(args.repeats):  # interleaved, so that a busy machine slows both alike
        a, b = timed(run_listwise, 1)[0], timed(run_pairwise, 1)[0]
        if r:  # the first pass warms up (packing checks, allocator)
            listwise.append(a / len(rankings))
            pairwise_times.append(b / len(rankings))
    one, two = statistics.median(listwise), statistics.median(pairwise_times)
    tokens = sum(int(b["attention_mask"].sum()) for b in rankings) / len(rankings)
    print(
        f"model {model}, {args.prompts} prompts x 4 completions a batch ({tokens:.0f} tokens), {args.threads} thread(s)"
    )
    print(f"listwise K=4 step:           {one * 1e3:8.1f} ms")
    print(f"two pairwise steps (c0>c1, c2>c3): {two * 1e3:8.1f} ms")
    print(f"ratio listwise / two pairwise: {one / two:.2f}")
    if args.hidden:
        shutil.rmtree(model, ignore_errors=True)


if __name__ == "__main__":
    main()
