"""The listwise loss's K = 2 parity figure: Plackett–Luce over two completions against pairwise sigmoid DPO.

Loss values and gradients on 100,000 random pairs (log-probs in [−200, 0], β 0.1), in float64 and float32,
and on the bundled tiny model: the K = 2 rankings step against the pairwise step on the same 64 bundled
pairs (a trained-away policy, so rewards are not 0). Prints the largest absolute differences.

    python benchmarks/listwise_parity.py
"""

from __future__ import annotations

import torch

from lightning_dpo import DPOModule
from lightning_dpo.data.collate import PreferenceCollator, RankingCollator
from lightning_dpo.data.group_datamodule import RankingDataModule
from lightning_dpo.embedded import DEFAULT_MODEL
from lightning_dpo.losses import LossSettings, preference_loss, ranking_loss


def pure(dtype: torch.dtype, n: int = 100_000) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    pw, pl, rw, rl = (
        (-200 * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype).requires_grad_() for _ in range(4)
    )
    dpo = preference_loss(pw, pl, rw, rl, LossSettings(beta=0.1)).losses
    scores = torch.tensor([[1.0, 0.0]]).expand(n, 2)
    pl_loss = ranking_loss(
        torch.stack([pw, pl], 1), torch.stack([rw, rl], 1), scores, LossSettings(type="plackett_luce")
    )
    values = (pl_loss.losses - dpo).abs().max().item()
    a = torch.autograd.grad(pl_loss.losses.sum(), (pw, pl, rw, rl))
    b = torch.autograd.grad(dpo.sum(), (pw, pl, rw, rl))
    return values, max((x - y).abs().max().item() for x, y in zip(a, b))


def on_the_model() -> tuple[float, float]:
    data = RankingDataModule(tokenizer_name_or_path=DEFAULT_MODEL, batch_size=64)
    data.setup("fit")
    items = data.train_data[:64]
    pairs = [
        {"prompt_input_ids": x["prompt_input_ids"], "chosen_input_ids": x["completions_input_ids"][0]}
        | {"rejected_input_ids": x["completions_input_ids"][-1]}
        for x in items
    ]
    k2 = [
        {
            **x,
            "completions_input_ids": [x["completions_input_ids"][0], x["completions_input_ids"][-1]],
            "scores": [1, 0],
        }
        for x in items
    ]
    pad = data.tokenizer.pad_token_id
    torch.manual_seed(0)
    module = DPOModule(loss={"type": "sigmoid", "beta": 0.1})
    module.configure_model()
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(0.3 * torch.randn_like(p) * p.std())
    results = []
    for loss, batch in (("sigmoid", PreferenceCollator(pad)(pairs)), ("plackett_luce", RankingCollator(pad)(k2))):
        module.loss_settings = LossSettings(type=loss, beta=0.1)
        module.policy.zero_grad()
        value, _ = module.dpo_step(batch)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in module.policy.parameters()]))
    (v1, g1), (v2, g2) = results
    return (v1 - v2).abs().item(), max((a - b).abs().max().item() for a, b in zip(g1, g2))


if __name__ == "__main__":
    for dtype in (torch.float64, torch.float32):
        v, g = pure(dtype)
        print(f"pure, {str(dtype):14s} 100,000 pairs: max |loss diff| {v:.2e}, max |grad diff| {g:.2e}")
    v, g = on_the_model()
    print(f"bundled tiny model, 64 pairs, mean loss: |diff| {v:.2e}, max |grad diff| over all weights {g:.2e}")
