"""The tokenization linter: each check fires on a crafted bad record and stays silent on good ones."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_dpo.cli import main
from lightning_dpo.data.lint import CHECKS, Columns, contradictions, failing, lint, ragged

BOS, EOS = 1, 2
GOOD = ([BOS, 10, 11], [20, 21, EOS], [30, EOS])  # prompt, chosen, rejected: one BOS, one final EOS each

# name -> a bad record (prompt, chosen, rejected, and overrides of the other columns)
BAD = {
    "double_bos": ([BOS, BOS, 10, 11], [20, EOS], [30, EOS], {}),
    "missing_eos": ([BOS, 10], [20, 21], [30, EOS], {}),  # not cut: chosen_length is its length
    "eos_inside": ([BOS, 10], [20, EOS, 21, EOS], [30, EOS], {}),
    "boundary_merge": ([BOS, 10], [20, EOS], [30, EOS], {"boundary_tokens": 1}),
    "template_drift": ([BOS, 10], [20, EOS], [30, EOS], {"template_drift": True}),
    "identical_after_truncation": ([BOS, 10], [20, 21], [20, 21], {"chosen_length": 5, "rejected_length": 4}),
}


def columns(records: list[tuple]) -> Columns:
    """Columns of records ``(prompt, chosen, rejected[, overrides])``; lengths before truncation = after."""
    extra = [r[3] if len(r) > 3 else {} for r in records]
    return Columns(
        location=[f"rows.jsonl:{i + 1}" for i in range(len(records))],
        prompt=ragged([r[0] for r in records]),
        chosen=ragged([r[1] for r in records]),
        rejected=ragged([r[2] for r in records]),
        chosen_length=np.array([e.get("chosen_length", len(r[1])) for r, e in zip(records, extra)]),
        rejected_length=np.array([e.get("rejected_length", len(r[2])) for r, e in zip(records, extra)]),
        boundary_tokens=np.array([e.get("boundary_tokens", 0) for e in extra]),
        template_drift=np.array([e.get("template_drift", False) for e in extra]),
    )


def test_good_records_are_silent():
    cut = ([BOS, 10], [20, 21], [30, EOS], {"chosen_length": 5})  # chosen lost its end (and EOS) to truncation
    found = lint(columns([GOOD, GOOD[::-1][::-1], cut, ([BOS, 12], [EOS], [31, EOS])]), BOS, EOS)
    assert list(found) == list(CHECKS)
    assert {name: f["count"] for name, f in found.items()} == dict.fromkeys(CHECKS, 0)


@pytest.mark.parametrize("name", list(BAD))
def test_each_check_fires_on_its_bad_record_only(name):
    found = lint(columns([GOOD, BAD[name], GOOD]), BOS, EOS)
    assert found[name] == {"count": 1, "first": ["rows.jsonl:2"]}
    others = {n: f["count"] for n, f in found.items() if n != name}
    assert others == dict.fromkeys(others, 0), f"{name}'s record set off other checks: {others}"


def test_contradictory_preferences():
    a, b, c = [20, EOS], [30, EOS], [40, EOS]
    records = [([BOS, 10], a, b), ([BOS, 10], a, c), ([BOS, 11], b, a), ([BOS, 10], b, a)]
    found = lint(columns(records), BOS, EOS)["contradictory"]
    # Record 4 reverses record 1; record 3 reverses nothing (another prompt), record 2 agrees with record 1.
    assert found == {"count": 1, "first": ["rows.jsonl:4 (reverses rows.jsonl:1)"]}
    assert contradictions([(b"p", b"a", b"a"), (b"p", b"a", b"a")]) == []  # no preference, no contradiction


def test_bos_equal_to_eos_counts_only_a_doubled_leading_bos():
    # GPT-2 style: one token is BOS and EOS; completions end with it, and a prompt may close turns with it.
    records = [([7, 10, 7, 11], [20, 7], [30, 7]), ([7, 7, 10], [20, 7], [30, 7])]
    found = lint(columns(records), 7, 7)
    assert found["double_bos"] == {"count": 1, "first": ["rows.jsonl:2"]}
    assert found["eos_inside"]["count"] == 0 and found["missing_eos"]["count"] == 0


# -- end to end: records in a file, through the tokenizer, the data module and lightning-dpo data ------

PROMPT = "\n\nHuman: {}\n\nAssistant:"
SHARED = " ".join(f"word{i}" for i in range(40))  # a long common start: truncation leaves only it


def _rows():
    good = [
        {"prompt": PROMPT.format(f"question {i}?"), "chosen": f" Yes {i}.", "rejected": f" No {i}."} for i in range(6)
    ]
    bad = {
        "double_bos": {"prompt": PROMPT.format("hi <s> there"), "chosen": " Sure.", "rejected": " No."},
        "eos_inside": {"prompt": PROMPT.format("hello"), "chosen": " Sure.</s> And more.", "rejected": " No."},
        "boundary_merge": {"prompt": PROMPT.format("hey") + " ", "chosen": "Sure.", "rejected": "No."},
        "contradictory": {"prompt": PROMPT.format("question 0?"), "chosen": " No 0.", "rejected": " Yes 0."},
        "identical_after_truncation": {
            "prompt": PROMPT.format("long"),
            "chosen": f" {SHARED} then yes.",
            "rejected": f" {SHARED} then no.",
        },
    }
    return good, bad


def test_each_check_finds_its_record_in_a_file(tmp_path, write_jsonl, tiny_model_dir):
    from lightning_dpo import PreferenceDataModule

    good, bad = _rows()
    write_jsonl(tmp_path / "train.jsonl", [*good, *bad.values()])
    write_jsonl(tmp_path / "val.jsonl", good[:2])
    data = PreferenceDataModule(dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), max_length=48)
    data.setup("fit")
    found = data.data_report["train"]["lint"]
    lines = {name: f"{tmp_path / 'train.jsonl'}:{len(good) + i + 1}" for i, name in enumerate(bad)}
    for name in CHECKS:
        if name in bad:
            first = found[name]["first"][0].split(" (reverses")[0]
            assert (found[name]["count"], first) == (1, lines[name]), name
        else:
            assert found[name]["count"] == 0, name
    assert "(reverses " + f"{tmp_path / 'train.jsonl'}:1)" in found["contradictory"]["first"][0]
    assert data.data_report["val"]["lint"]["double_bos"]["count"] == 0


def test_strict_data_command_exit_code(tmp_path, write_jsonl, tiny_data_dir, tiny_model_dir, capsys):
    args = [f"--data.tokenizer_name_or_path={tiny_model_dir}", "--data.max_length=48", "--data.max_prompt_length=24"]
    args += ["--data.val_size=2", f"--data.cache_dir={tmp_path / 'cache'}"]
    assert main(["data", "--strict", f"--data.dataset={tiny_data_dir}", *args]) == 0  # clean data passes
    out = capsys.readouterr().out
    assert "lint               0 findings over all 48 pairs of the split" in out

    good, bad = _rows()
    write_jsonl(tmp_path / "train.jsonl", [*good, bad["eos_inside"]])
    assert main(["data", f"--data.dataset={tmp_path / 'train.jsonl'}", *args]) == 0  # without --strict: a report
    out = capsys.readouterr().out
    assert "EOS inside a completion" in out and f"e.g. {tmp_path / 'train.jsonl'}:7" in out and "what to do:" in out
    assert main(["data", "--strict", f"--data.dataset={tmp_path / 'train.jsonl'}", *args]) == 1
    assert "train: 1 eos_inside" in capsys.readouterr().err


def test_failing_names_every_finding():
    report = {"train": {"lint": {"eos_inside": {"count": 2, "first": []}, "double_bos": {"count": 0, "first": []}}}}
    assert failing(report) == ["train: 2 eos_inside"]
    assert failing({"val": {"carved_from_train": True}}) == []
