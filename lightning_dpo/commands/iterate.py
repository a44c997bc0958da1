"""``lightning-dpo iterate``: iterative DPO. Each round samples pairs from the current policy, trains DPO on them
and evaluates the result; the next round starts from that result.

    <output_dir>/round-0/eval/             the starting model, evaluated (the baseline of every round)
    <output_dir>/round-r/pairs/train.jsonl lightning-dpo generate from round r-1's policy (+ .meta.yaml, samples)
    <output_dir>/round-r/fit/version_0/    lightning-dpo fit on those pairs: hparams, metrics.csv, hf_model/
    <output_dir>/round-r/eval/             lightning-dpo evaluate: frontier.csv (reward, KL to the start model)
    <output_dir>/round-r/round.json        written last (atomically): the round is done
    <output_dir>/rounds.csv                one row per finished round

**Resuming.** A round with its ``round.json`` is skipped. In an unfinished round, generation resumes where it
stopped (``generate``'s part files), a fit that left its ``hf_model`` export is kept, and a fit that did not
is run again from the start (its folder is cleared); evaluation is redone. Rerunning the same command after a
crash therefore continues with the first unfinished stage.

**Reference.** ``initial``: every round's DPO reference is the starting (SFT) model; ``previous``: the policy
the round starts from (round r-1's result), as in iterative / self-rewarding DPO. KL in the evaluation is
always measured against the starting model, so the rounds are comparable.

**Seeds.** Round r samples with ``sampling.seed + r`` and trains with ``seed + r``: rounds see new samples.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_dpo.commands.fit import DEFAULT_CONFIG, fit
from lightning_dpo.evaluation.generation import SamplingSettings
from lightning_dpo.onpolicy.generate import generate_pairs
from lightning_dpo.onpolicy.pairing import PairSettings
from lightning_dpo.storage import atomic_write
from lightning_dpo.tools.frontier import evaluate as evaluate_models
from lightning_dpo.tools.model_sources import expand_source

ROUND_FILE = "round.json"


def iterate(
    model: str,
    output_dir: str = "runs/iterative",
    rounds: int = 2,
    reference: Literal["initial", "previous"] = "initial",
    fit_config: str | None = None,
    fit_args: list[str] | None = None,
    generate: dict[str, Any] | None = None,
    evaluate: dict[str, Any] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Iterative DPO: ``rounds`` rounds of generate (from the current policy) -> DPO -> evaluate.

    Args:
        model: The starting (SFT) policy: an HF directory, a Hub id, a run directory or ``embedded:<name>``.
        output_dir: Where each round's folder goes (see the module docstring); rerun to resume.
        rounds: R, the number of rounds.
        reference: ``initial``: the DPO reference of every round is ``model``; ``previous``: the policy the
            round starts from.
        fit_config: The ``lightning-dpo fit`` config of each round (``None``: the embedded tiny config).
            Its logger must take ``save_dir``, ``name`` and ``version`` (CSVLogger, TensorBoardLogger), and it
            must export the policy (``HFExportCallback``).
        fit_args: More ``lightning-dpo fit`` flags for every round, e.g. ``[--trainer.max_steps, "40"]``.
        generate: Arguments of ``lightning-dpo generate`` (``prompts``, ``split``, ``num_prompts``,
            ``samples_per_prompt``, ``reward`` or ``judge``, ``pairs``, ``sampling``, ``batch_size``, ...).
        evaluate: Arguments of ``lightning-dpo evaluate`` (``reward``, ``dataset``, ``split``, ``num_prompts``,
            ``samples_per_prompt``, ``max_new_tokens``, ``seed``, ...).
        seed: Round r trains with ``seed_everything = seed + r``.

    Returns:
        One row per round (round 0: the starting model): pairs made, the evaluation's reward and KL.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if reference not in ("initial", "previous"):
        raise ValueError(f"reference must be 'initial' or 'previous', got {reference!r}")
    root = Path(output_dir)
    gen = dict(generate or {})
    evaluation = {"plot": False, "all_steps": False, **(evaluate or {})}
    for key in ("model", "output"):
        if key in gen:
            raise ValueError(f"generate.{key} is set by each round; remove it")
    gen_sampling = gen.pop("sampling", {})
    base_sampling = gen_sampling if isinstance(gen_sampling, SamplingSettings) else SamplingSettings(**gen_sampling)
    if isinstance(gen.get("pairs"), dict):
        gen["pairs"] = PairSettings(**gen["pairs"])
    if getattr(gen.get("pairs"), "rule", None) == "ranking" and fit_config is None:
        raise ValueError(
            "generate.pairs.rule ranking writes rankings: give a fit_config that reads them (data: "
            "RankingDataModule, model.loss.type: plackett_luce) and exports the policy (HFExportCallback)"
        )

    rows = [_round_zero(root, model, evaluation)]
    policy = model
    for r in range(1, rounds + 1):
        folder = root / f"round-{r}"
        done = folder / ROUND_FILE
        if done.is_file():
            row = json.loads(done.read_text(encoding="utf-8"))
            made = _made(row["pair_counts"])
            print(f"round {r}: done ({made}, reward {row['reward_mean']:.3f}, KL {row['kl_mean']:.2f})")
        else:
            row = _run_round(
                r, folder, policy, model, reference, gen, base_sampling, evaluation, fit_config, fit_args, seed
            )
        rows.append(row)
        policy = row["policy"]
        _write_rounds(root, rows)
    return rows


def _round_zero(root: Path, model: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    folder = root / "round-0"
    done = folder / ROUND_FILE
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    result = evaluate_models(
        [model], labels=["round 0"], reference=model, output_dir=str(folder / "eval"), **evaluation
    )
    row = {"round": 0, "policy": model, "reference": None, "pairs": None, **_figures(result[-1])}
    atomic_write(done, json.dumps(row, indent=1).encode())
    return row


def _run_round(
    r: int,
    folder: Path,
    policy: str,
    initial: str,
    reference: str,
    gen: dict[str, Any],
    base_sampling: SamplingSettings,
    evaluation: dict[str, Any],
    fit_config: str | None,
    fit_args: list[str] | None,
    seed: int,
) -> dict[str, Any]:
    pairs_file = folder / "pairs" / "train.jsonl"
    sampling = SamplingSettings(**{**base_sampling.__dict__, "seed": base_sampling.seed + r})
    print(f"round {r}: sampling pairs from {policy}", flush=True)
    generated = generate_pairs(policy, str(pairs_file), sampling=sampling, **gen)

    run_dir = folder / "fit" / "version_0"
    export = run_dir / "hf_model"
    ref = initial if reference == "initial" else policy
    if not (export / "config.json").is_file():
        shutil.rmtree(folder / "fit", ignore_errors=True)  # an interrupted fit starts again
        argv = [
            "--config",
            fit_config or str(DEFAULT_CONFIG),
            "--model.model_name_or_path",
            policy,
            "--model.reference.model_name_or_path",
            ref,
            "--data.dataset",
            str(pairs_file),
            "--trainer.logger.init_args.save_dir",
            str(folder),
            "--trainer.logger.init_args.name",
            "fit",
            "--trainer.logger.init_args.version",
            "0",
            "--seed_everything",
            str(seed + r),
            *(fit_args or []),
        ]
        print(f"round {r}: DPO from {policy} (reference {ref}) on {_made(generated['counts'])}", flush=True)
        fit(argv)
    if not (export / "config.json").is_file():
        raise RuntimeError(f"round {r}: the fit left no {export}; its config must export the policy (HFExportCallback)")
    source = expand_source(str(run_dir), all_steps=False)[-1].path

    result = evaluate_models(
        [str(run_dir)], labels=[f"round {r}"], reference=initial, output_dir=str(folder / "eval"), **evaluation
    )
    row = {
        "round": r,
        "policy": source,
        "reference": ref,
        "pairs": generated["counts"]["rankings"] or generated["counts"]["pairs"],  # or rankings, under rule ranking
        "pair_counts": generated["counts"],
        **_figures(result[-1]),
    }
    atomic_write(folder / ROUND_FILE, json.dumps(row, indent=1).encode())
    made = _made(generated["counts"])
    print(f"round {r}: {made}, reward {row['reward_mean']:.3f}, KL {row['kl_mean']:.2f}", flush=True)
    return row


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("reward_mean", "reward_sem", "kl_mean", "kl_sem", "mean_tokens", "eos_fraction")
    return {k: row[k] for k in keys}


def _made(counts: dict[str, int]) -> str:
    """What a round's generation made, for people: "84 pairs" or "15 rankings"."""
    return f"{counts['rankings']} rankings" if counts.get("rankings") else f"{counts['pairs']} pairs"


def _write_rounds(root: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["round", "pairs", "reward_mean", "reward_sem", "kl_mean", "kl_sem", "mean_tokens", "eos_fraction"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(root / "rounds.csv", out.getvalue().encode())


def build_parser() -> ArgumentParser:
    summary = (iterate.__doc__ or "").split("\n\n    Args:")[0]
    parser = ArgumentParser(prog="lightning-dpo iterate", description=" ".join(summary.split()))
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file with any of these arguments.")
    parser.add_function_arguments(iterate, as_group=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = parser.parse_args(argv)
    kwargs = {k: v for k, v in vars(config).items() if k not in ("config", "__path__")}
    iterate(**kwargs)
    return 0
