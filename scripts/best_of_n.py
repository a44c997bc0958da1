"""Best-of-N points of the reward–KL frontier, from samples of the SFT model.

Best-of-N draws N samples of πref and keeps the best-scored one. Its KL from πref is known in closed form
(Beirami et al. 2024, for a reward without ties): KL = log N − (N − 1)/N; with ties it is at most that, so
the KL column is an upper bound. Its expected reward is estimated without bias from M ≥ N samples per
prompt: for the sorted rewards r_(1) ≤ … ≤ r_(M), E[max of N] = Σ_{i ≥ N} C(i−1, N−1) / C(M, N) · r_(i)
(a uniformly random N-subset of M i.i.d. samples is N i.i.d. samples), so every N uses all M samples.

Writes one CSV row per N in the columns of ``lightning-dpo evaluate``'s ``frontier.csv`` (reward and KL
with standard errors over prompts), so both files can be read together.

    python scripts/best_of_n.py --model embedded:reviews-sft --dataset embedded:reviews --split test \\
        --reward lightning_dpo.tasks.reviews.sentiment_reward --n 4 16 64 --output runs/bon.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from lightning_dpo.evaluation.generation import SamplingSettings  # noqa: E402
from lightning_dpo.evaluation.kl import mean_and_sem  # noqa: E402
from lightning_dpo.evaluation.rewards import load_reward  # noqa: E402
from lightning_dpo.models import load_causal_lm, load_tokenizer  # noqa: E402
from lightning_dpo.onpolicy.sampling import sample_scored  # noqa: E402
from lightning_dpo.tools.frontier import CSV_FIELDS, read_prompts  # noqa: E402


def expected_max(rewards: Sequence[float], n: int) -> float:
    """Unbiased estimate of E[max of n i.i.d. draws] from ``len(rewards) >= n`` i.i.d. draws."""
    m = len(rewards)
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= {m} samples, got n={n}")
    ordered = sorted(rewards)
    total = math.comb(m, n)
    # The i-th smallest (1-based) is the max of exactly C(i-1, n-1) of the C(m, n) subsets.
    return sum(math.comb(i - 1, n - 1) * ordered[i - 1] for i in range(n, m + 1)) / total


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ πref) for a reward without ties: log n − (n − 1)/n nats."""
    return math.log(n) - (n - 1) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:reviews-sft", help="πref: the SFT model")
    parser.add_argument("--dataset", default="embedded:reviews")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--reward", default="lightning_dpo.tasks.reviews.sentiment_reward")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--samples", type=int, default=None, help="M samples per prompt (default: the largest N)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="best_of_n.csv")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    m = args.samples or max(args.n)
    model = load_causal_lm(args.model)
    tokenizer = load_tokenizer(args.model)
    prompts = [e.prompt for e in read_prompts(args.dataset, args.split, args.num_prompts)]
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, seed=args.seed)
    with torch.no_grad():
        groups = sample_scored(model, tokenizer, prompts, load_reward(args.reward), k=m, settings=settings,
                               batch_size=max(args.batch_size // m, 1))  # fmt: skip
    seconds = time.perf_counter() - started
    rows = []
    for n in args.n:
        per_prompt = [expected_max(g.scores, n) for g in groups]
        reward = mean_and_sem(per_prompt)
        kl = best_of_n_kl(n)
        rows.append({
            "label": f"best-of-{n}", "group": "best-of-N", "model": args.model, "reference": args.model,
            "beta": None, "step": n, "n": reward.n, "reward_mean": reward.mean, "reward_sem": reward.sem,
            "kl_mean": kl, "kl_sem": 0.0, "seconds": seconds,
        })  # fmt: skip
        print(f"best-of-{n:<3d} reward {reward.mean:+.3f} ± {reward.sem:.3f}  KL {kl:.3f}", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(prompts)} prompts x {m} samples in {seconds:.1f}s; wrote {args.output}")


if __name__ == "__main__":
    main()
