"""Sampling completions from a causal LM without disturbing anyone else's random numbers.

Prompts arrive as token-id lists (as the data module stores them, BOS included) and are left-padded for
batched ``generate``: generation continues from the right edge, and Hugging Face derives position ids
from the attention mask, so a padded prompt gets the same next-token distribution as an unpadded one.
A completion is returned as its new token ids up to and including the first EOS; one that does not
stop within ``max_new_tokens`` is returned cut, without EOS.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationConfig


@dataclass
class SamplingSettings:
    """Hugging Face ``generate`` settings.

    The defaults draw true samples of the model's distribution: temperature 1 and no top-p / top-k
    truncation (what the reward–KL frontier needs; the KL estimate is only unbiased for such samples).

    Args:
        max_new_tokens: Tokens to generate at most per completion.
        temperature: Softmax temperature; 1 samples the model's own distribution.
        top_p: Nucleus sampling threshold; 1 disables it.
        top_k: Keep only the k most likely tokens; 0 disables it.
        do_sample: ``False``: greedy decoding (temperature, top-p and top-k are then unused).
        seed: Seed of the sampling, set inside a forked RNG so the caller's random streams are untouched.
    """

    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 when sampling (use do_sample=False for greedy), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def exact(self) -> bool:
        """Whether these settings draw samples of the model's own distribution."""
        return self.do_sample and self.temperature == 1.0 and self.top_p == 1.0 and self.top_k == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the torch (CPU and every initialised CUDA device), Python ``random`` and NumPy RNG states on
    exit, so that seeding and sampling inside the block leave the training stream exactly as it was."""
    py_state = random.getstate()
    np_state = _numpy_state()
    devices = (
        list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    )
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            if np_state is not None:
                import numpy as np

                np.random.set_state(np_state)


def _numpy_state() -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        return None
    return np.random.get_state()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) inside the block; the model's previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Token-id lists -> ``input_ids`` (B, P) left-padded with ``pad_token_id`` and ``attention_mask`` (B, P)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        if len(ids):
            input_ids[row, width - len(ids) :] = torch.as_tensor(list(ids), dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def cut_at_eos(new_tokens: Tensor, eos_token_id: int | Sequence[int]) -> list[list[int]]:
    """(B, N) generated tokens -> per row, the tokens up to and including the first EOS (all N if none).

    The mask comes from the first EOS position, not from padding, since pad may equal EOS."""
    eos = torch.as_tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    is_eos = torch.isin(new_tokens, eos.to(new_tokens.device))  # (B, N)
    has_eos = is_eos.any(-1)
    lengths = torch.where(
        has_eos, is_eos.int().argmax(-1) + 1, torch.full_like(has_eos, new_tokens.shape[1], dtype=torch.long)
    )
    return [row[: int(n)].tolist() for row, n in zip(new_tokens.cpu(), lengths.cpu())]


@torch.no_grad()
def generate_completions(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    settings: SamplingSettings,
    *,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    batch_size: int = 32,
    synced_gpus: bool = False,
    seed: int | None = None,
) -> list[list[int]]:
    """Sample one completion per prompt.

    Args:
        model: A Hugging Face causal LM (anything with ``generate``).
        prompts: Prompt token ids, one list per completion wanted (repeat a prompt for several samples).
        settings: ``generate`` settings; the model's own ``generation_config`` is not consulted for them.
        eos_token_id: Ends a completion.
        pad_token_id: Fills the left padding (never counted).
        batch_size: Prompts per ``generate`` call.
        synced_gpus: Keep every process stepping until all are done (needed when parameters are sharded:
            FSDP, DeepSpeed ZeRO-3). Every process must then call this with the same number of batches.
        seed: Overrides ``settings.seed``. The RNG is forked: the caller's streams are unchanged after.

    Returns:
        Completion token ids per prompt, each up to and including its first EOS.
    """
    config = generation_config(settings, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    device = _device_of(model)
    out: list[list[int]] = []
    with preserved_rng(), eval_mode(model):
        torch.manual_seed(settings.seed if seed is None else seed)  # seeds CUDA too
        for start in range(0, len(prompts), batch_size):
            input_ids, attention_mask = left_pad(prompts[start : start + batch_size], pad_token_id)
            sequences = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
                synced_gpus=synced_gpus,
            )  # (b, P + N)
            out.extend(cut_at_eos(sequences[:, input_ids.shape[1] :], eos_token_id))
    return out


# Every logits processor that could reshape the distribution, set to "off" explicitly: ``generate`` fills
# any setting left ``None`` from the model's own generation_config.json (Qwen's ships top_k 20, top_p 0.8,
# repetition_penalty 1.05), and its global default top_k is 50.
_NEUTRAL = dict(
    num_beams=1,
    min_new_tokens=0,
    typical_p=1.0,
    min_p=0.0,
    epsilon_cutoff=0.0,
    eta_cutoff=0.0,
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    renormalize_logits=False,
)


def generation_config(
    settings: SamplingSettings, *, eos_token_id: int | Sequence[int], pad_token_id: int
) -> GenerationConfig:
    """A complete ``GenerationConfig`` for ``settings``: nothing is inherited from the model's defaults."""
    sampling = (
        dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        if settings.do_sample
        else dict(do_sample=False)
    )
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **_NEUTRAL,
        **sampling,
    )


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
