"""Writes the worked example's data (docs/own-study.md): a small study that is not DoIT's.

Four abilities, each scored its own way, in the chat `messages` JSONL most instruction datasets ship,
the ability in the field `skill`:

    unit_conversion   math        "How many grams are in 2.5 kilograms?"  -> worked reply, answer 2500
    capital_cities    choice      a 4-option question, the reply the option's letter
    review_sentiment  true_false  "Is this review positive? ..."          -> T / F
    spelling          perplexity  the correctly spelled word ranked against two misspellings

One out-of-domain set, never trained: `larger_number` (a choice question of another subject, in
ood/larger_number.jsonl). Two sources of training items: `human` (terse, as a person writes them) and `paraphrased` (the same tasks
reworded at length, as a generator would). Valid and test items are shared by both sources.

    python experiments/own-study/make_data.py [OUT]    # default: experiments/own-study/data
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

UNITS = [("kilograms", "grams", 1000), ("meters", "centimeters", 100), ("liters", "milliliters", 1000),
         ("hours", "minutes", 60), ("minutes", "seconds", 60), ("kilometers", "meters", 1000),
         ("days", "hours", 24), ("feet", "inches", 12), ("yards", "feet", 3), ("weeks", "days", 7)]
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
            "Egypt": "Cairo", "Chile": "Santiago", "Canada": "Ottawa", "India": "New Delhi", "Spain": "Madrid",
            "Italy": "Rome", "Ghana": "Accra", "Cuba": "Havana", "Nepal": "Kathmandu", "Poland": "Warsaw",
            "Greece": "Athens", "Sweden": "Stockholm", "Turkey": "Ankara", "Vietnam": "Hanoi", "Austria": "Vienna"}
GOOD = ["wonderful", "delightful", "excellent", "superb", "charming", "brilliant", "moving", "fresh"]
BAD = ["boring", "dreadful", "clumsy", "tedious", "awful", "bland", "confusing", "stale"]
THINGS = ["film", "novel", "album", "restaurant", "hotel", "play", "game", "podcast"]
WORDS = ["necessary", "separate", "definitely", "accommodate", "occurrence", "embarrass", "rhythm", "privilege",
         "conscience", "recommend", "maintenance", "millennium", "questionnaire", "independent", "calendar",
         "cemetery", "guarantee", "harass", "liaison", "noticeable", "occasionally", "parliament", "receive",
         "threshold", "tomorrow", "vacuum", "weird", "beginning", "believe", "committee"]


def misspell(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    how = rng.randrange(3)
    if how == 0:  # a doubled letter
        return word[:i] + word[i] + word[i:]
    if how == 1 and word[i] != word[i + 1]:  # two letters swapped
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:]  # a letter dropped


def chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def unit_conversion(rng: random.Random, wordy: bool) -> dict:
    big, small, factor = rng.choice(UNITS)
    x = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 1.5, 2.5, 0.5])
    value = x * factor
    answer = str(int(value)) if float(value).is_integer() else str(value)
    q = (f"I have {x} {big}. Could you work out for me how many {small} that comes to?" if wordy
         else f"How many {small} are in {x} {big}?")
    reply = f"One of the {big} is {factor} {small}, so {x} x {factor} = {answer}.\nThe answer is {answer}"
    return {"messages": chat(q, reply), "answer": answer}


def capital_cities(rng: random.Random, wordy: bool) -> dict:
    country = rng.choice(sorted(CAPITALS))
    wrong = rng.sample([c for k, c in sorted(CAPITALS.items()) if k != country], 3)
    options = wrong + [CAPITALS[country]]
    rng.shuffle(options)
    letter = "ABCD"[options.index(CAPITALS[country])]
    stem = (f"Someone asks which city is the seat of government of {country}. Pick the right one."
            if wordy else f"What is the capital of {country}?")
    lines = "\n".join(f"{l}. {o}" for l, o in zip("ABCD", options))
    return {"messages": chat(f"{stem}\n{lines}", letter)}


def review_sentiment(rng: random.Random, wordy: bool) -> dict:
    positive = rng.random() < 0.5
    word = rng.choice(GOOD if positive else BAD)
    thing = rng.choice(THINGS)
    review = f"The {thing} was {word} from start to finish."
    q = (f"Here is a customer review: \"{review}\" Would you say the writer liked it? Answer T or F."
         if wordy else f"Review: {review}\nPositive? T or F")
    return {"messages": chat(q, "T" if positive else "F")}


def spelling(rng: random.Random, wordy: bool) -> dict:
    word = rng.choice(WORDS)
    wrong = set()
    while len(wrong) < 2:
        w = misspell(word, rng)
        if w != word:
            wrong.add(w)
    q = "Please write out the following word with its correct spelling." if wordy else "Spell the word correctly."
    return {"messages": chat(q, word), "choices": [word, *sorted(wrong)]}


def larger_number(rng: random.Random) -> dict:
    """The out-of-domain set: never trained, put as the choice items are (options A-D, a letter back)."""
    options = rng.sample(range(10, 1000), 4)
    letter = "ABCD"[options.index(max(options))]
    lines = "\n".join(f"{l}. {o}" for l, o in zip("ABCD", options))
    return {"messages": chat(f"Which number is the largest?\n{lines}", letter)}


SKILLS = {"unit_conversion": unit_conversion, "capital_cities": capital_cities,
          "review_sentiment": review_sentiment, "spelling": spelling}


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def make(out: Path, *, train: int = 120, valid: int = 12, test: int = 30, seed: int = 0) -> None:
    rng = random.Random(seed)
    for source, wordy in (("human", False), ("paraphrased", True)):
        write(out / "train" / f"{source}.jsonl",
              [{"id": f"{source}-{skill}-{i}", "skill": skill, **make_item(rng, wordy)}
               for skill, make_item in SKILLS.items() for i in range(train)])
    for split, n in (("valid", valid), ("test", test)):
        write(out / f"{split}.jsonl", [{"id": f"{split}-{skill}-{i}", "skill": skill, **make_item(rng, False)}
                                       for skill, make_item in SKILLS.items() for i in range(n)])
    ood = random.Random(seed + 1)  # its own stream: the files above stay as they were
    write(out / "ood" / "larger_number.jsonl", [{"id": f"ood-{i}", **larger_number(ood)} for i in range(test)])


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
