"""DeepSpeed ZeRO 2 and 3 (configs/deepspeed-zero{2,3}.yaml). Lightning's DeepSpeedStrategy runs on CUDA only;
what runs without a GPU is tested: the module's refusal of unsafe settings, and, on one CPU process,
DeepSpeed's own config validation, ZeRO-3 loading, the optimizer's parameters and one engine step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lightning_dpo.sharding import check_deepspeed_strategy, zero3_enabled


def strategy(stage: int = 2, exclude_frozen_parameters: bool = True) -> SimpleNamespace:
    config = {"zero_optimization": {"stage": stage}}
    return SimpleNamespace(config=config, exclude_frozen_parameters=exclude_frozen_parameters)


def test_frozen_parameters_must_stay_out_of_checkpoints():
    check_deepspeed_strategy(strategy(2))
    check_deepspeed_strategy(strategy(3))
    with pytest.raises(ValueError, match="exclude_frozen_parameters: true"):
        check_deepspeed_strategy(strategy(2, exclude_frozen_parameters=False))
    with pytest.raises(ValueError, match="ZeRO stage 2 or 3"):
        check_deepspeed_strategy(strategy(1))


def test_zero3_is_recognised_only_on_deepspeed():
    deepspeed_strategy = type("DeepSpeedStrategy", (), {"config": {"zero_optimization": {"stage": 3}}})()
    assert zero3_enabled(deepspeed_strategy)
    assert not zero3_enabled(strategy(3))  # not a DeepSpeedStrategy
    assert not zero3_enabled(None)


def test_zero2_and_zero3_on_one_cpu_process(script_runs):
    pytest.importorskip("deepspeed")
    result = script_runs.result("deepspeed_check.py")
    for stage in ("2", "3"):
        r = result[stage]
        assert r["stage"] == int(stage) and r["exclude_frozen"]
        assert r["optimizer_is_policy"] and not r["optimizer_has_reference"]
        assert r["ds_optimizer"] == ("DeepSpeedZeroOptimizer" if stage == "2" else "DeepSpeedZeroOptimizer_Stage3")
        assert r["loss"] == pytest.approx(0.6931471805599453, abs=1e-6)  # policy = reference at step 0
        assert r["policy_changed"] and r["reference_unchanged"]  # the engine step moved the policy alone
    assert not result["2"]["policy_partitioned"] and not result["2"]["gathered"]  # ZeRO-2: full weights per rank
    # ZeRO-3: both models partitioned from construction (the reference re-loaded, not deep-copied), and the
    # export gathers weights equal to the source's.
    assert result["3"]["policy_partitioned"] and result["3"]["reference_partitioned"]
    assert result["3"]["gathered_equals_source"]
