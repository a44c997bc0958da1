"""DPOModule on rankings (Plackett–Luce) and unpaired feedback (KTO): the step against the pairwise step and
hand computations, every reference mode, and short fits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lightning_dpo import DPOModule
from lightning_dpo.data.collate import PreferenceCollator, RankingCollator, UnpairedCollator
from lightning_dpo.data.group_datamodule import RankingDataModule, UnpairedDataModule
from lightning_dpo.logps import completion_logps

RANKS = [
    {
        "prompt_input_ids": [1, 5, 6, 7],
        "completions_input_ids": [[9, 10, 2], [11, 2], [12, 13, 2]],
        "scores": [2, 1, 0],
    },
    {"prompt_input_ids": [1, 8], "completions_input_ids": [[3, 2], [4, 4, 2], [14, 2]], "scores": [5, 5, 1]},
]


def trained(module, scale=0.5):
    """Move the policy off its reference, so that rewards are not all 0."""
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(scale * torch.randn_like(p) * p.std().clamp(min=1e-3))
    return module


def make(tiny_model_dir, loss, **kwargs):
    torch.manual_seed(0)
    module = DPOModule(model_name_or_path=str(tiny_model_dir), loss=loss, **kwargs)
    module.configure_model()
    return trained(module)


def test_a_k2_ranking_step_is_the_pairwise_step(tiny_model_dir):
    pairs = [
        {"prompt_input_ids": r["prompt_input_ids"], "chosen_input_ids": r["completions_input_ids"][0]}
        | {"rejected_input_ids": r["completions_input_ids"][2]}
        for r in RANKS
    ]
    module = make(tiny_model_dir, {"type": "sigmoid", "beta": 0.3})
    pairwise_loss, pairwise = module.dpo_step(PreferenceCollator(pad_token_id=2)(pairs))
    module.loss_settings = module.loss_settings.__class__(type="plackett_luce", beta=0.3)
    k2 = [{**r, "completions_input_ids": [r["completions_input_ids"][0], r["completions_input_ids"][2]]} for r in RANKS]
    k2 = [{**r, "scores": [1, 0]} for r in k2]
    listwise_loss, listwise = module.dpo_step(RankingCollator(pad_token_id=2)(k2))
    assert listwise_loss.item() == pytest.approx(pairwise_loss.item(), abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logits/rejected"):
        torch.testing.assert_close(listwise[name].values, pairwise[name].values, atol=1e-6, rtol=0)
    torch.testing.assert_close(listwise["rewards/ranking_accuracy"].values, pairwise["rewards/accuracies"].values)


def test_ranking_step_values_and_metrics_by_hand(tiny_model_dir):
    module = make(tiny_model_dir, {"type": "plackett_luce", "beta": 0.5})
    batch = RankingCollator(pad_token_id=2)(RANKS)
    loss, stats = module.dpo_step(batch)
    with torch.no_grad():
        policy = completion_logps(module.policy, batch, options=module.logps_options).logps.view(3, 2).T  # (B, K)
        ref = module.reference.logps(batch, module.logps_options).logps.view(3, 2).T
    r = 0.5 * (policy - ref)
    # Prompt 0: strict 2 > 1 > 0. Prompt 1: completions 0 and 1 tie above completion 2.
    lse = torch.logsumexp
    first = (lse(r[0], 0) - r[0, 0]) + (lse(r[0, 1:], 0) - r[0, 1])
    second = (lse(r[1, [0, 2]], 0) - r[1, 0]) + (lse(r[1, [1, 2]], 0) - r[1, 1])
    assert loss.item() == pytest.approx(((first + second) / 2).item(), abs=1e-5)
    # Ranking accuracy: adjacent pairs with a strict preference (2 for prompt 0, 1 for prompt 1, the tie skipped).
    expected = [((r[0, 0] > r[0, 1]).float() + (r[0, 1] > r[0, 2]).float()) / 2, (r[1, 1] > r[1, 2]).float()]
    assert stats["rewards/ranking_accuracy"].values.tolist() == pytest.approx([e.item() for e in expected])
    assert stats["rewards/ranking_accuracy"].weights.tolist() == [2.0, 1.0]
    spread = r.max(1).values - r.min(1).values
    torch.testing.assert_close(stats["rewards/spread"].values, spread, atol=1e-5, rtol=0)
    torch.testing.assert_close(stats["rewards/margins"].values, r[:, 0] - r[:, -1], atol=1e-5, rtol=0)
    assert stats["tokens_saved"].values.min() > 0  # the shared-prompt pack ran (CPU, sdpa)


def test_kto_step_matches_the_formula_on_the_model(tiny_model_dir):
    module = make(tiny_model_dir, {"type": "kto", "beta": 0.2, "desirable_weight": 1.5})
    items = [
        {"prompt_input_ids": [1, 5, 6], "completion_input_ids": [9, 2], "kl_completion_input_ids": [11, 12, 2]},
        {"prompt_input_ids": [1, 8], "completion_input_ids": [11, 12, 2], "kl_completion_input_ids": [13, 2]},
        {"prompt_input_ids": [1, 7, 7], "completion_input_ids": [13, 2], "kl_completion_input_ids": [9, 2]},
    ]
    items = [{**item, "label": label} for item, label in zip(items, (True, False, True))]
    batch = UnpairedCollator(pad_token_id=2)(items)
    loss, stats = module.dpo_step(batch)
    with torch.no_grad():
        policy = completion_logps(module.policy, batch, options=module.logps_options).logps
        ref = module.reference.logps(batch, module.logps_options).logps
    lr, kl_lr = (policy - ref)[:3], (policy - ref)[3:]
    kl = kl_lr.mean().clamp(min=0)
    good = torch.tensor([True, False, True])
    per = torch.where(good, 1.5 * (1 - torch.sigmoid(0.2 * (lr - kl))), 1 - torch.sigmoid(0.2 * (kl - lr)))
    assert loss.item() == pytest.approx(per.mean().item(), abs=1e-6)
    assert stats["kl"].values[0].item() == pytest.approx(kl.item(), abs=1e-6)
    means = {name: (s.values * s.weights).sum() / s.weights.sum() for name, s in stats.items()}
    assert means["rewards/chosen"].item() == pytest.approx(0.2 * lr[good].mean().item(), abs=1e-6)
    assert means["rewards/rejected"].item() == pytest.approx(0.2 * lr[~good].mean().item(), abs=1e-6)
    margin = 0.2 * (lr[good].mean() - lr[~good].mean())
    assert means["rewards/margins"].item() == pytest.approx(margin.item(), abs=1e-6)
    assert set(stats) >= {"loss", "kl", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "entropy"}


@pytest.fixture
def ranking_dir(tmp_path):
    from lightning_dpo.tasks.politeness import build_ranking_splits

    splits = build_ranking_splits(n_train=24, n_val=8)
    for split, rows in splits.items():
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return tmp_path


@pytest.mark.parametrize("mode", ["frozen", "precomputed", "adapter"])
def test_ranking_fit_in_every_reference_mode(mode, ranking_dir, tiny_model_dir, make_trainer, tmp_path):
    if mode == "adapter":
        pytest.importorskip("peft")
    kwargs = {"lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]}} if mode == "adapter" else {}
    reference = {"mode": mode, "cache_dir": str(tmp_path / "ref")}
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        loss={"type": "plackett_luce"},
        reference=reference,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
        lr_scheduler=None,
        **kwargs,
    )
    data = RankingDataModule(str(ranking_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=4, max_length=64)
    losses = []

    class Record(__import__("lightning_dpo.namespace").namespace.pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    make_trainer(max_steps=3, callbacks=[Record()]).fit(module, data)
    # At step 0 the policy is its reference: every reward 0, so each prompt's loss is Σ_k log(K − k) = log 4!.
    assert losses[0] == pytest.approx(math.log(24), abs=1e-5)
    assert all(math.isfinite(v) for v in losses) and losses[-1] != losses[0]
    if mode == "precomputed":
        assert module.reference.table.shape == (32, 4)


def test_precomputed_unpaired_table_equals_the_frozen_reference(tiny_model_dir, tiny_data_dir, make_trainer, tmp_path):
    data = UnpairedDataModule(
        str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=4, max_length=64
    )
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        loss={"type": "kto"},
        reference={"mode": "precomputed", "cache_dir": str(tmp_path / "ref")},
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
        lr_scheduler=None,
    )
    make_trainer(max_steps=1).fit(module, data)
    assert module.reference.table.shape == (128, 2)  # 64 pairs -> 128 examples, [completion, KL completion]
    frozen = DPOModule(model_name_or_path=str(tiny_model_dir))
    frozen.configure_model()
    batch = next(iter(data.val_dataloader()))
    expected = frozen.reference.logps(batch, frozen.logps_options).logps
    torch.testing.assert_close(module.reference.logps(batch, module.logps_options).logps, expected, atol=1e-5, rtol=0)
