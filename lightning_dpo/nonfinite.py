"""The non-finite guard: what a training run does when a log-prob, the loss or a gradient is NaN or infinite.

Runs are lost to NaN losses (an fp16 overflow, a broken record, a bad weight), and a NaN that reaches the
optimizer spreads into every weight. :class:`NonFiniteGuard` checks each optimizer step before it is taken:

    training_step, each micro-batch   observe(): which pairs have a non-finite policy or reference log-prob
                                      or loss, kept on the device (no host sync)
    on_before_optimizer_step          decide(): those flags and "any gradient non-finite" (an inf-norm over
                                      the gradients, after accumulation and the DDP all-reduce), all-reduced
                                      with MAX so that every rank holds the same four flags; one host sync

If a flag is up, every rank takes the same decision:

- ``action: raise`` (the default): stop with :class:`NonFiniteError`, naming the step, the quantities, and
  the pairs by source and record (``data/train.jsonl:12``, ``org/set[train] row 7``), gathered from every rank;
- ``action: skip``: drop the step's gradients on every rank (so the optimizer leaves weights and moments
  untouched; the LR schedule and ``global_step`` still advance), count it, warn, and go on; the skip after
  ``max_skips`` raises the error instead.

Under gradient accumulation the whole optimizer step is skipped, whichever micro-batch went non-finite.
With a ``GradScaler`` (``precision: 16-mixed``) infinite gradients are the scaler's business (it skips the
step and lowers the scale), so only the log-probs and the loss are checked; under DeepSpeed the gradients
are not visible and ``skip`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_dpo.namespace import submodule

QUANTITIES = ("policy log-probs", "reference log-probs", "loss", "gradients")
MAX_NAMED_PAIRS = 8


@dataclass(frozen=True)
class NonFiniteSettings:
    """What a training step does when a log-prob, the loss or a gradient is not finite: ``model.nonfinite``."""

    action: Literal["raise", "skip"] = "raise"
    """``raise``: stop with an error naming the step, the quantity and the batch's pairs (file and line).
    ``skip``: skip that optimizer step on every rank (no update), count it, warn, and go on."""
    max_skips: int = 10
    """With ``skip``: the most optimizer steps a run may skip; the next non-finite step stops it."""

    def __post_init__(self) -> None:
        if self.action not in ("raise", "skip"):
            raise ValueError(f"model.nonfinite.action must be 'raise' or 'skip', got {self.action!r}")
        if self.max_skips < 0:
            raise ValueError(f"model.nonfinite.max_skips must be >= 0, got {self.max_skips}")


class NonFiniteError(RuntimeError):
    """A training step met a NaN or infinite value (the message says where and what to do)."""


class NonFiniteGuard:
    """Checks every optimizer step for non-finite values (see the module docstring)."""

    def __init__(self, settings: NonFiniteSettings) -> None:
        self.settings = settings
        self.skipped = 0
        """Optimizer steps skipped so far in this run (saved in checkpoints)."""
        self._window: list[tuple[Tensor, Tensor | None]] = []  # per micro-batch: (3, B) bad flags, pair_index

    def check_strategy(self, strategy: Any) -> None:
        if self.settings.action == "skip" and type(strategy).__name__ == "DeepSpeedStrategy":
            raise ValueError(
                "model.nonfinite.action 'skip' cannot drop a step under DeepSpeed, which keeps the gradients "
                "itself; use 'raise' (DeepSpeed's fp16 loss scaler skips overflowing steps on its own)"
            )

    def observe(self, policy: Tensor, reference: Tensor | None, losses: Tensor, pair_index: Tensor | None) -> None:
        """Note which pairs of a training micro-batch have a non-finite value.

        ``policy`` and ``reference``: (2B,) sequence log-probs, chosen rows first; ``losses``: (B,).
        """
        pairs = losses.shape[0]
        policy_bad = ~torch.isfinite(policy.detach()).view(2, pairs).all(0)  # (B,)
        reference_bad = (
            ~torch.isfinite(reference.detach()).view(2, pairs).all(0) if reference is not None else policy_bad & False
        )
        loss_bad = ~torch.isfinite(losses.detach())  # (B,)
        self._window.append((torch.stack([policy_bad, reference_bad, loss_bad]), pair_index))  # (3, B)

    def decide(self, trainer: Any, module: Any, optimizer: torch.optim.Optimizer) -> bool:
        """Before an optimizer step, on every rank: raise, or skip the step (returns True), or let it go."""
        window, self._window = self._window, []
        flags = torch.zeros(len(QUANTITIES), device=module.device)
        if window:
            flags[:3] = torch.stack([bad.any(1) for bad, _ in window]).any(0).float()
        if _gradients_visible(trainer):
            flags[3] = (~_finite_gradients(optimizer, module.device)).float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        found = [name for name, flag in zip(QUANTITIES, flags.tolist()) if flag]  # the one host sync
        if self.settings.action == "skip":
            module.log("train/nonfinite_skips", float(self.skipped + bool(found)), on_step=True, batch_size=1)
        if not found:
            return False
        message = describe(trainer, found, _gather(window, trainer, every_pair=found == ["gradients"]))
        if self.settings.action == "raise":
            raise NonFiniteError(
                f"{message}. Set model.nonfinite.action: skip to skip such steps (at most model.nonfinite.max_skips)"
            )
        if self.skipped >= self.settings.max_skips:
            raise NonFiniteError(
                f"{message}, after {self.skipped} skipped optimizer steps: more than model.nonfinite.max_skips="
                f"{self.settings.max_skips}; the run is diverging or its data is broken"
            )
        self.skipped += 1
        optimizer.zero_grad(set_to_none=True)  # on every rank: no update, moments untouched
        submodule("utilities").rank_zero_warn(
            f"{message}; skipped that optimizer step ({self.skipped} of at most {self.settings.max_skips})"
        )
        return True

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = int(state.get("skipped", 0))


def describe(trainer: Any, found: list[str], pairs: list[tuple[str, str]]) -> str:
    """``non-finite <first quantity> at optimizer step N (epoch E) (then <the others>): pairs <where> (<what>),
    ...``; ``found`` is in ``QUANTITIES`` order, which is the order in which one causes the next."""
    named = [f"{where} ({what})" if what else where for where, what in pairs[:MAX_NAMED_PAIRS]]
    more = f" and {len(pairs) - MAX_NAMED_PAIRS} more" if len(pairs) > MAX_NAMED_PAIRS else ""
    heading = "pairs" if any(what for _, what in pairs) else "the step's pairs"
    where = f": {heading} {', '.join(named)}{more}" if named else ""
    step = f"optimizer step {trainer.global_step} (epoch {trainer.current_epoch})"
    then = f" (then the {', '.join(found[1:])})" if found[1:] else ""
    return f"non-finite {found[0]} at {step}{then}{where}"


def _gather(window: list[tuple[Tensor, Tensor | None]], trainer: Any, every_pair: bool) -> list[tuple[str, str]]:
    """(location, what went non-finite) of the pairs behind this step, from every rank (only on a fault).
    ``every_pair``: only the gradients went non-finite, so every pair of the step is a suspect."""
    locate = getattr(getattr(trainer, "datamodule", None), "pair_locations", None)
    entries: list[tuple[str, str]] = []
    for micro, (bad, index) in enumerate(window):
        bad = bad.cpu()
        if every_pair:
            rows, whats = list(range(bad.shape[1])), [""] * bad.shape[1]
        else:
            rows = bad.any(0).nonzero().flatten().tolist()  # the pairs with a bad value of their own
            whats = [_what(bad[:, r]) for r in rows]
        if index is None:
            places = [f"micro-batch {micro} row {r}" for r in rows]
        elif locate is not None:
            places = locate([int(index[r]) for r in rows])
        else:
            places = [f"pair_index {int(index[r])}" for r in rows]
        entries += list(zip(places, whats))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        every: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(every, entries)
        entries = [entry for rank in every for entry in rank]
    return entries


def _what(bad: Tensor) -> str:
    return ", ".join(name for name, flag in zip(QUANTITIES, bad.tolist()) if flag)


def _gradients_visible(trainer: Any) -> bool:
    """False under a GradScaler (it handles infinite gradients) and under DeepSpeed (it holds them)."""
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        return False
    return type(trainer.strategy).__name__ != "DeepSpeedStrategy"


def _finite_gradients(optimizer: torch.optim.Optimizer, device: torch.device) -> Tensor:
    """Whether every gradient the optimizer will apply is finite: an inf-norm per tensor (a NaN or inf
    propagates; no overflow as with a 2-norm), on this rank's shard under FSDP."""
    grads = [_local(p.grad) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=device)
    norms = torch._foreach_norm(grads, float("inf"))
    return torch.isfinite(torch.stack([n.to(device) for n in norms])).all()


def _local(tensor: Tensor) -> Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor  # an FSDP2 DTensor: this rank's shard
