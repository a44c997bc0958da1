"""``lightning-dpo generate MODEL --output FILE [--options]``: preference pairs from a model's own samples.

The arguments are those of :func:`lightning_dpo.onpolicy.generate.generate_pairs`, with their docstrings
as help; ``MODEL`` may also be a run directory (its final ``hf_model`` export), and ``--config FILE`` reads
them from YAML.
"""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_dpo.onpolicy.generate import generate_pairs
from lightning_dpo.tools.model_sources import expand_source


def build_parser() -> ArgumentParser:
    summary = (generate_pairs.__doc__ or "").split("\n\n    Args:")[0]
    parser = ArgumentParser(prog="lightning-dpo generate", description=" ".join(summary.split()))
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file with any of these arguments.")
    parser.add_argument(
        "model", help="The model to sample: a run directory, an HF model directory, a Hub id or embedded:<name>."
    )
    parser.add_function_arguments(generate_pairs, skip={"model"}, as_group=False)
    return parser


def resolve_model(spec: str) -> str:
    """A run directory -> its final export; anything else as it is (``.ckpt`` files must be exported first)."""
    source = expand_source(spec, all_steps=False)[-1]
    if source.is_checkpoint:
        raise SystemExit(
            f"lightning-dpo generate: {spec!r} is a Lightning checkpoint; sample from an HF export instead "
            "(the run's hf_model/, written by HFExportCallback)"
        )
    return source.path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = parser.instantiate(parser.parse_args(argv))
    kwargs = {k: v for k, v in vars(config).items() if k not in ("config", "model", "__path__")}
    generate_pairs(resolve_model(config.model), **kwargs)
    return 0
