"""Property tests on random and malformed records: the loader either raises the documented error, or every
batch has >= 1 completion token on each side and its labels never count prompt or pad tokens."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_dpo import PreferenceDataModule
from lightning_dpo.data.formats import ROLES
from lightning_dpo.data.sources import BAD_RECORD_KINDS, PreferenceDataError

# Small alphabets so that duplicates, identical sides, empty strings and EOS/BOS text all turn up.
text = st.lists(st.sampled_from(list("ab .?\n") + ["</s>", "<s>", "é", "Human:"]), max_size=8).map("".join)
words = st.lists(st.sampled_from(["yes", "no", "maybe", "Paris", "</s>", "ok."]), min_size=1, max_size=6).map(
    lambda w: " " + " ".join(w)
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.one_of(text, words)}
)
reply = st.builds(lambda w: [{"role": "assistant", "content": w}], words)
value = st.one_of(st.none(), text, words, st.integers(), st.booleans(), st.lists(message, max_size=3), reply)
good_text = st.fixed_dictionaries({"prompt": words, "chosen": words, "rejected": words})
good_chat = st.fixed_dictionaries(
    {"prompt": st.lists(message, min_size=1, max_size=2), "chosen": reply, "rejected": reply}
)
hh = st.builds(
    lambda q, a, b: {"chosen": f"\n\nHuman:{q}\n\nAssistant:{a}", "rejected": f"\n\nHuman:{q}\n\nAssistant:{b}"},
    words,
    words,
    words,
)
anything = st.fixed_dictionaries({}, optional={"prompt": value, "chosen": value, "rejected": value})
raw_line = st.sampled_from(["{not json", "[1, 2]", '"text"', "null", '{"prompt": "a", "chosen": '])


def _one_side_empty(prompt: str, empty: str, answer: str, side: str) -> dict:
    """A record whose ``side`` says nothing (kept as an EOS-only completion; refused by strict)."""
    return {"prompt": prompt, side: empty, ("rejected" if side == "chosen" else "chosen"): answer}


says_nothing = st.builds(_one_side_empty, words, st.sampled_from(["", " ", "\n"]), words, st.sampled_from(ROLES[1:]))
record = st.one_of(good_text, good_text, good_chat, hh, says_nothing, anything, raw_line)

VAL = [{"prompt": "Q?", "chosen": " yes", "rejected": " no"}]
PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.filterwarnings("ignore:(train|val). dropped")  # the expected summary of skipped records


def _line(location):
    return location.rsplit("/", 1)[-1]  # train.jsonl:7, without the temporary directory


def _check_batch(batch, max_length):
    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    half = ids.shape[0] // 2  # chosen rows, then rejected rows
    starts = []
    for row in range(ids.shape[0]):
        end = int(attention[row].sum())
        assert attention[row, :end].all() and not attention[row, end:].any()  # right-padded
        assert end <= max_length
        positions = completion[row].nonzero().flatten().tolist()
        assert positions, "a side without completion tokens"
        start = positions[0]
        assert start >= 1  # a prompt token precedes it, so every completion token is a label
        assert positions == list(range(start, end))  # the completion: the real tokens after the prompt
        labels = completion[row, 1:].bool()  # what logps counts after the one-step shift
        assert attention[row, 1:][labels].all()  # never a pad token ...
        assert labels.sum() == end - start  # ... nor a prompt token
        starts.append(start)
    for pair in range(half):  # a pair's two rows share their prompt
        assert starts[pair] == starts[pair + half]
        assert ids[pair, : starts[pair]].equal(ids[pair + half, : starts[pair]])


def _run(records, tokenizer_dir, strict, **options):
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        (data_dir / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (data_dir / "val.jsonl").write_text(json.dumps(VAL[0]) + "\n")
        data = PreferenceDataModule(
            dataset=str(data_dir),
            tokenizer_name_or_path=str(tokenizer_dir),
            strict=strict,
            cache_dir=str(Path(tmp) / "cache"),
            batch_size=3,
            **options,
        )
        try:
            data.setup("fit")
        except PreferenceDataError as e:
            return e
        except ValueError as e:
            assert "no usable pairs" in str(e)
            return e
        for batch in data.train_dataloader():
            _check_batch(batch, options["max_length"])
        return data


options = st.fixed_dictionaries(
    {
        "max_length": st.integers(3, 40),
        "truncation_mode": st.sampled_from(["keep_end", "keep_start"]),
        "group_by_length": st.booleans(),
        "system_prompt": st.one_of(st.none(), st.just("Sys.")),
    }
).flatmap(
    lambda o: st.fixed_dictionaries(
        {
            **{k: st.just(v) for k, v in o.items()},
            "max_prompt_length": st.one_of(st.none(), st.integers(1, o["max_length"] - 1)),
        }
    )
)


@PROPERTY
@given(records=st.lists(record, min_size=1, max_size=25), options=options)
def test_lenient_loading_yields_only_trainable_batches(records, options, bos_chat_tokenizer_dir):
    result = _run(records, bos_chat_tokenizer_dir, strict=False, **options)
    assert not isinstance(result, PreferenceDataError)  # lenient: bad records are skipped, never raised
    if isinstance(result, PreferenceDataModule):
        report = result.data_report["train"]
        assert report["read"] == len(records) == report["kept"] + sum(report["dropped"].values())


@PROPERTY
@given(records=st.lists(record, min_size=1, max_size=25), options=options)
def test_strict_raises_exactly_when_there_is_a_bad_record(records, options, plain_chat_tokenizer_dir):
    lenient = _run(records, plain_chat_tokenizer_dir, strict=False, **options)
    strict = _run(records, plain_chat_tokenizer_dir, strict=True, **options)
    if isinstance(lenient, PreferenceDataModule):
        report = lenient.data_report["train"]
        bad = [e for e in report["first_dropped"] if e["kind"] in BAD_RECORD_KINDS]
        # strict also refuses what lenient keeps with an empty completion; it meets records in reading order
        # (``index``), and encoding problems (no index) only after reading them all.
        read = [e for e in [*bad[:1], *report["first_empty"][:1]] if "index" in e]
        first = min(read, key=lambda e: e["index"]) if read else next(iter(bad), None)
        if first is not None:
            assert isinstance(strict, PreferenceDataError)
            assert (_line(strict.location), strict.kind) == (_line(first["location"]), first["kind"])
            assert strict.location in str(strict)
        else:
            assert isinstance(strict, PreferenceDataModule)
            kept = [_line(x) for x in lenient.train_data["location"]]
            assert [_line(x) for x in strict.train_data["location"]] == kept
    else:  # nothing usable: strict stops at a bad record, or finds the same nothing
        assert isinstance(strict, (PreferenceDataError, ValueError))
