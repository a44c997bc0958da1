"""HH-RLHF-shaped preference data and tokenizers of three families, built offline.

There is no HH-RLHF split on this machine, so this script makes data of its *shape*: multi-turn
``"\\n\\nHuman: …\\n\\nAssistant: …"`` transcripts in HH's implicit-prompt form (``chosen`` and ``rejected``
are full transcripts that differ in the last assistant turn), with a long-tailed length distribution (a
few prompts and answers far beyond 512 tokens), a handful of records whose chosen answer is empty (the
transcript ends at ``"Assistant:"``, as 4 of HH's harmless test pairs do), and word statistics that
tokenizers can learn (a fixed English word bank, punctuation, digits, contractions, numbered lists).
The words are random, so nothing here is a language model's test data; it exists to exercise
tokenization and truncation, token for token.

Tokenizer families (:func:`train_tokenizer`), each trained on the generated text:

- ``byte_bpe``: byte-level BPE with spaces at token starts and a BOS post-processor (GPT-2 / Llama-3 /
  Qwen layout, like the bundled tokenizer);
- ``sentencepiece``: the Llama-2 / Mistral / Gemma-1 ``tokenizer.json`` layout: a normalizer that
  prepends ``"▁"`` and replaces spaces with ``"▁"``, no pre-tokenizer, BPE over ``"▁word"`` pieces.

``whitespace_ended`` rewrites explicit-prompt records so that the prompt ends in the space that the
completion used to begin with (``"…Assistant: "`` + ``"I think …"``).

    python scripts/make_hh_shaped_data.py --out /tmp/hh [--pairs 2312] [--seed 0] [--tokenizer-pairs 2000]

writes ``test.jsonl`` (implicit prompts), ``test_whitespace.jsonl`` (explicit, whitespace-ended prompts) and
one tokenizer directory per family. The output is a pure function of ``--pairs`` and ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

WORDS = """
the a an and or but if so because when while after before then than that this these those there here
i you he she it we they me him her us them my your his its our their mine yours what which who whom
whose where why how all any both each few more most other some such no nor not only own same too very
can will just should would could might must may shall do does did done doing have has had having be is
am are was were been being get got make made take took give gave go went gone come came see saw know
knew think thought say said tell told ask asked want need feel felt try tried use used find found keep
help helped mean meant let put seem seemed leave left call called work worked play run ran move lived
believe hold bring happen write wrote sit stand lose pay meet include continue set learn change lead
understand watch follow stop create speak read allow add spend grow open walk win offer remember love
consider appear buy wait serve die send expect build stay fall cut reach kill remain suggest raise pass
sell require report decide pull person people man woman child children time year day week month way
thing world life hand part place case point group number fact home water room mother father area money
story family question answer problem reason idea friend house car school job side kind head night
book word business issue health country city community name president team minute moment body face
door office war history party result change morning evening food law power voice end level student
police plan computer phone dog cat tree garden kitchen doctor teacher music movie game price company
good new first last long great little old right big high different small large next early young
important few public bad able sure free better best happy hard real whole clear recent true easy wrong
strong possible special dangerous safe legal illegal kind rude polite honest careful simple quick slow
really always never often sometimes usually maybe perhaps probably certainly actually also still even
again already almost enough quite rather yet soon today tomorrow yesterday now later together away
about above across against along among around at by down for from in into like near of off on out over
through to under up with without within during between sorry please thanks hello okay yes well oh
cook recipe chicken bread cake coffee tea soup salad pasta rice egg sugar salt butter cheese apple
weather rain snow sun wind summer winter spring travel trip hotel flight train ticket road map street
neighbor boss coworker wife husband brother sister son daughter baby parent grandmother uncle aunt
steal lie hurt fight cheat hack break drug weapon gun knife fire poison revenge prank insult trick
advice information example suggestion opinion experience situation decision conversation relationship
important interesting difficult comfortable uncomfortable appropriate inappropriate responsible
""".split()
CONTRACTIONS = ["I'm", "don't", "can't", "it's", "you're", "I'd", "won't", "that's", "isn't", "I've"]
QUESTION_STARTS = [
    "How do I",
    "What is the best way to",
    "Can you help me",
    "Why do people",
    "Is it okay to",
    "What should I do if",
    "Do you know how to",
    "Tell me how to",
]
OPENERS = [
    "I think",
    "Sure,",
    "I'm sorry, but",
    "That's a good question.",
    "Well,",
    "I don't know, but",
    "Yes,",
    "No,",
    "Hm,",
    "I understand.",
]


def _length(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    """A log-normal word count: most short, a long tail (HH's answers and dialogues are like that)."""
    return max(lo, min(hi, round(median * math.exp(sigma * rng.gauss(0.0, 1.0)))))


def _sentence(rng: random.Random, n_words: int) -> str:
    words = []
    for i in range(n_words):
        r = rng.random()
        if r < 0.05:
            words.append(rng.choice(CONTRACTIONS))
        elif r < 0.07:
            words.append(str(rng.randint(1, 2024)))
        else:
            words.append(rng.choice(WORDS))
        if i < n_words - 1 and rng.random() < 0.08:
            words[-1] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!"])


def _text(rng: random.Random, n_words: int, lists: bool = False) -> str:
    """About ``n_words`` words in sentences; an answer is sometimes a numbered list on separate lines."""
    parts, left = [], n_words
    item = 1
    while left > 0:
        n = min(left, _length(rng, 11, 0.5, 3, 40))
        sentence = _sentence(rng, n)
        if lists and rng.random() < 0.15:
            sentence = f"\n{item}. {sentence}"
            item += 1
        parts.append(sentence)
        left -= n
    return " ".join(parts).replace(" \n", "\n")


def _human(rng: random.Random) -> str:
    if rng.random() < 0.5:
        body = f"{rng.choice(QUESTION_STARTS)} {_sentence(rng, _length(rng, 8, 0.6, 2, 60))[:-1].lower()}?"
    else:
        body = _text(rng, _length(rng, 14, 0.8, 2, 200))
    return body


def _assistant(rng: random.Random, median: float) -> str:
    opener = rng.choice(OPENERS) if rng.random() < 0.5 else ""
    body = _text(rng, _length(rng, median, 0.9, 1, 700), lists=True)
    return f"{opener} {body}".strip()


def hh_shaped_pairs(n: int, seed: int = 0, n_empty_chosen: int = 4) -> list[dict[str, str]]:
    """``n`` HH-style records ``{"chosen": transcript, "rejected": transcript}`` (implicit prompts); the
    first ``n_empty_chosen`` of a seeded choice have an empty chosen answer."""
    rng = random.Random(seed)
    empty = set(rng.sample(range(n), min(n_empty_chosen, n)))
    rows = []
    for i in range(n):
        turns = 1 + min(int(rng.expovariate(0.7)), 9)
        dialogue = ""
        for _ in range(turns - 1):
            dialogue += f"\n\nHuman: {_human(rng)}\n\nAssistant: {_assistant(rng, 26)}"
        dialogue += f"\n\nHuman: {_human(rng)}\n\nAssistant:"
        chosen = "" if i in empty else " " + _assistant(rng, 30)
        rejected = " " + _assistant(rng, 30)
        while rejected == chosen:
            rejected = " " + _assistant(rng, 30)
        rows.append({"chosen": dialogue + chosen, "rejected": dialogue + rejected})
    return rows


def explicit(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same records with ``prompt`` split out (through the package's own HH rule)."""
    from lightning_dpo.data.formats import split_implicit_prompt

    out = []
    for row in rows:
        example = split_implicit_prompt(row["chosen"], row["rejected"])
        out.append({"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected})
    return out


def whitespace_ended(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Explicit records whose prompt ends in the space both completions began with (``"Assistant: "``)."""
    out = []
    for row in explicit(rows):
        if row["chosen"].startswith(" ") and row["rejected"].startswith(" "):
            out.append({"prompt": row["prompt"] + " ", "chosen": row["chosen"][1:], "rejected": row["rejected"][1:]})
    return out


def corpus(rows: list[dict[str, str]]) -> list[str]:
    return [text for row in rows for text in (row["chosen"], row["rejected"])]


FAMILIES = ("byte_bpe", "sentencepiece")
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"


def train_tokenizer(family: str, texts: list[str], vocab_size: int = 2000) -> Any:
    """A ``PreTrainedTokenizerFast`` of ``family`` (see the module docstring) trained on ``texts``; it adds
    BOS with special tokens and never EOS, like Llama tokenizers."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family == "byte_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[BOS, EOS, PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
    elif family == "sentencepiece":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        # Trained on "▁word" pieces and lone newlines (SentencePiece never merges across a word start);
        # then used as Llama-2's tokenizer.json is: no pre-tokenizer, BPE over the whole normalized text.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next"),
                pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
            ]
        )
        alphabet = sorted({c for text in texts for c in text.replace(" ", "▁")} | {"▁"})
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[UNK, BOS, EOS, PAD], initial_alphabet=alphabet, show_progress=False
        )
        tok.train_from_iterator(texts, trainer)
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        raise ValueError(f"unknown tokenizer family {family!r}; one of {FAMILIES}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK if family == "sentencepiece" else None,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--pairs", type=int, default=2312, help="records (HH's harmless-base test split has 2,312)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-pairs", type=int, default=2000, help="records whose text trains the tokenizers")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = hh_shaped_pairs(args.pairs, args.seed)
    write_jsonl(out / "test.jsonl", rows)
    write_jsonl(out / "test_whitespace.jsonl", whitespace_ended(rows))
    for family in FAMILIES:
        texts = corpus(hh_shaped_pairs(args.tokenizer_pairs, args.seed + 1))
        train_tokenizer(family, texts).save_pretrained(out / family)
    print(f"wrote {out}: test.jsonl ({len(rows)} records), test_whitespace.jsonl, tokenizers {', '.join(FAMILIES)}")


if __name__ == "__main__":
    import sys

    REPO_ROOT = Path(__file__).resolve().parents[1]
    if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
        sys.path.insert(0, str(REPO_ROOT))
    main()
