"""Reward functions for evaluation: a callable ``(prompts, completions) -> rewards``.

- A Python callable, named by its dotted path (``my_pkg.rewards.score`` or ``my_pkg.rewards:score``). A
  class named this way is instantiated with no arguments.
- A Hugging Face sequence-classification model (``hf:<id or directory>``, or a local directory holding a
  ``config.json``), scoring ``prompt + completion`` by one output logit (:class:`HFRewardModel`).

A task's own reward lives with the task (``lightning_dpo.tasks.politeness.politeness_reward``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from lightning_dpo.settings import import_object

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
"""(prompts, completions) -> one reward per completion."""


class HFRewardModel:
    """A Hugging Face ``AutoModelForSequenceClassification`` as a reward: the logit ``label_index`` of
    ``prompt + completion`` (a single-logit reward model has only index 0).

    Args:
        name_or_path: A Hub id or a local directory.
        label_index: Which output logit is the reward.
        batch_size: Texts per forward pass.
        max_length: Truncate the text (from the left, keeping the completion) to this many tokens.
        device: ``None``: CUDA when available, else CPU.
        trust_remote_code: Run the model repository's own Python code (``from_pretrained``'s flag). Off unless
            asked for: a reward model named on the command line should not run code it ships.
    """

    def __init__(
        self,
        name_or_path: str,
        label_index: int = 0,
        batch_size: int = 16,
        max_length: int | None = 1024,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code
        )
        self.model = self.model.to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.label_index, self.batch_size, self.max_length = label_index, batch_size, max_length

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions)]
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            ).to(self.device)
            logits = self.model(**enc).logits  # (b, num_labels)
            out.extend(logits[:, self.label_index].float().cpu().tolist())
        return out


def load_reward(spec: str | RewardFn) -> RewardFn:
    """Turn a reward spec into a ``(prompts, completions) -> rewards`` callable.

    ``spec``: a callable (returned as is); ``hf:<id or dir>`` or a local model directory (an
    :class:`HFRewardModel`); or the dotted path of a callable or of a class constructed with no arguments.
    """
    if callable(spec):
        return spec
    if spec.startswith("hf:"):
        return HFRewardModel(spec[3:])
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise ValueError(f"reward directory {spec!r} has no config.json: it is not a Hugging Face model")
        return HFRewardModel(spec)
    try:
        obj = import_object(spec)
    except ValueError as e:
        raise ValueError(
            f"reward {spec!r}: {e}. Give the dotted path of a (prompts, completions) -> rewards callable, or "
            "'hf:<model id or directory>' for a sequence-classification reward model"
        ) from e
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"reward {spec!r} is not callable")
    return obj
