"""The DPO paper's optimisation defaults, as injectable callables (LightningCLI's ``OptimizerCallable`` /
``LRSchedulerCallable``): RMSprop at learning rate 1e-6 with a linear warmup over 150 steps
(Rafailov et al. 2023, Appendix B; eric-mitchell/direct-preference-optimization ``config.yaml``).

Also the optimizer step in backward (:class:`OptimizerInBackward`), which applies each parameter's update as
soon as its gradient is complete, so that the model's gradients never all exist at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

BLOCK = 1 << 18
"""Elements per block of :class:`PaperRMSprop`'s CPU step: 1 MiB of fp32 per tensor, so that a block's
parameter, gradient, square average and denominator stay in cache across the update's five passes."""


class PaperRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` whose default learning rate is the DPO paper's 1e-6 (torch's is 1e-2), stepped
    the fastest way torch offers on the parameters' device, with the same results bit for bit.

    torch has no fused RMSprop. On a CPU its default is the for-loop step, which makes a parameter-sized
    temporary for the denominator and runs five passes over memory; its ``foreach`` step is slower there and
    allocates a parameter-sized list (measured on 494M parameters: for-loop 1.28 s and 0.5 GiB of transients,
    foreach 2.18 s and 1.8 GiB). Here, on a CPU, the same five element-wise operations run block by block
    (:data:`BLOCK` elements at a time, in cache, into one block-sized buffer): 0.98 s and no transient, and
    bitwise the for-loop's results, as every operation is element-wise (tests/test_optim.py). Elsewhere (CUDA:
    ``foreach``, torch's default there), with ``foreach=True``, and for settings other than the plain update
    (momentum, centered, weight decay, maximize, differentiable, capturable, a tensor learning rate), torch's
    own step runs.
    """

    def __init__(self, params: Iterable, lr: float = 1e-6, **kwargs) -> None:
        super().__init__(params, lr=lr, **kwargs)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not all(_blocked_applies(group) for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RMSprop does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:  # as torch's RMSprop initialises it
                    state["step"] = torch.zeros((), dtype=_scalar_dtype())
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                _blocked_rmsprop_(p, p.grad, state["square_avg"], lr, alpha, eps)
        return loss


def _blocked_applies(group: dict[str, Any]) -> bool:
    """Whether a parameter group takes the blocked CPU step: the plain update, CPU tensors, no foreach asked."""
    plain = not (
        group["momentum"]
        or group["centered"]
        or group["weight_decay"]
        or group["maximize"]
        or group["differentiable"]
        or group["capturable"]
        or group["foreach"]
        or torch.is_tensor(group["lr"])
    )
    return plain and all(p.device.type == "cpu" and not p.is_complex() for p in group["params"])


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _blocked_rmsprop_(param: Tensor, grad: Tensor, square_avg: Tensor, lr: float, alpha: float, eps: float) -> None:
    """torch's for-loop RMSprop update of one tensor (``square_avg.mul_(α).addcmul_(g, g, 1 − α)``,
    ``avg = square_avg.sqrt().add_(ε)``, ``param.addcdiv_(g, avg, −lr)``), :data:`BLOCK` elements at a time."""
    if not (param.is_contiguous() and grad.is_contiguous() and square_avg.is_contiguous()):
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        param.addcdiv_(grad, square_avg.sqrt().add_(eps), value=-lr)
        return
    p, g, v = param.view(-1), grad.view(-1), square_avg.view(-1)
    buffer = torch.empty(min(BLOCK, p.numel()), dtype=square_avg.dtype)
    for start in range(0, p.numel(), BLOCK):
        end = min(start + BLOCK, p.numel())
        pb, gb, vb, denominator = p[start:end], g[start:end], v[start:end], buffer[: end - start]
        vb.mul_(alpha).addcmul_(gb, gb, value=1 - alpha)
        torch.sqrt(vb, out=denominator).add_(eps)
        pb.addcdiv_(gb, denominator, value=-lr)


class LinearWarmup(LambdaLR):
    """Multiply the learning rate by ``min(1, (step + 1) / (warmup_steps + 1))``, then hold it constant.

    Stepped every optimizer step (``interval: step``), as in the DPO reference implementation.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 150, last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, self._factor, last_epoch=last_epoch)

    def _factor(self, step: int) -> float:
        return min(1.0, (step + 1) / (self.warmup_steps + 1))


class OptimizerInBackward(Optimizer):
    """The optimizer step in backward (torchtune's ``optimizer_in_bwd``): each parameter is updated as soon as
    its gradient is complete, inside backward, and its gradient is freed at once, so that the model's
    gradients never all exist at once (at Qwen2.5-0.5B in fp32: 1.84 GiB never held).

    ``factory(params)`` builds the optimizer as usual; that optimizer (:attr:`optimizer`) holds the parameter
    groups (what LR schedulers and ``LearningRateMonitor`` see) and the state (its ``state_dict`` is this
    one's, in the usual format, so a checkpoint resumes with or without the option). Each trainable parameter
    also gets a one-parameter optimizer from ``factory``, sharing that state, stepped from the parameter's
    post-accumulate-grad hook with its group's current hyperparameters. The updates are therefore the normal
    step's, bit for bit (a tied weight is stepped once, with the gradient of both uses: autograd accumulates
    a leaf's gradient before the hook runs).

    :meth:`step` runs the closure (forward and backward, as Lightning's automatic optimization passes it); the
    updates have happened by the time it returns. What needs all of a step's gradients before any update
    cannot work and is refused by :func:`check_in_backward`.
    """

    def __init__(self, params: Iterable[Tensor], factory: Callable[[list[Tensor]], Optimizer]) -> None:
        self.optimizer = factory(list(params))
        super().__init__([p for g in self.optimizer.param_groups for p in g["params"]], self.optimizer.defaults)
        self._link()
        self._inner: dict[Tensor, Optimizer] = {}
        for p in self._group_of:
            inner = factory([p])
            inner.state = self.state  # one state for all: the outer optimizer's, keyed by parameter
            self._inner[p] = inner
            p.register_post_accumulate_grad_hook(self._step_parameter)

    def _link(self) -> None:
        """Present the wrapped optimizer's groups and state as this one's (again after a state load)."""
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        self._group_of = {p: g for g in self.param_groups for p in g["params"] if p.requires_grad}
        for inner in getattr(self, "_inner", {}).values():
            inner.state = self.state

    def _step_parameter(self, param: Tensor) -> None:
        inner = self._inner[param]
        group = self._group_of[param]
        inner.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        inner.step()
        param.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._group_of:
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self._link()


def check_in_backward(trainer: Any) -> None:
    """Refuse, with the setting to change, what an update inside backward cannot honour. ``trainer`` is a
    Lightning ``Trainer`` (read by attribute)."""
    fix = "unset it, or set model.optimizer_in_backward: false"
    if getattr(trainer, "gradient_clip_val", None):
        raise ValueError(
            "model.optimizer_in_backward updates each parameter as soon as its gradient exists, so clipping by "
            f"the norm of all gradients (trainer.gradient_clip_val={trainer.gradient_clip_val}) cannot be "
            f"applied; {fix}"
        )
    if getattr(trainer, "accumulate_grad_batches", 1) > 1:
        raise ValueError(
            "model.optimizer_in_backward updates the weights in every backward pass, so gradients cannot "
            f"accumulate over batches (trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}); {fix}"
        )
    precision = str(getattr(trainer, "precision", ""))
    if precision.startswith("16"):
        raise ValueError(
            f"model.optimizer_in_backward cannot unscale fp16 gradients before its updates (trainer.precision="
            f"{precision!r} uses a gradient scaler); use bf16-mixed or 32-true, or set "
            "model.optimizer_in_backward: false"
        )
    strategy = type(getattr(trainer, "strategy", None)).__name__
    if getattr(trainer, "world_size", 1) > 1 or strategy not in ("SingleDeviceStrategy", "NoneType"):
        raise ValueError(
            f"model.optimizer_in_backward runs on one device only (strategy {strategy}, world size "
            f"{getattr(trainer, 'world_size', 1)}): a distributed strategy averages gradients after the hooks "
            "that would apply them; set model.optimizer_in_backward: false"
        )
