"""The logged metrics beyond the rewards: entropy and token accuracy (token-weighted, as TRL), and the
cumulative token count, which survives resumption."""

from __future__ import annotations

import csv

import pytest
import torch

from lightning_dpo import DPOModule
from lightning_dpo.logps import SequenceLogps
from lightning_dpo.losses import PreferenceLossOutput
from lightning_dpo.metrics import pair_statistics, weighted_mean
from lightning_dpo.namespace import pl


def test_entropy_and_accuracy_are_token_means_over_the_batch():
    # Two pairs. Chosen: 2 and 6 tokens; rejected: 4 and 4 tokens.
    chosen = SequenceLogps(torch.zeros(2), torch.tensor([2, 6]), torch.zeros(2), entropy_sum=torch.tensor([1.0, 3.0]),
                           top1_count=torch.tensor([2, 0]))  # fmt: skip
    rejected = SequenceLogps(torch.zeros(2), torch.tensor([4, 4]), torch.zeros(2), entropy_sum=torch.tensor([2.0, 6.0]),
                             top1_count=torch.tensor([4, 4]))  # fmt: skip
    out = PreferenceLossOutput(torch.zeros(2), torch.zeros(2), torch.zeros(2))
    stats = pair_statistics(out, chosen, rejected)
    assert float(weighted_mean(stats["entropy"])) == pytest.approx((1 + 3 + 2 + 6) / (2 + 6 + 4 + 4))
    assert float(weighted_mean(stats["mean_token_accuracy"])) == pytest.approx(2 / 8)  # chosen tokens only


def test_a_fit_logs_them_and_counts_tokens_across_a_resume(tmp_path, tiny_model_dir, make_data, make_trainer):
    def fit(root, steps, ckpt_path=None):
        module = DPOModule(model_name_or_path=str(tiny_model_dir), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
        tokens = Tokens()
        trainer = make_trainer(
            max_steps=steps, default_root_dir=root, logger=pl.loggers.CSVLogger(root), log_every_n_steps=1,
            enable_checkpointing=True, callbacks=[checkpoint, tokens],
        )  # fmt: skip
        trainer.fit(module, make_data(), ckpt_path=ckpt_path)
        rows = list(csv.DictReader(open(root / "lightning_logs" / "version_0" / "metrics.csv")))
        return [r for r in rows if r.get("train/num_tokens")], tokens.seen

    rows, seen = fit(tmp_path / "a", 3)
    assert [float(r["train/num_tokens"]) for r in rows] == [sum(seen[: i + 1]) for i in range(3)]
    assert 0 < float(rows[0]["train/entropy"]) < torch.log(torch.tensor(1024.0)).item()  # nats, below log V
    assert 0 <= float(rows[0]["train/mean_token_accuracy"]) <= 1
    resumed, _ = fit(tmp_path / "b", 3, ckpt_path=next((tmp_path / "ckpt").glob("*step=2.ckpt")))
    assert float(resumed[-1]["train/num_tokens"]) == sum(seen)  # the count resumes with the checkpoint


class Tokens(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(int(batch["attention_mask"].sum()))
