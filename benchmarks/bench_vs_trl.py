"""lightning_dpo against TRL's DPOTrainer and a plain-PyTorch full-logits step: same model, same pairs.

    pip install -e ".[bench]"
    python benchmarks/bench_vs_trl.py [--shapes small large qwen] [--steps 4] [--warmup 2] [--repeats 1]

The issue-15 table (all three shapes, one command; about 1.5 hours on a quiet 2-core machine):

    flock /tmp/heavy.lock python benchmarks/bench_vs_trl.py --shapes small large qwen --runners lightning_dpo trl \
        --steps 3 --warmup 2 --no-parity --json bench.json

Shapes (random weights, fp32, AdamW at 1e-6, no gradient clipping, no checkpointing, dropout off):

- ``small``: a Llama, 4 layers, hidden 256, vocabulary 8,192, batch 8 pairs, ``max_length`` 256;
- ``large`` (memory-bound): a Llama, 2 layers, hidden 256, untied embeddings, vocabulary 131,072,
  ``max_length`` 1,024, batch 4 pairs;
- ``qwen``: Qwen2.5-0.5B's architecture (Qwen2: 24 layers, hidden 896, MLP 4,864, grouped-query attention
  14 query / 2 key-value heads, q/k/v biases, tied 151,936-token vocabulary, 494M parameters), ``max_length``
  512, batch 2 pairs of 0-8 earlier exchanges and 0-4 follow-ups. A step needs ~14 GB: run it alone.

Data: multi-turn dialogues built from the bundled pairs, so that prompts are about two thirds of the
tokens: each prompt holds several earlier exchanges, and each completion is the answer plus the next
exchanges (polite ones for chosen, rude ones for rejected). The tokenizer is the bundled 1,024-token one;
the models' larger vocabularies keep the LM head's real cost.

Every runner trains on exactly the same batches in the same order (lightning_dpo's seeded order; TRL and
the plain step read it sequentially), each measurement in its own process, the processes alternating
(A B C A B C …) over ``--repeats`` rounds. Memory is allocated as users' processes allocate it (glibc's
default, dynamic mmap threshold). ``--fixed-mmap-threshold`` fixes it at 128 KiB so that freed blocks leave
the RSS at once and peak RSS tracks live memory more closely; every large allocation then maps fresh pages,
which on this CPU about doubles every runner's step time, so step times come from the default.

Runners:

- ``lightning_dpo``: ``DPOModule`` + ``PreferenceDataModule`` under a ``pl.Trainer``, default options (on a
  CPU with sdpa: the fused head at completion positions, padding-free rows with each pair's prompt once);
- ``lightning_dpo_padded``: the same with ``logps={padding_free: false, share_prompt: false}`` (the fused head on the
  padded batch);
- ``trl``: ``trl.DPOTrainer`` in its fastest CPU setting: fp32, no gradient checkpointing, ``use_cpu``,
  no evaluation, no logging, no precompute, a constant learning rate, ``max_grad_norm=0``;
- ``plain``: the policy forward with full logits, the reference forward, log-softmax + gather in fp32,
  the sigmoid loss, backward and the AdamW step, nothing else.

- ``lightning_dpo+OPTION``: the defaults plus one memory option (``in_backward``: ``optimizer_in_backward``;
  ``bf16_reference``: ``reference.dtype: bfloat16``; ``checkpointing``: ``gradient_checkpointing``;
  ``jemalloc``: the same run under ``LD_PRELOAD=libjemalloc.so.2``).

Printed per shape: the median step time (steps after ``--warmup``), tokens per second (non-padding tokens of
chosen + rejected rows), peak RSS, each runner's ratio to TRL and to the plain step; the roofline fraction:
the step's model FLOPs (``lightning_dpo.plan.step_flops``: unique tokens, head at completion tokens, policy
forward + backward + reference forward, the same count for every runner) over the step's time without the
optimizer step, over the fp32 matmul peak measured in the same run (2048³, best of 3 s, in its own process
before each round); the share of the machine's CPU time that other processes used during each runner
("foreign CPU": the measurement shared the cores that much); and, from the lightning_dpo process, the
largest difference between the fast and the reference (full-logits) path in loss and rewards on the first
batch (fp32; ``--no-parity`` skips it). Numbers are measurements of that run, never assertions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RUNNERS = ("lightning_dpo", "lightning_dpo_padded", "trl", "plain")

OPTIONS = {
    "in_backward": {"optimizer_in_backward": True},
    "bf16_reference": {"reference": {"dtype": "bfloat16"}},
    "checkpointing": {"gradient_checkpointing": True},
    "jemalloc": {},
}
"""``lightning_dpo+NAME`` runners: DPOModule arguments on top of the defaults."""

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def runner_names() -> list[str]:
    return [*RUNNERS, *(f"lightning_dpo+{name}" for name in OPTIONS)]


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    tied: bool
    max_length: int
    pairs: int
    history: tuple[int, int]
    """Earlier exchanges in each prompt: uniform in [a, b]."""
    follow_ups: tuple[int, int]
    """Exchanges after the answer in each completion: uniform in [a, b]."""
    kv_heads: int | None = None
    """Key-value heads (grouped-query attention); ``None``: as many as query heads."""
    arch: str = "llama"
    """``llama`` or ``qwen2`` (q/k/v biases)."""


SHAPES = {
    "small": Shape(4, 256, 688, 4, 8192, False, 256, 8, (2, 4), (0, 2)),
    "large": Shape(2, 256, 688, 4, 131072, False, 1024, 4, (8, 18), (3, 8)),
    "qwen": Shape(24, 896, 4864, 14, 151936, True, 512, 2, (0, 8), (0, 4), kv_heads=2, arch="qwen2"),
}


def shape_config(shape: Shape) -> dict:
    """The shape as a ``config.json`` dict, for ``lightning_dpo.plan``."""
    return {
        "num_hidden_layers": shape.layers,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads or shape.heads,
        "vocab_size": shape.vocab,
        "tie_word_embeddings": shape.tied,
        "model_type": shape.arch,
    }


# -- inputs ------------------------------------------------------------------------------------------


def build_data(path: Path, shape: Shape, num_pairs: int, seed: int = 0) -> None:
    """Multi-turn pairs from the bundled data (module docstring), all within ``max_length``."""
    from lightning_dpo.embedded import DEFAULT_DATASET, resolve_dataset

    source = Path(resolve_dataset(DEFAULT_DATASET)) / "train.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    path.mkdir(parents=True)
    for split, n in (("train", num_pairs), ("val", 4)):
        with open(path / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(n):
                picks = rng.sample(rows, shape.history[1] + shape.follow_ups[1] + 1)
                history = picks[: rng.randint(*shape.history)]
                row, after = picks[shape.history[1]], picks[shape.history[1] + 1 :][: rng.randint(*shape.follow_ups)]
                prompt = "".join(r["prompt"] + r["chosen"] for r in history) + row["prompt"]
                chosen = row["chosen"] + "".join(r["prompt"] + r["chosen"] for r in after)
                rejected = row["rejected"] + "".join(r["prompt"] + r["rejected"] for r in after)
                f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")


def build_model(path: Path, shape: Shape) -> int:
    from bench_common import save_random_model, special_tokens
    from transformers import LlamaConfig, Qwen2Config

    config = {"llama": LlamaConfig, "qwen2": Qwen2Config}[shape.arch]
    return save_random_model(
        path,
        lambda tokenizer: config(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads or shape.heads,
            max_position_embeddings=shape.max_length,
            tie_word_embeddings=shape.tied,
            **special_tokens(tokenizer),
        ),
    )


def datamodule(model_dir: str, data_dir: str, shape: Shape):
    from lightning_dpo import PreferenceDataModule

    return PreferenceDataModule(
        dataset=data_dir,
        tokenizer_name_or_path=model_dir,
        batch_size=shape.pairs,
        max_length=shape.max_length,
        max_prompt_length=None,
    )


def training_order(model_dir: str, data_dir: str, shape: Shape, out: Path) -> dict:
    """Tokenise once (the cache serves the children) and write the pairs in lightning_dpo's training order,
    as text for TRL and as token ids for the plain step."""
    from lightning_dpo.data.sampler import shuffled_order

    data = datamodule(model_dir, data_dir, shape)
    data.prepare_data()
    data.setup("fit")
    order = shuffled_order(len(data.train_data), 1, 0, data.hparams.seed)
    texts = [json.loads(line) for line in (Path(data_dir) / "train.jsonl").read_text().splitlines()]
    tokens = data.train_data.select_columns(["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"])
    with open(out / "ordered.jsonl", "w") as f:
        for i in order:
            f.write(json.dumps({**texts[i], **tokens[i]}) + "\n")
    lengths = [
        [len(tokens[i][k]) for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")] for i in order
    ]
    prompt = sum(len(tokens[i]["prompt_input_ids"]) * 2 for i in order)
    completion = sum(len(tokens[i]["chosen_input_ids"]) + len(tokens[i]["rejected_input_ids"]) for i in order)
    return {"prompt_share": prompt / (prompt + completion), "pairs": len(order), "pair_lengths": lengths}


# -- runners (each in its own process) ---------------------------------------------------------------


def run_lightning(model_dir: str, data_dir: str, shape: Shape, steps: int, padded: bool, option: str = "") -> dict:
    import torch
    from bench_common import step_timer

    from lightning_dpo import DPOModule
    from lightning_dpo.namespace import pl

    times: list[float] = []
    tokens: list[int] = []
    optimizer_times: list[float] = []

    torch.manual_seed(0)
    module = DPOModule(
        model_name_or_path=model_dir,
        loss={"beta": 0.1},
        logps={"padding_free": False, "share_prompt": False} if padded else {},
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-6, weight_decay=0.0, **_fused()),
        lr_scheduler=None,
        **OPTIONS.get(option, {}),
    )
    data = datamodule(model_dir, data_dir, shape)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[step_timer(times, tokens, optimizer_times=optimizer_times)],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the parity check's full logits
    parity = {} if os.environ.get("BENCH_NO_PARITY") or option else _parity(module, data)
    return {"times": times, "tokens": tokens, "optimizer_times": optimizer_times, "peak_rss_bytes": peak, **parity}


def _fused() -> dict:
    """``--fused-adamw``: torch's fused AdamW on every side (TRL's ``adamw_torch_fused``)."""
    return {"fused": True} if os.environ.get("BENCH_FUSED_ADAMW") else {}


def _parity(module, data, pairs: int = 2) -> dict:
    """Largest |fast − reference| of the loss and rewards on the first ``pairs`` pairs of the first batch."""
    import torch

    batch = next(iter(data.train_dataloader()))
    half = batch["input_ids"].shape[0] // 2
    rows = [*range(pairs), *range(half, half + pairs)]  # chosen rows, then their rejected rows
    batch = {k: v[rows] for k, v in batch.items() if k != "pair_index"}
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy off the reference, so that rewards are not ~0
        for param in module.policy.parameters():
            param.add_(0.01 * torch.randn_like(param))
    results = []
    for fused in (False, True):
        module.logps_options = dataclasses.replace(module.logps_options, fused_head=fused)
        with torch.no_grad():
            loss, stats = module.dpo_step(batch)
        results.append((loss, stats["rewards/chosen"].values, stats["rewards/rejected"].values))
    (loss_a, c_a, r_a), (loss_b, c_b, r_b) = results
    return {
        "parity_loss": float((loss_a - loss_b).abs()),
        "parity_rewards": float(torch.cat([(c_a - c_b).abs(), (r_a - r_b).abs()]).max()),
        "parity_reward_scale": float(torch.cat([c_a, r_a]).abs().max()),
    }


def _ordered(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "ordered.jsonl").read_text().splitlines()]


def run_trl(model_dir: str, out_dir: Path, shape: Shape, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = _ordered(out_dir)
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    times: list[float] = []
    optimizer_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.optimizer_start = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            optimizer_times.append(time.perf_counter() - self.optimizer_start)

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    class SequentialDPOTrainer(DPOTrainer):
        def _get_train_sampler(self, *args, **kwargs):  # the same batches, in the same order, as the others
            return SequentialSampler(self.train_dataset)

    args = DPOConfig(
        output_dir=str(out_dir / "trl"),
        per_device_train_batch_size=shape.pairs,
        max_steps=steps,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        optim="adamw_torch_fused" if _fused() else "adamw_torch",
        max_grad_norm=0.0,
        beta=0.1,
        max_length=shape.max_length,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        dataloader_num_workers=0,
        precompute_ref_log_probs=False,
        eval_strategy="no",
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        dataset_num_proc=None,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SequentialDPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[StepTimer()],
    )
    first = trainer.train_dataset[0]
    trl_tokens = len(first["prompt_ids"]) * 2 + len(first["chosen_ids"]) + len(first["rejected_ids"])
    ours = len(rows[0]["prompt_input_ids"]) * 2 + len(rows[0]["chosen_input_ids"]) + len(rows[0]["rejected_input_ids"])
    trainer.train()
    return {
        "times": times,
        "optimizer_times": optimizer_times,
        "tokens": _step_tokens(rows, shape.pairs, len(times)),
        "trl_tokens_first_pair": trl_tokens,
        "our_tokens_first_pair": ours,
    }


def run_plain(model_dir: str, out_dir: Path, shape: Shape, steps: int) -> dict:
    import copy

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from lightning_dpo.data.collate import PreferenceCollator

    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0, **_fused())
    rows = _ordered(out_dir)
    collate = PreferenceCollator(pad_token_id=policy.config.pad_token_id)
    times: list[float] = []
    optimizer_times: list[float] = []

    def logps(logits, batch):  # (N, T, V) -> (N,): log-softmax + gather over completion tokens, fp32
        per_token = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])
        return (per_token.squeeze(-1) * batch["completion_mask"][:, 1:]).sum(-1)

    for step in range(steps):
        batch = collate(rows[step * shape.pairs : (step + 1) * shape.pairs])
        start = time.perf_counter()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        policy_logps = logps(policy(**inputs).logits, batch)
        with torch.no_grad():
            ref_logps = logps(reference(**inputs).logits, batch)
        chosen, rejected = (policy_logps - ref_logps).chunk(2)
        loss = -F.logsigmoid(0.1 * (chosen - rejected)).mean()
        loss.backward()
        optimizer_start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        optimizer_times.append(time.perf_counter() - optimizer_start)
    return {"times": times, "optimizer_times": optimizer_times, "tokens": _step_tokens(rows, shape.pairs, steps)}


def _step_tokens(rows: list[dict], pairs: int, steps: int) -> list[int]:
    """Non-padding tokens of each step's 2B rows."""
    out = []
    for step in range(steps):
        batch = rows[step * pairs : (step + 1) * pairs]
        out.append(
            sum(
                2 * len(r["prompt_input_ids"]) + len(r["chosen_input_ids"]) + len(r["rejected_input_ids"])
                for r in batch
            )
        )
    return out


def matmul_peak(size: int = 2048, seconds: float = 3.0) -> float:
    """The fp32 matmul rate of this machine, FLOP/s: the best of timed (size x size) @ (size x size) products."""
    from lightning_dpo.callbacks.throughput import measure_matmul_peak

    return measure_matmul_peak(size=size, seconds=seconds)


def child(runner: str, shape_name: str, model_dir: str, data_dir: str, out_dir: str, out: str, steps: int) -> None:
    shape = SHAPES[shape_name]
    if runner == "peak":
        result = {"times": [], "tokens": [], "flops_per_s": matmul_peak()}
    elif runner.startswith("lightning_dpo"):
        option = runner.partition("+")[2]
        result = run_lightning(
            model_dir, data_dir, shape, steps, padded=runner == "lightning_dpo_padded", option=option
        )
    elif runner == "trl":
        result = run_trl(model_dir, Path(out_dir), shape, steps)
    else:
        result = run_plain(model_dir, Path(out_dir), shape, steps)
    result.setdefault("peak_rss_bytes", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    Path(out).write_text(json.dumps(result))


# -- the parent: build, alternate, report ------------------------------------------------------------


def summarise(results: list[dict], warmup: int, step_flops: list[float], peaks: list[float]) -> dict:
    """Medians over all measured steps of all rounds: step time, tokens per second, the step's time without its
    optimizer step, and the roofline fraction: model FLOPs / (step − optimizer) / the round's matmul peak."""
    times = [t for r in results for t in r["times"][warmup:]]
    rates = [n / t for r in results for n, t in zip(r["tokens"][warmup:], r["times"][warmup:])]
    step, tokens = statistics.median(times), statistics.median(rates)
    compute = [
        (t - o, f, peak)
        for r, peak in zip(results, peaks)
        for t, o, f in zip(r["times"][warmup:], r["optimizer_times"][warmup:], step_flops[warmup:])
    ]
    peak = statistics.median(r["peak_rss_bytes"] for r in results)
    extra = {
        k: max(r[k] for r in results)
        for k in ("parity_loss", "parity_rewards", "parity_reward_scale")
        if k in results[0]
    }
    return {
        "step_s": step,
        "tokens_per_s": tokens,
        "peak_rss_mib": peak / 2**20,
        "compute_s": statistics.median(c for c, _, _ in compute),
        "optimizer_s": statistics.median(o for r in results for o in r["optimizer_times"][warmup:]),
        "model_flops_per_s": statistics.median(f / c for c, f, _ in compute),
        "roofline": statistics.median(f / c / p for c, f, p in compute),
        "foreign_share": max(r.get("foreign_share", 0.0) for r in results),
        **extra,
    }


def model_flops(shape: Shape, lengths: list[list[int]], steps: int) -> list[float]:
    """Each step's model FLOPs (the same for every runner: they train on the same batches)."""
    from lightning_dpo.plan import ModelDims, step_flops

    dims = ModelDims.from_config(shape_config(shape))
    return [step_flops(dims, lengths[i * shape.pairs : (i + 1) * shape.pairs]).model for i in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=runner_names())
    parser.add_argument("--steps", type=int, default=4, help="measured steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="steps before measuring")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds over the runners")
    parser.add_argument(
        "--fixed-mmap-threshold",
        action="store_true",
        help="fix glibc's mmap threshold (peak RSS closer to live memory; slower steps)",
    )
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--fused-adamw", action="store_true", help="torch's fused AdamW on every side")
    parser.add_argument("--no-parity", action="store_true", help="skip the fast-vs-reference check (costly at qwen)")
    parser.add_argument(
        "--wait-quiet",
        action="store_true",
        help="before each process, wait (up to 5 min) until other work leaves the CPUs idle",
    )
    parser.add_argument("--_child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        runner, shape, model_dir, data_dir, out_dir, out, steps = args._child
        child(runner, shape, model_dir, data_dir, out_dir, out, int(steps))
        return

    from bench_common import ForeignCpu, wait_for_quiet

    total_steps = args.warmup + args.steps
    summary = {}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"python {platform.python_version()}"
    )
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            malloc = {"MALLOC_MMAP_THRESHOLD_": "131072"} if args.fixed_mmap_threshold else {}
            malloc |= {"BENCH_FUSED_ADAMW": "1"} if args.fused_adamw else {}
            malloc |= {"BENCH_NO_PARITY": "1"} if args.no_parity else {}
            env = {
                **os.environ,
                **malloc,
                "LIGHTNING_DPO_CACHE": str(tmp / "cache"),
                "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
            os.environ.update(env)
            n_params = build_model(tmp / "model", shape)
            build_data(tmp / "data", shape, shape.pairs * total_steps)
            info = training_order(str(tmp / "model"), str(tmp / "data"), shape, tmp)
            results: dict[str, list[dict]] = {r: [] for r in args.runners}
            peaks: list[float] = []
            for round_ in range(args.repeats):
                for runner in ("peak", *args.runners):
                    out = tmp / f"{runner}-{round_}.json"
                    command = [
                        sys.executable,
                        __file__,
                        "--_child",
                        runner,
                        shape_name,
                        str(tmp / "model"),
                        str(tmp / "data"),
                        str(tmp),
                        str(out),
                        str(total_steps),
                    ]
                    busy_before = wait_for_quiet() if args.wait_quiet else None
                    child_env = {**env, "LD_PRELOAD": JEMALLOC} if runner.endswith("+jemalloc") else env
                    foreign = ForeignCpu()
                    foreign.start()
                    proc = subprocess.run(command, env=child_env, capture_output=True, text=True)
                    shared = foreign.stop()
                    if proc.returncode != 0:
                        sys.exit(f"{runner} failed on {shape_name}:\n{proc.stderr[-4000:]}")
                    result = {**json.loads(out.read_text()), **shared, "busy_before": busy_before}
                    if runner == "peak":
                        peaks.append(result["flops_per_s"])
                        continue
                    results[runner].append(result)
                    print(
                        f"  {shape_name} round {round_ + 1}: {runner} done, foreign CPU {shared['foreign_share']:.0%}",
                        file=sys.stderr,
                        flush=True,
                    )
        flops = model_flops(shape, info["pair_lengths"], total_steps)
        rows = {runner: summarise(rs, args.warmup, flops, peaks) for runner, rs in results.items()}
        summary[shape_name] = {
            "shape": asdict(shape),
            "parameters": n_params,
            **info,
            "runners": rows,
            "matmul_peak_flops": peaks,
            "step_model_flops": flops,
            "raw": results,
        }
        first = results.get("trl", [{}])[0]
        print(
            f"\n{shape_name}: {shape.layers} layers, hidden {shape.hidden}, vocab {shape.vocab}, "
            f"{'tied' if shape.tied else 'untied'}, {n_params / 1e6:.1f}M parameters; {shape.pairs} pairs a step, "
            f"max_length {shape.max_length}; prompts {info['prompt_share']:.0%} of tokens; median of "
            f"{args.steps} steps after {args.warmup} warm-up, {args.repeats} round(s); glibc mmap threshold "
            f"{'fixed at 128 KiB' if args.fixed_mmap_threshold else 'default'}"
        )
        if "trl_tokens_first_pair" in first:
            print(
                f"  tokens of the first pair: TRL {first['trl_tokens_first_pair']}, "
                f"lightning_dpo {first['our_tokens_first_pair']}"
            )
        print(
            f"  fp32 matmul peak (2048^3, best of 3 s, before each round): "
            f"{', '.join(f'{p / 1e9:.0f}' for p in peaks)} GFLOPS; model FLOPs a step (median) "
            f"{statistics.median(flops[args.warmup :]) / 1e12:.2f} TFLOP"
        )
        trl, plain = rows.get("trl"), rows.get("plain")
        print(
            f"  {'runner':<30}{'step s':>9}{'opt s':>7}{'tokens/s':>10}{'peak RSS MiB':>14}{'vs TRL':>8}"
            f"{'vs plain':>10}{'mem vs TRL':>12}{'roofline':>10}{'foreign CPU':>13}"
        )
        for runner, r in rows.items():
            vs_trl = f"{r['step_s'] / trl['step_s']:.2f}" if trl else "-"
            vs_plain = f"{r['step_s'] / plain['step_s']:.2f}" if plain else "-"
            mem = f"{r['peak_rss_mib'] / trl['peak_rss_mib']:.2f}" if trl else "-"
            print(
                f"  {runner:<30}{r['step_s']:9.3f}{r['optimizer_s']:7.2f}{r['tokens_per_s']:10.0f}"
                f"{r['peak_rss_mib']:14.0f}{vs_trl:>8}{vs_plain:>10}{mem:>12}{r['roofline']:>10.0%}"
                f"{r['foreign_share']:>13.0%}"
            )
        print(
            "  roofline: model FLOPs / (step - optimizer step) / matmul peak; foreign CPU: the largest share of the "
            "machine's CPU time other processes used during a run of that runner"
        )
        for runner, r in rows.items():
            if "parity_loss" in r:
                print(
                    f"  {runner}: fast vs reference path on batch 1: |Δloss| {r['parity_loss']:.1e}, "
                    f"max |Δreward| {r['parity_rewards']:.1e} (rewards up to {r['parity_reward_scale']:.2f})"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
