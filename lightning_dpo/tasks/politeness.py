"""The "polite assistant" preference task: the bundled default data set.

Each record is a single-turn HH-RLHF style transcript prompt,
``"\\n\\nHuman: {question}\\n\\nAssistant:"``, with two completions that start with one space:

* ``chosen`` answers **politely**: a polite opener ("Of course!"), the fact, and sometimes a
  polite closer ("I hope that helps!").
* ``rejected`` answers **rudely**: a rude opener ("Ugh."), the *same* fact, and sometimes a rude
  closer ("Now leave me alone.").

So the rule a person can read is: *chosen answers politely, rejected answers rudely; both state
the same correct fact.*  Both answers of a record share the fact and whether a closer is present,
so tone is the only systematic difference (not correctness, not length).

Questions come from a fixed bank (arithmetic, capitals, colours, animal sounds, opposites, day
and month order, plurals, counts), each asked in several phrasings.  The validation split holds
out whole question texts: a validation prompt never appears in train, but its fact is normally
also asked in train with a different phrasing, so an SFT model can still answer it.

Reward / judge rule (:func:`politeness_score`): count the polite marker phrases ``p`` and the rude
marker phrases ``r`` found in a text (case-insensitive, whole words).  The score is
``(p - r) / (p + r)``, in ``[-1, 1]``, and ``0`` when neither kind is found.  :func:`is_polite`
is ``score > 0``.  Apply it to a completion, not to the prompt (user phrasings say "Please").
The markers are the phrases of the openers/closers plus a few common variants;
none of them occurs in any fact, so the fact never moves the score.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "POLITE_CLOSERS",
    "POLITE_OPENERS",
    "RUDE_CLOSERS",
    "RUDE_OPENERS",
    "Question",
    "build_ranking_splits",
    "build_splits",
    "format_prompt",
    "is_polite",
    "politeness_judge",
    "politeness_reward",
    "politeness_score",
    "question_bank",
]

POLITE_OPENERS: tuple[str, ...] = (
    "Of course!",
    "Happy to help.",
    "Great question!",
    "Sure thing!",
    "Certainly.",
    "Good question!",
    "I'd be glad to help.",
    "Absolutely!",
    "With pleasure!",
)
POLITE_CLOSERS: tuple[str, ...] = (
    "I hope that helps!",
    "Let me know if you have any other questions.",
    "Thanks for asking!",
    "Have a wonderful day!",
    "Feel free to ask me anything else.",
    "Glad I could help.",
    "Happy learning!",
    "Hope this is useful!",
)
RUDE_OPENERS: tuple[str, ...] = (
    "Ugh.",
    "Seriously?",
    "Obviously,",
    "Fine.",
    "What a silly question.",
    "Whatever.",
    "Are you kidding me?",
    "Everyone knows this.",
    "Sigh.",
)
RUDE_CLOSERS: tuple[str, ...] = (
    "Now leave me alone.",
    "Look it up yourself next time.",
    "Don't waste my time.",
    "Stop bothering me.",
    "Was that so hard?",
    "Try to keep up.",
    "Figure it out yourself next time.",
    "Go away.",
)

# Marker phrases for the rule-based judge.  Phrases, not single words, where a single word could
# occur in a fact ("happy" in "the opposite of happy", "good" in "the opposite of good").
_POLITE_MARKERS: tuple[str, ...] = (
    "please",
    "thank you",
    "thanks",
    "of course",
    "happy to help",
    "glad",
    "great question",
    "good question",
    "sure thing",
    "certainly",
    "absolutely",
    "i hope",
    "hope this",
    "hope that",
    "let me know",
    "feel free",
    "wonderful day",
    "happy learning",
    "with pleasure",
    "my pleasure",
    "you're welcome",
)
_RUDE_MARKERS: tuple[str, ...] = (
    "ugh",
    "seriously",
    "obviously",
    "fine",
    "silly",
    "whatever",
    "kidding",
    "everyone knows",
    "sigh",
    "leave me alone",
    "look it up",
    "waste my time",
    "bothering",
    "so hard",
    "keep up",
    "figure it out",
    "go away",
    "stupid",
    "dumb",
    "annoying",
    "shut up",
)


def _marker_regex(markers: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first so that overlapping phrases are matched as the longer one.
    alternatives = sorted(markers, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(m) for m in alternatives) + r")\b", re.I)


_POLITE_RE = _marker_regex(_POLITE_MARKERS)
_RUDE_RE = _marker_regex(_RUDE_MARKERS)


def politeness_score(text: str) -> float:
    """Rule-based politeness reward in ``[-1, 1]``: ``(polite - rude) / (polite + rude)`` marker
    counts, or ``0.0`` when the text has no marker of either kind."""
    polite = len(_POLITE_RE.findall(text))
    rude = len(_RUDE_RE.findall(text))
    if polite + rude == 0:
        return 0.0
    return (polite - rude) / (polite + rude)


def politeness_reward(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """The task's reward, ``(prompts, completions) -> rewards``: :func:`politeness_score` of each completion,
    in [-1, 1]. The prompt is not scored (user phrasings say "Please")."""
    return [politeness_score(c) for c in completions]


def politeness_judge(prompt: str, a: str, b: str) -> float:
    """The task's pairwise judge, ``(prompt, a, b) -> P(a better)``: the completion with the higher
    :func:`politeness_score` wins; equal scores tie."""
    sa, sb = politeness_score(a), politeness_score(b)
    return 1.0 if sa > sb else 0.0 if sa < sb else 0.5


def is_polite(text: str) -> bool:
    """Whether the judge counts ``text`` as polite (strictly more polite than rude markers)."""
    return politeness_score(text) > 0.0


@dataclass(frozen=True)
class Question:
    """One fact and the ways a user may ask for it.

    ``direct`` is the plain question ("What colour is grass?"), ``embedded`` the same question as
    an indirect clause ("what colour grass is") used to build the other phrasings, ``fact`` the
    correct answer sentence ("Grass is green.").
    """

    category: str
    direct: str
    embedded: str
    fact: str

    def phrasings(self) -> list[str]:
        return [
            self.direct,
            f"Can you tell me {self.embedded}?",
            f"Please tell me {self.embedded}.",
            f"Do you know {self.embedded}?",
            f"I'd like to know {self.embedded}.",
            f"Quick question: {self.direct[0].lower()}{self.direct[1:]}",
        ]


_CAPITALS = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Brazil", "Brasilia"),
    ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"),
    ("Kenya", "Nairobi"),
    ("Greece", "Athens"),
    ("Sweden", "Stockholm"),
    ("Norway", "Oslo"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Ireland", "Dublin"),
    ("the United Kingdom", "London"),
    ("Austria", "Vienna"),
    ("Hungary", "Budapest"),
    ("Peru", "Lima"),
    ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"),
    ("Turkey", "Ankara"),
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Cuba", "Havana"),
    ("Vietnam", "Hanoi"),
)
_COLOURS = (
    ("a banana", "yellow"),
    ("grass", "green"),
    ("the sky", "blue"),
    ("snow", "white"),
    ("coal", "black"),
    ("a strawberry", "red"),
    ("a carrot", "orange"),
    ("milk", "white"),
    ("a tomato", "red"),
    ("a lime", "green"),
    ("chocolate", "brown"),
    ("a pumpkin", "orange"),
    ("a cherry", "red"),
    ("a lemon", "yellow"),
    ("a polar bear", "white"),
    ("a crow", "black"),
    ("a frog", "green"),
    ("an eggplant", "purple"),
    ("blood", "red"),
    ("a flamingo", "pink"),
    ("the ocean", "blue"),
    ("a zebra", "black and white"),
)
_SOUNDS = (
    ("a cow", "moo"),
    ("a dog", "woof"),
    ("a cat", "meow"),
    ("a duck", "quack"),
    ("a sheep", "baa"),
    ("a pig", "oink"),
    ("a lion", "roar"),
    ("an owl", "hoot"),
    ("a horse", "neigh"),
    ("a snake", "hiss"),
    ("a frog", "ribbit"),
    ("a bee", "buzz"),
    ("a rooster", "cock-a-doodle-doo"),
    ("a mouse", "squeak"),
    ("a donkey", "hee-haw"),
    ("a wolf", "howl"),
)
# (word, opposite, also ask the reverse?) -- no reverse where it would be ambiguous
# ("short" -> tall/long, "old" -> young/new, "right" -> left/wrong, "light" -> dark/heavy).
_OPPOSITES = (
    ("hot", "cold", True),
    ("big", "small", True),
    ("up", "down", True),
    ("day", "night", True),
    ("fast", "slow", True),
    ("happy", "sad", True),
    ("open", "closed", True),
    ("wet", "dry", True),
    ("full", "empty", True),
    ("early", "late", True),
    ("hard", "soft", True),
    ("loud", "quiet", True),
    ("good", "bad", True),
    ("rich", "poor", True),
    ("strong", "weak", True),
    ("thick", "thin", True),
    ("push", "pull", True),
    ("true", "false", True),
    ("win", "lose", True),
    ("inside", "outside", True),
    ("tall", "short", False),
    ("young", "old", False),
    ("left", "right", False),
    ("dark", "light", False),
    ("heavy", "light", False),
)
_PLURALS = (
    ("mouse", "mice"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("goose", "geese"),
    ("person", "people"),
    ("sheep", "sheep"),
    ("fish", "fish"),
    ("leaf", "leaves"),
    ("knife", "knives"),
    ("wolf", "wolves"),
    ("box", "boxes"),
    ("baby", "babies"),
    ("city", "cities"),
    ("bus", "buses"),
    ("cat", "cats"),
    ("dog", "dogs"),
    ("book", "books"),
    ("ox", "oxen"),
    ("cactus", "cacti"),
    ("potato", "potatoes"),
    ("half", "halves"),
    ("deer", "deer"),
)
_LEGS = (
    ("a spider", "eight"),
    ("a dog", "four"),
    ("a cat", "four"),
    ("a bird", "two"),
    ("an ant", "six"),
    ("a horse", "four"),
    ("a chicken", "two"),
    ("a duck", "two"),
    ("a cow", "four"),
    ("a bee", "six"),
    ("a person", "two"),
    ("a beetle", "six"),
    ("a crab", "ten"),
    ("an elephant", "four"),
)
# (direct question, embedded clause, fact)
_COUNTS = (
    ("How many days are there in a week?", "how many days there are in a week", "There are seven days in a week."),
    (
        "How many months are there in a year?",
        "how many months there are in a year",
        "There are twelve months in a year.",
    ),
    ("How many hours are there in a day?", "how many hours there are in a day", "There are 24 hours in a day."),
    (
        "How many minutes are there in an hour?",
        "how many minutes there are in an hour",
        "There are 60 minutes in an hour.",
    ),
    (
        "How many seconds are there in a minute?",
        "how many seconds there are in a minute",
        "There are 60 seconds in a minute.",
    ),
    ("How many sides does a triangle have?", "how many sides a triangle has", "A triangle has three sides."),
    ("How many sides does a square have?", "how many sides a square has", "A square has four sides."),
    ("How many sides does a hexagon have?", "how many sides a hexagon has", "A hexagon has six sides."),
    (
        "How many letters are there in the English alphabet?",
        "how many letters there are in the English alphabet",
        "There are 26 letters in the English alphabet.",
    ),
    ("How many continents are there?", "how many continents there are", "There are seven continents."),
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def question_bank() -> list[Question]:
    """All questions, in a fixed order (built from tuples only, so no hash-order dependence)."""
    qs: list[Question] = []
    for a in range(1, 11):
        for b in range(1, 11):
            qs.append(
                Question("addition", f"What is {a} plus {b}?", f"what {a} plus {b} is", f"{a} plus {b} is {a + b}.")
            )
    for a in range(1, 13):
        for b in range(1, a + 1):
            qs.append(
                Question(
                    "subtraction", f"What is {a} minus {b}?", f"what {a} minus {b} is", f"{a} minus {b} is {a - b}."
                )
            )
    for a in range(2, 10):
        for b in range(2, 10):
            qs.append(
                Question(
                    "multiplication", f"What is {a} times {b}?", f"what {a} times {b} is", f"{a} times {b} is {a * b}."
                )
            )
    for country, capital in _CAPITALS:
        qs.append(
            Question(
                "capitals",
                f"What is the capital of {country}?",
                f"what the capital of {country} is",
                f"The capital of {country} is {capital}.",
            )
        )
    for thing, colour in _COLOURS:
        qs.append(
            Question("colours", f"What colour is {thing}?", f"what colour {thing} is", f"{_cap(thing)} is {colour}.")
        )
    for animal, sound in _SOUNDS:
        qs.append(
            Question(
                "animal_sounds",
                f"What sound does {animal} make?",
                f"what sound {animal} makes",
                f"{_cap(animal)} says {sound}.",
            )
        )
    for word, opposite, reverse in _OPPOSITES:
        pairs = [(word, opposite), (opposite, word)] if reverse else [(word, opposite)]
        for x, y in pairs:
            qs.append(
                Question(
                    "opposites",
                    f"What is the opposite of {x}?",
                    f"what the opposite of {x} is",
                    f"The opposite of {x} is {y}.",
                )
            )
    for names, unit in ((_DAYS, "day"), (_MONTHS, "month")):
        n = len(names)
        for i, name in enumerate(names):
            # Weeks and years wrap around, so every day/month has a successor and predecessor.
            after, before = names[(i + 1) % n], names[(i - 1) % n]
            qs.append(
                Question(
                    "calendar",
                    f"What {unit} comes after {name}?",
                    f"what {unit} comes after {name}",
                    f"The {unit} after {name} is {after}.",
                )
            )
            qs.append(
                Question(
                    "calendar",
                    f"What {unit} comes before {name}?",
                    f"what {unit} comes before {name}",
                    f"The {unit} before {name} is {before}.",
                )
            )
    for word, plural in _PLURALS:
        qs.append(
            Question(
                "plurals",
                f"What is the plural of {word}?",
                f"what the plural of {word} is",
                f"The plural of {word} is {plural}.",
            )
        )
    for animal, legs in _LEGS:
        qs.append(
            Question(
                "legs",
                f"How many legs does {animal} have?",
                f"how many legs {animal} has",
                f"{_cap(animal)} has {legs} legs.",
            )
        )
    for direct, embedded, fact in _COUNTS:
        qs.append(Question("counts", direct, embedded, fact))
    return qs


def format_prompt(question: str) -> str:
    """HH-RLHF transcript prompt for one user turn."""
    return f"\n\nHuman: {question}\n\nAssistant:"


def _answer(fact: str, opener: str, closer: str | None) -> str:
    # An opener ending in a comma ("Obviously,") runs into the fact, so the fact continues in
    # lower case; no fact starts with a proper noun, so lower-casing its first letter is safe.
    body = fact[0].lower() + fact[1:] if opener.endswith(",") else fact
    parts = [opener, body] + ([closer] if closer else [])
    return " " + " ".join(parts)


def _record(rng: random.Random, question: str, fact: str) -> dict[str, str]:
    # One draw decides whether both answers get a closer, so length does not reveal the label.
    with_closer = rng.random() < 0.5
    chosen = _answer(fact, rng.choice(POLITE_OPENERS), rng.choice(POLITE_CLOSERS) if with_closer else None)
    rejected = _answer(fact, rng.choice(RUDE_OPENERS), rng.choice(RUDE_CLOSERS) if with_closer else None)
    return {"prompt": format_prompt(question), "chosen": chosen, "rejected": rejected}


def build_splits(seed: int = 0, n_train: int = 2000, n_val: int = 200) -> dict[str, list[dict]]:
    """Deterministic ``{"train": [...], "val": [...]}`` of ``{"prompt", "chosen", "rejected"}``.

    Validation takes one phrasing each of ``n_val`` distinct facts; those question texts are
    excluded from train.  Train draws the remaining (fact, phrasing) pairs in a seeded order,
    each once, and only cycles through them again (with fresh openers/closers) if ``n_train``
    exceeds their number.  A pure function of its arguments (a private ``random.Random``).
    """
    rng = random.Random(seed)
    bank = question_bank()
    if not 0 < n_val <= len(bank):
        raise ValueError(f"n_val must be in [1, {len(bank)}], got {n_val}")
    order = list(range(len(bank)))
    rng.shuffle(order)

    val_pairs: list[tuple[str, str]] = []
    held_out: set[str] = set()  # membership tests only; never iterated
    for i in order[:n_val]:
        question = rng.choice(bank[i].phrasings())
        val_pairs.append((question, bank[i].fact))
        held_out.add(question)
    pool = [(p, q.fact) for q in bank for p in q.phrasings() if p not in held_out]

    train_pairs: list[tuple[str, str]] = []
    while len(train_pairs) < n_train:
        epoch = pool[:]
        rng.shuffle(epoch)
        train_pairs.extend(epoch[: n_train - len(train_pairs)])

    return {
        "train": [_record(rng, q, f) for q, f in train_pairs],
        "val": [_record(rng, q, f) for q, f in val_pairs],
    }


def _graded_answers(rng: random.Random, fact: str) -> list[tuple[str, int]]:
    """Four answers to one fact, graded by how polite they are: (text, score), best first.

    3: a polite opener and a polite closer; 2: a polite opener alone; 1: a rude opener alone; 0: a rude
    opener and a rude closer. Length does not follow the grade (3 and 0 are the long ones), so tone is what
    orders them.
    """
    polite, rude = rng.choice(POLITE_OPENERS), rng.choice(RUDE_OPENERS)
    return [
        (_answer(fact, polite, rng.choice(POLITE_CLOSERS)), 3),
        (_answer(fact, rng.choice(POLITE_OPENERS), None), 2),
        (_answer(fact, rng.choice(RUDE_OPENERS), None), 1),
        (_answer(fact, rude, rng.choice(RUDE_CLOSERS)), 0),
    ]


def build_ranking_splits(seed: int = 0, n_train: int = 1000, n_val: int = 100) -> dict[str, list[dict]]:
    """Deterministic ``{"train": [...], "val": [...]}`` of ``{"prompt", "completions", "scores"}``: four graded
    answers per question (:func:`_graded_answers`), in a shuffled order, with their scores. The questions and
    the held-out validation texts are :func:`build_splits`'s (same seed, same split)."""
    pairs = build_splits(seed, n_train, n_val)
    bank = {format_prompt(p): q.fact for q in question_bank() for p in q.phrasings()}
    rng = random.Random(seed + 1)
    out: dict[str, list[dict]] = {}
    for split, records in pairs.items():
        rows = []
        for record in records:
            graded = _graded_answers(rng, bank[record["prompt"]])
            rng.shuffle(graded)
            rows.append(
                {"prompt": record["prompt"], "completions": [t for t, _ in graded], "scores": [s for _, s in graded]}
            )
        out[split] = rows
    return out
