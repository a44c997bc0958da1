"""``generate_pairs``: a pairs file that PreferenceDataModule reads as it is, a resume after a kill that equals an
uninterrupted run, and the bad inputs (NaN rewards, long prompts, a model that never emits EOS)."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import yaml

from lightning_dpo.data import PreferenceDataModule, RankingDataModule
from lightning_dpo.embedded import DEFAULT_MODEL
from lightning_dpo.evaluation.generation import SamplingSettings
from lightning_dpo.onpolicy.generate import generate_pairs, output_files
from lightning_dpo.onpolicy.pairing import PairSettings
from lightning_dpo.onpolicy.scoring import ScoringError
from lightning_dpo.tasks.politeness import politeness_reward

QUIET = dict(accelerator="cpu", progress=False)
RANKING = PairSettings(rule="ranking")


class Reward:
    """The politeness reward, optionally failing (a simulated kill) once it has scored ``fail_after`` batches."""

    def __init__(self, fail_after: int | None = None, value: float | None = None) -> None:
        self.fail_after, self.value, self.calls = fail_after, value, 0

    def __call__(self, prompts, completions):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated kill")
        return [self.value] * len(completions) if self.value is not None else politeness_reward(prompts, completions)


def run(output, reward="default", **overrides):
    kwargs = dict(
        num_prompts=12,
        samples_per_prompt=3,
        batch_size=4,
        sampling=SamplingSettings(max_new_tokens=32),
        reward=Reward() if reward == "default" else reward,
        **QUIET,
    )
    return generate_pairs(DEFAULT_MODEL, str(output), **{**kwargs, **overrides})


def lines(path):
    return path.read_bytes().splitlines()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "train.jsonl"
    summary = run(out)
    return out, summary


def test_the_pairs_file_is_read_by_the_data_module_as_it_is(uninterrupted, embedded_model_dir):
    out, summary = uninterrupted
    files = output_files(out)
    records = [json.loads(line) for line in lines(out)]
    counts = summary["counts"]
    assert counts["groups"] == 12 and counts["samples"] == 36
    assert len(records) == counts["pairs"] == 12 - counts["all_equal"] - counts["too_few"] > 0
    for r in records:
        assert r["chosen_score"] > r["rejected_score"]
        assert r["model"] == DEFAULT_MODEL and r["seed"] == 0
    meta = yaml.safe_load(files["meta"].read_text())
    assert meta["settings"]["sampling"]["max_new_tokens"] == 32 and meta["counts"] == counts
    assert not files["parts"].exists()
    with gzip.open(files["samples"], "rt") as f:
        groups = [json.loads(line) for line in f]
    assert [len(g["samples"]) for g in groups] == [3] * 12

    dm = PreferenceDataModule(dataset=str(out), tokenizer_name_or_path=str(embedded_model_dir), val_size=2)
    dm.setup("fit")
    assert len(dm.train_data) + len(dm.val_data) == len(records)
    # The completions come back as the sampled tokens (the text round trip adds nothing but the EOS).
    sampled = {(g["prompt_index"], s["text"]): s["num_tokens"] for g in groups for s in g["samples"]}
    by_text = {(r["prompt_index"], r["chosen"]) for r in records}
    data = {r["location"]: r for r in (dm.train_data.to_list() + dm.val_data.to_list())}
    for i, r in enumerate(records):
        row = data[f"{out}:{i + 1}"]
        assert len(row["chosen_input_ids"]) == sampled[(r["prompt_index"], r["chosen"])]
    assert len(by_text) == len(records)


def test_a_killed_run_resumes_without_duplicates_or_losses(uninterrupted, tmp_path):
    whole, _ = uninterrupted
    out = tmp_path / "train.jsonl"
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(out, reward=Reward(fail_after=2))  # 2 of 3 batches written, then a crash
    parts = sorted(output_files(out)["parts"].glob("*.part"))
    written = [line for p in parts for line in lines(p)]
    assert len(written) == 8 and not out.exists()
    # A kill in the middle of a write leaves half a line: that prompt is not done.
    parts[-1].write_bytes(parts[-1].read_bytes()[:-25])

    with pytest.raises(ValueError, match="other settings.*seed"):
        run(out, sampling=SamplingSettings(max_new_tokens=32, seed=1))
    reward = Reward()
    summary = run(out, reward=reward)
    # Only the batches with prompts not done are sampled again: batch 1 (its last line was cut) and batch 2.
    assert reward.calls == 2
    assert out.read_bytes() == whole.read_bytes()  # as if it had never stopped
    assert gzip.decompress(output_files(out)["samples"].read_bytes()) == gzip.decompress(
        output_files(whole)["samples"].read_bytes()
    )
    assert summary["counts"]["groups"] == 12
    assert run(out)["counts"] == summary["counts"]  # a finished output is not redone


def test_parquet_output_with_a_judge_and_the_margin_rule(tmp_path, embedded_model_dir):
    out = tmp_path / "train.parquet"
    summary = run(
        out,
        reward=None,
        judge="lightning_dpo.tasks.politeness.politeness_judge",
        pairs=PairSettings(rule="margin", margin=0.5),
    )
    counts = summary["counts"]
    assert counts["pairs"] > 0 and counts["pairs"] + counts["ties"] + counts["below_margin"] <= 12 * 3
    dm = PreferenceDataModule(dataset=str(out), tokenizer_name_or_path=str(embedded_model_dir), val_size=1)
    dm.setup("fit")
    assert len(dm.train_data) + len(dm.val_data) == counts["pairs"]


def test_rankings_of_all_k_samples_that_the_ranking_data_module_reads(tmp_path, embedded_model_dir):
    out = tmp_path / "rankings.jsonl"
    summary = run(out, samples_per_prompt=4, pairs=RANKING)
    counts, records = summary["counts"], [json.loads(line) for line in lines(out)]
    assert counts["pairs"] == 0 and len(records) == counts["rankings"] > 0
    assert counts["rankings"] + counts["partial"] + counts["all_equal"] + counts["too_few"] == 12
    with gzip.open(output_files(out)["samples"], "rt") as f:
        groups = {g["prompt_index"]: g["samples"] for g in map(json.loads, f)}
    for r in records:
        assert r["scores"] == sorted(r["scores"], reverse=True) and len(set(r["scores"])) > 1
        sampled = groups[r["prompt_index"]]  # every one of the K samples, each with its own score
        assert sorted(zip(r["completions"], r["scores"])) == sorted((s["text"], s["score"]) for s in sampled)
    data = RankingDataModule(str(out), tokenizer_name_or_path=str(embedded_model_dir), val_size=1)
    data.setup("fit")
    assert len(data.train_data) + len(data.val_data) == len(records)
    assert data.data_report["train"]["dropped"] == {}
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 * min(data.hparams.batch_size, len(data.train_data))


def test_rankings_refuse_conversational_prompts_before_sampling(tmp_path):
    prompts = tmp_path / "chats.jsonl"
    prompts.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi?"}]}) + "\n")
    template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="conversational prompts, and rankings are text only"):
        run(tmp_path / "r.jsonl", prompts=str(prompts), num_prompts=None, chat_template=template, pairs=RANKING)
    assert not output_files(tmp_path / "r.jsonl")["parts"].exists()  # refused before any sampling


def test_a_nan_reward_names_the_prompt_or_is_skipped_and_counted(tmp_path):
    with pytest.raises(ScoringError, match=r"(?s)returned nan for completion 0 of prompt .*train.jsonl:1 "):
        run(tmp_path / "a.jsonl", reward=Reward(value=math.nan), num_prompts=4)
    with pytest.raises(ValueError, match="no preference pairs.*unscored: 8"):
        run(tmp_path / "b.jsonl", reward=Reward(value=math.nan), num_prompts=4, samples_per_prompt=2, on_invalid="skip")


def test_a_prompt_longer_than_the_context_names_the_prompt(tmp_path):
    with pytest.raises(ValueError, match=r"prompt .*train.jsonl:1 has \d+ tokens: with max_new_tokens=250"):
        run(tmp_path / "a.jsonl", sampling=SamplingSettings(max_new_tokens=250))


def test_a_model_that_never_emits_eos_gives_a_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="no preference pairs.*unusable: 8.*never emits its EOS"):
        generate_pairs(
            str(tiny_model_dir),
            str(tmp_path / "a.jsonl"),
            num_prompts=4,
            samples_per_prompt=2,
            reward=Reward(),
            sampling=SamplingSettings(max_new_tokens=3),
            **QUIET,
        )
    meta = yaml.safe_load((tmp_path / "a.jsonl.meta.yaml").read_text())
    assert meta["counts"]["unusable"] == 8  # the samples are kept for inspection
