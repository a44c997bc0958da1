"""ThroughputCallback: the exact FLOP count of each batch, both MFUs, and the peaks it divides by."""

from __future__ import annotations

import pytest
import torch

from lightning_dpo import DPOModule, ThroughputCallback
from lightning_dpo.callbacks.throughput import batch_pairs, datasheet_peak, device_peak, measure_matmul_peak
from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.plan import ModelDims, step_flops


def test_batch_pairs_reads_prompt_and_completion_lengths():
    pairs = [
        {"prompt_input_ids": [1, 5, 6], "chosen_input_ids": [9, 2], "rejected_input_ids": [11, 12, 13, 2]},
        {"prompt_input_ids": [1], "chosen_input_ids": [3, 4, 2], "rejected_input_ids": [2]},
    ]
    assert batch_pairs(PreferenceCollator(pad_token_id=0)(pairs)) == [(3, 2, 4), (1, 3, 1)]


def test_peaks():
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == 989e12 and datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert datasheet_peak("NVIDIA H200") == 989e12 and datasheet_peak("Some GPU") is None
    rate = measure_matmul_peak(size=256, seconds=0.05)
    assert rate > 1e8 and measure_matmul_peak(size=256, seconds=0.05) == rate  # measured once, cached
    assert device_peak(torch.device("meta")) is None


class Recorder(ThroughputCallback):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.logged, self.flops = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if "per_sec" in k or "mfu" in k})
        self.flops.append(batch_pairs(batch))


@pytest.mark.parametrize("loss_type", ["sigmoid", "simpo"])
def test_logs_both_mfus_from_the_exact_flop_count(tiny_model_dir, make_data, make_trainer, loss_type):
    recorder = Recorder(window=2, peak_flops=1e12)
    module = DPOModule(model_name_or_path=str(tiny_model_dir), loss={"type": loss_type})
    make_trainer(max_steps=3, limit_val_batches=0, callbacks=[recorder]).fit(module, make_data())
    last = recorder.logged[-1]
    assert set(last) == {"train/tokens_per_sec", "train/flops_per_sec", "train/mfu", "train/mfu_with_reference"}
    dims = ModelDims.from_config(module.policy.config.to_dict())
    reference = loss_type == "sigmoid"  # simpo is reference-free: no reference forward in the step
    counts = [step_flops(dims, pairs, reference=reference) for pairs in recorder.flops[-2:]]
    ratio = sum(c.model for c in counts) / sum(c.policy for c in counts)
    assert last["train/mfu_with_reference"] / last["train/mfu"] == pytest.approx(ratio, rel=1e-6)
    assert last["train/flops_per_sec"] / last["train/mfu_with_reference"] == pytest.approx(1e12, rel=1e-6)
    assert (ratio > 1.3) == reference
