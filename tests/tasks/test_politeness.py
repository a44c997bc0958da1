"""Tests for the bundled "polite assistant" task: generator, judge and shipped data files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # the package may not be installed in the test environment
    sys.path.insert(0, str(REPO_ROOT))

from lightning_dpo.tasks import (  # noqa: E402
    build_splits,
    is_polite,
    politeness_judge,
    politeness_reward,
    politeness_score,
    question_bank,
)

DATA_DIR = REPO_ROOT / "lightning_dpo" / "assets" / "data" / "polite"


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bundled() -> dict[str, list[dict]]:
    return {name: _read_jsonl(DATA_DIR / f"{name}.jsonl") for name in ("train", "val")}


def test_splits_are_deterministic_and_seed_dependent() -> None:
    kwargs = {"n_train": 300, "n_val": 50}
    assert build_splits(seed=3, **kwargs) == build_splits(seed=3, **kwargs)
    assert build_splits(seed=3, **kwargs) != build_splits(seed=4, **kwargs)


def test_splits_sizes_and_disjoint_prompts() -> None:
    splits = build_splits(seed=0)
    assert len(splits["train"]) == 2000 and len(splits["val"]) == 200
    train_prompts = {r["prompt"] for r in splits["train"]}
    val_prompts = {r["prompt"] for r in splits["val"]}
    assert len(val_prompts) == 200
    assert not train_prompts & val_prompts


def test_question_bank_is_large_and_facts_are_neutral() -> None:
    bank = question_bank()
    phrasings = [p for q in bank for p in q.phrasings()]
    assert len(set(phrasings)) == len(phrasings) >= 1500
    # The judge must react to tone only, never to the fact itself.
    assert all(politeness_score(q.fact) == 0.0 for q in bank)


def test_records_are_well_formed(bundled: dict[str, list[dict]]) -> None:
    for record in bundled["train"] + bundled["val"]:
        assert set(record) == {"prompt", "chosen", "rejected"}
        assert all(isinstance(v, str) and v.strip() for v in record.values())
        assert record["prompt"].startswith("\n\nHuman: ")
        assert record["prompt"].endswith("\n\nAssistant:")
        assert record["chosen"].startswith(" ") and record["rejected"].startswith(" ")
        assert record["chosen"] != record["rejected"]


def test_judge_ranks_every_chosen_above_rejected(bundled: dict[str, list[dict]]) -> None:
    for record in bundled["train"] + bundled["val"]:
        chosen, rejected = politeness_score(record["chosen"]), politeness_score(record["rejected"])
        assert -1.0 <= rejected < chosen <= 1.0, record
        assert is_polite(record["chosen"]) and not is_polite(record["rejected"])


def test_judge_rule() -> None:
    assert politeness_score("The capital of France is Paris.") == 0.0
    assert politeness_score("Of course! It is Paris. I hope that helps!") == 1.0
    assert politeness_score("Ugh. It is Paris. Go away.") == -1.0
    assert politeness_score("Of course! It is Paris. Go away.") == 0.0
    assert not is_polite("")


def test_bundled_files_match_generator(bundled: dict[str, list[dict]]) -> None:
    # Data and generator cannot drift apart: regenerate with
    # `python scripts/make_polite_data.py` after changing lightning_dpo/tasks/politeness.py.
    assert bundled == build_splits(seed=0)


def test_politeness_judge():
    polite, rude, plain = " Of course! 2 plus 2 is 4.", " Ugh. 2 plus 2 is 4.", " 2 plus 2 is 4."
    assert politeness_judge("p", polite, rude) == 1.0
    assert politeness_judge("p", rude, polite) == 0.0
    assert politeness_judge("p", plain, plain) == 0.5


def test_politeness_reward_scores_completions_not_prompts():
    prompts = ["\n\nHuman: Please tell me what 2 plus 2 is.\n\nAssistant:"] * 3
    rewards = politeness_reward(prompts, [" Of course! 2 plus 2 is 4.", " Ugh. 2 plus 2 is 4.", " 2 plus 2 is 4."])
    assert rewards == [1.0, -1.0, 0.0]


def test_bundled_rankings_match_generator_and_the_judge_orders_the_ends():
    from lightning_dpo.tasks.politeness import build_ranking_splits

    splits = build_ranking_splits()
    folder = DATA_DIR.parent / "polite-rankings"
    for name in ("train", "val"):
        # `python scripts/make_polite_rankings.py` after changing lightning_dpo/tasks/politeness.py.
        assert _read_jsonl(folder / f"{name}.jsonl") == splits[name]
    for row in splits["train"][:200]:
        assert sorted(row["scores"]) == [0, 1, 2, 3] and len(set(row["completions"])) == 4
        by_score = dict(zip(row["scores"], row["completions"]))
        assert politeness_score(by_score[3]) > 0 > politeness_score(by_score[0])
    assert build_ranking_splits(seed=1) != splits
