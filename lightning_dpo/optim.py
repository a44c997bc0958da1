"""The DPO paper's optimisation defaults, as injectable callables (LightningCLI's ``OptimizerCallable`` /
``LRSchedulerCallable``): RMSprop at learning rate 1e-6 with a linear warmup over 150 steps
(Rafailov et al. 2023, Appendix B; eric-mitchell/direct-preference-optimization ``config.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class PaperRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` whose default learning rate is the DPO paper's 1e-6 (torch's is 1e-2)."""

    def __init__(self, params: Iterable, lr: float = 1e-6, **kwargs) -> None:
        super().__init__(params, lr=lr, **kwargs)


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
