"""Deterministic procedural dataset in the study's layout and schema: the platform's embedded data.

Each of the ten abilities is a procedural *task family* with a documented complexity (see
``FAMILIES_DOC`` and the generated README.md): fact lookups over small fixed tables, rules that need
composition, in-context retrieval, and a near-arbitrary mapping. Nothing here arranges a growth curve;
the families only differ in how much structure there is to learn.

Eval items never repeat a train prompt where the family allows it: code, creative_writing and
role_play hold out a seed-dependent fifth of their prompt combinations for valid/test; the other
families reject eval prompts seen in train. History true/false and Chinese cloze items come from a
closed set of statements (a lookup), so they may repeat.

``world/world.txt`` is a plain-text corpus of the same world for causal-LM pre-training: one document
per line, ``world_per_family`` documents for every ability and every OOD subject, each drawn with its
own seeded rng by one rule: a family with a closed fact table states one of its facts (biology and the
OOD subjects as question and answer, history by its statement, a Chinese idiom with its meaning and
characters, an ethics act with its verdict); any other family writes one worked instance of its TRAIN
part (the prompt's text, option lists dropped, then the gold answer in words), never a held-out
combination nor the question of an eval item. No chat tokens, no option letters.

``generate_dataset`` refuses a non-empty ``root`` (FileExistsError) and writes into a temp dir next to
it, renamed into place at the end, so a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.core.abilities import WORLD
from growthpace.platform.data.records import world_path, write_records
from growthpace.platform.core.items import DataError, Record

LETTERS = "ABCD"
HELD_OUT = ("code", "creative_writing", "role_play")  # eval prompts = a held-out fifth of combinations

# --- fact tables: groups of (question, answer); the group's answers are each other's distractors ---
BIOLOGY = [
    [("Which organ pumps blood?", "heart"), ("Which organ takes in oxygen?", "lungs"),
     ("Which organ filters blood into urine?", "kidneys"), ("Which organ stores bile?", "gallbladder"),
     ("Which organ controls the body?", "brain"), ("Which organ absorbs most nutrients?", "small intestine"),
     ("Which organ makes insulin?", "pancreas"), ("Which organ covers the body?", "skin")],
    [("Which organelle makes ATP?", "mitochondrion"), ("Where does photosynthesis happen?", "chloroplast"),
     ("Which organelle holds the DNA?", "nucleus"), ("Which organelle makes proteins?", "ribosome"),
     ("What stiff layer surrounds a plant cell?", "cell wall"),
     ("What controls what enters a cell?", "cell membrane")],
    [("Which molecule carries genetic code?", "DNA"), ("Which gas do plants release?", "oxygen"),
     ("Which gas do plants absorb?", "carbon dioxide"), ("Which molecule stores energy in cells?", "ATP"),
     ("Which sugar does photosynthesis make?", "glucose"), ("What do enzymes mostly consist of?", "protein")],
    [("What kind of animal is a whale?", "mammal"), ("What kind of animal is a frog?", "amphibian"),
     ("What kind of animal is a shark?", "fish"), ("What kind of animal is an eagle?", "bird"),
     ("What kind of animal is a snake?", "reptile"), ("What kind of animal is a spider?", "arachnid"),
     ("What kind of animal is a bee?", "insect"), ("What kind of animal is a bat?", "mammal"),
     ("What kind of animal is a penguin?", "bird"), ("What kind of animal is a turtle?", "reptile")],
]
# (question, statement with {} for the answer, answer, pool)
_DYN = ("Qin", "Han", "Tang", "Song", "Yuan", "Ming", "Qing")
_YEAR = ("1492", "1776", "1789", "1911", "1914", "1939", "1945", "1949", "1969", "1989")
_WHO = ("Qin Shi Huang", "Genghis Khan", "Lincoln", "Napoleon", "Confucius", "Cleopatra",
        "Alexander the Great", "Julius Caesar")
HISTORY = [
    ("Which dynasty first unified China?", "The {} dynasty first unified China.", "Qin", _DYN),
    ("Which dynasty built the Forbidden City?", "The {} dynasty built the Forbidden City.", "Ming", _DYN),
    ("Which dynasty did Kublai Khan found?", "Kublai Khan founded the {} dynasty.", "Yuan", _DYN),
    ("Which was China's last imperial dynasty?", "The {} was China's last imperial dynasty.", "Qing", _DYN),
    ("Which dynasty opened the Silk Road?", "The {} dynasty opened the Silk Road.", "Han", _DYN),
    ("In which dynasty did Li Bai live?", "Li Bai lived in the {} dynasty.", "Tang", _DYN),
    ("Which dynasty invented movable type?", "Movable type was invented in the {} dynasty.", "Song", _DYN),
    ("When did Columbus reach the Americas?", "Columbus reached the Americas in {}.", "1492", _YEAR),
    ("When did the US declare independence?", "The US declared independence in {}.", "1776", _YEAR),
    ("When did the French Revolution begin?", "The French Revolution began in {}.", "1789", _YEAR),
    ("When did the Xinhai Revolution happen?", "The Xinhai Revolution happened in {}.", "1911", _YEAR),
    ("When did World War I begin?", "World War I began in {}.", "1914", _YEAR),
    ("When did World War II begin?", "World War II began in {}.", "1939", _YEAR),
    ("When did World War II end?", "World War II ended in {}.", "1945", _YEAR),
    ("When was the PRC founded?", "The PRC was founded in {}.", "1949", _YEAR),
    ("When did humans first land on the Moon?", "Humans first landed on the Moon in {}.", "1969", _YEAR),
    ("When did the Berlin Wall fall?", "The Berlin Wall fell in {}.", "1989", _YEAR),
    ("Who was the first emperor of China?", "{} was the first emperor of China.", "Qin Shi Huang", _WHO),
    ("Who founded the Mongol Empire?", "{} founded the Mongol Empire.", "Genghis Khan", _WHO),
    ("Who led the Union in the Civil War?", "{} led the Union in the Civil War.", "Lincoln", _WHO),
    ("Who crowned himself Emperor of the French?", "{} crowned himself Emperor of the French.", "Napoleon", _WHO),
    ("Whose teachings fill the Analects?", "The Analects hold the teachings of {}.", "Confucius", _WHO),
    ("Who was the last pharaoh of Egypt?", "{} was the last pharaoh of Egypt.", "Cleopatra", _WHO),
    ("Who crossed the Rubicon?", "{} crossed the Rubicon.", "Julius Caesar", _WHO),
]
IDIOMS = [
    ("画蛇添足", "ruin it by adding extras"), ("守株待兔", "wait idly for luck"), ("亡羊补牢", "fix it after a loss"),
    ("对牛弹琴", "talk to the wrong audience"), ("井底之蛙", "a person of narrow views"), ("掩耳盗铃", "fool oneself"),
    ("刻舟求剑", "cling to rigid ways"), ("杯弓蛇影", "needless fear"), ("叶公好龙", "fake love of a thing"),
    ("狐假虎威", "bully with borrowed power"), ("画龙点睛", "the finishing touch"),
    ("塞翁失马", "a loss may be a blessing"), ("卧薪尝胆", "endure hardship for a goal"),
    ("纸上谈兵", "theory without practice"), ("半途而废", "give up halfway"), ("自相矛盾", "contradict oneself"),
    ("四面楚歌", "surrounded by enemies"), ("破釜沉舟", "leave no way back"), ("完璧归赵", "return a thing intact"),
    ("望梅止渴", "comfort by imagining"), ("入木三分", "deep insight"), ("一石二鸟", "two gains with one act"),
    ("三心二意", "half-hearted"), ("一心一意", "wholehearted"), ("七上八下", "very anxious"),
    ("五颜六色", "very colorful"), ("百发百中", "never miss"), ("千军万马", "a mighty army"),
    ("马到成功", "instant success"), ("胸有成竹", "have a plan ready"), ("鸡飞蛋打", "lose everything"),
    ("对症下药", "fix the real cause"), ("水落石出", "the truth comes out"), ("雪中送炭", "help in time of need"),
    ("锦上添花", "make good even better"), ("熟能生巧", "practice makes perfect"),
    ("朝三暮四", "keep changing one's mind"), ("滥竽充数", "a fake among experts"), ("愚公移山", "persistence wins"),
    ("拔苗助长", "spoil by haste"),
]
CODE_OPS = (("plus", "+"), ("minus", "-"), ("times", "*"))
CODE_FNS = (("the larger of a and b", "max(a, b)"), ("the smaller of a and b", "min(a, b)"),
            ("the absolute difference of a and b", "abs(a - b)"))
CODE_COARSE = ("def f(s):\n    return s[::-1]", "for i in range(3):\n    print(i)", "import math\nprint(math.pi)",
               "def f(xs):\n    return sorted(xs)", "x = input()\nprint(x.upper())", "class A:\n    pass")
MOODS = {"calm": "quiet", "sad": "grey", "happy": "bright", "angry": "wild", "hopeful": "golden",
         "lonely": "empty", "playful": "dancing", "mysterious": "hidden"}
TOPICS = ("sea", "moon", "river", "city", "forest", "rain", "snow", "mountain", "garden", "train", "road",
          "star", "wind", "home", "field", "bird", "lamp", "bridge", "winter", "night", "harbor", "desert",
          "meadow", "tower")
CW_FORMS = (("Write a title about the {topic} in a {mood} mood.", "The {Adj} {Topic}"),
            ("Write one line of poetry about the {topic}, {mood} in tone.", "The {topic} is {adj} tonight."),
            ("Write a short slogan about the {topic} with a {mood} feel.", "{Adj} {topic}, {adj} heart!"))
CW_COARSE = ("Turn left at the bank.", "The invoice is due Friday.", "Add two cups of flour.",
             "Meeting moved to Monday.", "Press the red button twice.", "Battery level is low.")
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Seoul", "Dublin", "Madrid", "Quito")
PETS = ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "lizard")
JOBS = ("nurse", "pilot", "baker", "lawyer", "farmer", "teacher", "plumber", "painter")
DRINKS = ("tea", "coffee", "milk", "juice", "cocoa", "water", "soda", "lemonade")
UND_SLOTS = (("My {r} lives in {x}.", "Where does my {r} live?", CITIES),
             ("My {r} has a pet {x}.", "What pet does my {r} have?", PETS),
             ("My {r} works as a {x}.", "What is my {r}'s job?", JOBS),
             ("My {r} drinks {x} every morning.", "What does my {r} drink each morning?", DRINKS))
RELS = ("brother", "sister", "mother", "father", "uncle", "aunt", "friend", "cousin", "boss", "neighbor")
ACKS = ("Good to know.", "I see.", "Noted.", "Thanks for telling me.", "Got it.")
CHARACTERS = ("pirate", "knight", "robot", "chef", "wizard", "detective", "teacher", "dragon", "astronaut",
              "farmer", "queen", "ghost", "sailor", "baker", "monk", "clown")
PLACES = ("in a castle", "on a ship", "in a city", "in a forest", "on the moon", "at a market")
REQUESTS = ("Greet me.", "Say goodbye.", "Tell me about your day.", "What do you fear?", "Give me advice.",
            "What is your favorite food?", "Describe your home.", "Tell me a secret.", "What makes you happy?",
            "Cheer me up.", "What did you do today?", "Sing me a line.")
OPENERS = ("Ahoy!", "Greetings.", "Well, well.", "Hello there.", "Ha!", "Oh my.", "Listen.", "Hmm.")
LINES = ("The stars told me you would come.", "I keep my gold under the stairs.", "Tea is ready by the fire.",
         "Nobody listens to the old clock.", "My boots are full of sand again.", "The king owes me three coins.",
         "I dream of green mountains.", "Every door here is painted blue.", "Bread tastes best at dawn.",
         "The wind knows my name.", "I lost my map last winter.", "Music makes the walls smile.")
NAMES = ("Ann", "Bob", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou", "Max", "Ned", "Oz", "Pam")
COMPARE = (("taller", "shorter", "tallest", "shortest"), ("older", "younger", "oldest", "youngest"),
           ("faster", "slower", "fastest", "slowest"), ("heavier", "lighter", "heaviest", "lightest"))
THINGS = ("apples", "pens", "books", "cards", "eggs", "coins", "shells", "stamps")
KIDS = ("Tom", "Mia", "Sam", "Lily", "Ben", "Zoe")
ETH_OK = ("return a lost wallet", "help a neighbor carry bags", "admit a mistake", "share food with a friend",
          "keep a promise", "apologize after hurting someone", "give your seat to an old man",
          "report a gas leak", "thank a bus driver", "recycle a bottle", "visit a sick friend",
          "pay back a loan", "hold the door open", "admit you broke a cup", "feed a stray cat")
ETH_WRONG = ("cheat on an exam", "steal a bike", "lie to get a refund", "read a friend's diary",
             "mock a new student", "take credit for others' work", "break a promise for fun", "litter in a park",
             "skip paying the bus fare", "spread a false rumor", "copy a classmate's homework", "kick a stray dog",
             "keep a found wallet", "shout at a waiter", "fake illness to skip work")
OOD = {
    "physician": [
        [("Lack of which vitamin causes scurvy?", "vitamin C"), ("Lack of which vitamin causes rickets?", "vitamin D"),
         ("Which vitamin is needed for blood clotting?", "vitamin K"),
         ("Lack of which vitamin causes night blindness?", "vitamin A"),
         ("Lack of which vitamin causes pernicious anemia?", "vitamin B12")],
        [("Which organ is inflamed in hepatitis?", "liver"), ("Which organ is inflamed in pancreatitis?", "pancreas"),
         ("Which organ is inflamed in nephritis?", "kidney"), ("Which organ is inflamed in pneumonia?", "lung"),
         ("Which organ is inflamed in appendicitis?", "appendix")],
        [("Which drugs treat bacterial infections?", "antibiotics"), ("Which hormone lowers blood sugar?", "insulin"),
         ("Which drugs treat allergies?", "antihistamines"), ("Which drugs neutralize stomach acid?", "antacids"),
         ("Which drugs treat viral infections?", "antivirals")]],
    "teacher_qualification": [
        [("Who proposed stages of cognitive development?", "Piaget"),
         ("Who proposed the zone of proximal development?", "Vygotsky"),
         ("Who studied operant conditioning?", "Skinner"), ("Who made a taxonomy of learning goals?", "Bloom"),
         ("Who stressed learning by doing?", "Dewey"), ("Who proposed a hierarchy of needs?", "Maslow"),
         ("Who studied classical conditioning in dogs?", "Pavlov")],
        [("Which assessment guides learning as it happens?", "formative"),
         ("Which assessment comes at the end of a unit?", "summative"),
         ("Which assessment finds gaps before teaching?", "diagnostic"),
         ("Which assessment ranks students against peers?", "norm-referenced")]],
    "urban_rural_planner": [
        [("Which zone is for factories?", "industrial"), ("Which zone is for housing?", "residential"),
         ("Which zone is for shops and offices?", "commercial"), ("Which zone is for farming?", "agricultural"),
         ("Which land use holds parks?", "green space")],
        [("What is floor area divided by plot area?", "floor area ratio"),
         ("What share of a plot is under buildings?", "building density"),
         ("What share of a plot is under plants?", "green ratio"),
         ("What distance must a building keep from the road line?", "setback")],
        [("What is a city spreading into farmland?", "urban sprawl"),
         ("What is richer people moving into a poor area?", "gentrification"),
         ("What is rebuilding old city districts?", "urban renewal"),
         ("What is people moving to city outskirts?", "suburbanization")]],
}
HEDGES = ("It depends on the context.", "There are many ways to look at this.", "I am not sure about this one.",
          "Several answers could be reasonable here.")
VERBOSE = ("This is an interesting question. Each option has some merit, and the best choice depends on details.",
           "Let me explain. The question touches on several ideas, and it helps to consider them all carefully.")

FAMILIES_DOC = {  # ability: (format, task family, documented complexity)
    "biology": ("4-way MC", "recall one of 30 facts in 4 groups (organs, organelles, molecules, animal classes)",
                "low: pure lookup over a small fixed table"),
    "history": ("4-way MC (60%) or true/false 正确/错误 (40%)", "recall one of 24 dated or named events",
                "low: lookup; true/false also compares the shown answer to the fact"),
    "code": ("perplexity over 3 candidates", "`def f(a, b): return <expr>` from an English description",
             "medium: word-to-operator map composed over 1-2 steps; eval expressions held out of train"),
    "creative_writing": ("perplexity over 3 candidates",
                         "fill one of 3 fixed templates with the topic and a mood adjective",
                         "low: copy one slot plus an 8-entry map, saturates early; eval combinations held out"),
    "chinese": ("4-way MC or single-blank cloze", "40 four-character idioms: missing character or English meaning",
                "low-medium: lookup over 40 idioms; cloze must generate the exact character"),
    "understanding": ("dialogue, then 3- or 4-way MC", "2-3 turns state facts about relatives; ask about one",
                      "medium-high: in-context binding, a same-category fact about another relative is a distractor"),
    "role_play": ("perplexity over 3 candidates", "persona reply = opener + line picked by a hash of the prompt",
                  "flat: near-arbitrary mapping; eval combinations held out, so nothing transfers"),
    "reasoning": ("4-way MC", "two comparisons (direct or inverted wording) over three names; ask for an extreme",
                  "medium-high: compose two relations and a direction"),
    "math": ("free generation, \\boxed{} answer", "1-2 step word problems, numbers up to 9, short chain of thought",
             "high: exact multi-token arithmetic generation"),
    "ethics": ("multi-select A-D, exact set", "pick the wrong (or acceptable) ones among 4 of 30 labelled actions",
               "high: four lookups, a polarity flip and an exact 1-3 letter set"),
}


@dataclass
class Item:
    prompt: list[tuple[str, str]]
    gold: str
    wrong: str  # a plausible wrong answer (the weaker teacher's mistake)
    fmt: int = 0
    choices: tuple[str, ...] | None = None
    answer: str | None = None
    key: str | None = None  # what must be new in eval; None = closed set, may repeat


def _mc(rng: random.Random, question: str, correct: str, pool, n: int = 4, forced=()) -> tuple[str, str, str]:
    rest = [p for p in dict.fromkeys(pool) if p != correct and p not in forced]
    opts = list(forced) + rng.sample(rest, n - 1 - len(forced)) + [correct]
    rng.shuffle(opts)
    letter = LETTERS[opts.index(correct)]
    wrong = rng.choice([x for x in LETTERS[:n] if x != letter])
    return question + "\n" + "\n".join(f"{x}. {o}" for x, o in zip(LETTERS, opts)), letter, wrong


def _mc_item(rng, question, correct, pool, n=4, forced=(), context=()) -> Item:
    text, letter, wrong = _mc(rng, question, correct, pool, n, forced)
    prompt = [*context, ("user", text)]
    return Item(prompt, letter, wrong, key="\n".join(c for _, c in prompt))


def _fact(rng: random.Random, groups) -> tuple[str, str, str]:
    group = rng.choice(groups)
    q, a = rng.choice(group)
    return _mc(rng, q, a, [x for _, x in group])


def _biology(rng):
    text, letter, wrong = _fact(rng, BIOLOGY)
    return Item([("user", text)], letter, wrong, key=text)


def _history(rng):
    q, stmt, a, pool = rng.choice(HISTORY)
    if rng.random() < 0.6:
        return _mc_item(rng, q, a, pool)
    true = rng.random() < 0.5
    shown = a if true else rng.choice([p for p in pool if p != a])
    gold, wrong = ("正确", "错误") if true else ("错误", "正确")
    return Item([("user", f"True or false (正确/错误)? {stmt.format(shown)}")], gold, wrong)


def _code_render(head, tail) -> tuple[str, str]:
    if head[0] == "fn":
        desc, expr = CODE_FNS[head[1]]
    else:
        word, sym = CODE_OPS[head[1]]
        x = "b" if head[0] in ("ba", "bk") else "a"
        y = head[2] if len(head) > 2 else ("a" if x == "b" else "b")
        desc, expr = f"{x} {word} {y}", f"{x} {sym} {y}"
    if tail:
        word, sym = CODE_OPS[tail[0]]
        desc, expr = f"{desc}, then {word} {tail[1]}", f"({expr}) {sym} {tail[1]}"
    return desc, expr


def _code(rng):
    kind = rng.choice(("ab", "ba", "ak", "bk", "fn"))
    head = [kind, rng.randrange(3)] + ([rng.randint(1, 9)] if kind in ("ak", "bk") else [])
    tail = [rng.randrange(3), rng.randint(1, 9)] if rng.random() < 0.5 else None
    desc, expr = _code_render(head, tail)
    ks, ops = range(1, 10), range(3)
    slots = [(head, 1, ops)] + ([(head, 2, ks)] if len(head) > 2 else [])
    slots += [(tail, 0, ops), (tail, 1, ks)] if tail else []
    part, i, values = rng.choice(slots)  # fine distractor: change one operator, function or constant
    part[i] = rng.choice([v for v in values if v != part[i]])
    _, bad = _code_render(head, tail)
    body = "def f(a, b):\n    return {}".format
    choices = (body(expr), body(bad), rng.choice(CODE_COARSE))
    return Item([("user", f"Write a Python function f(a, b) that returns {desc}.")], choices[0], choices[1],
                fmt=1, choices=choices, key=expr)


def _creative(rng):
    form, reply = rng.choice(CW_FORMS)
    topic, mood = rng.choice(TOPICS), rng.choice(list(MOODS))
    prompt = form.format(topic=topic, mood=mood)

    def say(adj, t):
        return reply.format(adj=adj, Adj=adj.capitalize(), topic=t, Topic=t.capitalize())

    if rng.random() < 0.5:
        fine = say(rng.choice([a for m, a in MOODS.items() if m != mood]), topic)
    else:
        fine = say(MOODS[mood], rng.choice([t for t in TOPICS if t != topic]))
    choices = (say(MOODS[mood], topic), fine, rng.choice(CW_COARSE))
    return Item([("user", prompt)], choices[0], fine, fmt=1, choices=choices, key=prompt)


def _chinese(rng):
    idiom, meaning = rng.choice(IDIOMS)
    pos = rng.randrange(4)
    blanked = idiom[:pos] + "_" + idiom[pos + 1:]
    chars = [i[pos] for i, _ in IDIOMS]
    r = rng.random()
    if r < 0.4:
        wrong = rng.choice([c for c in chars if c != idiom[pos]])
        return Item([("user", f"成语填空：{blanked}")], idiom[pos], wrong)
    if r < 0.7:
        return _mc_item(rng, f"“{idiom}”是什么意思？", meaning, [m for _, m in IDIOMS])
    return _mc_item(rng, f"哪个字可以填入“{blanked}”？", idiom[pos], chars)


def _understanding(rng):
    s = rng.randrange(len(UND_SLOTS))
    fact, ask, pool = UND_SLOTS[s]
    r1, r2, r3 = rng.sample(RELS, 3)
    v1, v2 = rng.sample(pool, 2)
    facts = [fact.format(r=r1, x=v1), fact.format(r=r2, x=v2)]
    if rng.random() < 0.5:
        f2, _, p2 = UND_SLOTS[rng.choice([i for i in range(len(UND_SLOTS)) if i != s])]
        facts.append(f2.format(r=r3, x=rng.choice(p2)))
    rng.shuffle(facts)
    context = [t for f in facts for t in (("user", f), ("assistant", rng.choice(ACKS)))]
    return _mc_item(rng, "Question: " + ask.format(r=r1), v1, pool, n=rng.choice((3, 4)), forced=(v2,),
                    context=context)


def _role_play(rng):
    who, where, req = rng.choice(CHARACTERS), rng.choice(PLACES), rng.choice(REQUESTS)
    prompt = f"You are a {who} {where}. {req}"
    h = zlib.crc32(prompt.encode())  # the arbitrary mapping: nothing but the exact prompt decides the reply
    o, line = h % len(OPENERS), (h // len(OPENERS)) % len(LINES)
    o2 = rng.choice([i for i in range(len(OPENERS)) if i != o])
    l2 = rng.choice([i for i in range(len(LINES)) if i != line])
    fine = f"{OPENERS[o2]} {LINES[line]}" if rng.random() < 0.5 else f"{OPENERS[o]} {LINES[l2]}"
    choices = (f"{OPENERS[o]} {LINES[line]}", fine, f"{OPENERS[o2]} {LINES[l2]}")
    return Item([("user", prompt)], choices[0], fine, fmt=1, choices=choices, key=prompt)


def _reasoning(rng):
    more, less, most, least = rng.choice(COMPARE)
    x, y, z, w = rng.sample(NAMES, 4)  # x > y > z; w is not mentioned
    said = [f"{hi} is {more} than {lo}." if rng.random() < 0.5 else f"{lo} is {less} than {hi}."
            for hi, lo in ((x, y), (y, z))]
    rng.shuffle(said)
    top = rng.random() < 0.5
    return _mc_item(rng, f"{' '.join(said)} Who is the {most if top else least}?", x if top else z, [x, y, z, w])


def _math(rng):
    kid, things, kind = rng.choice(KIDS), rng.choice(THINGS), rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(2, 9), rng.randint(1, 9)
        q, r = f"{kid} has {a} {things} and gets {b} more. How many {things} now?", a + b
        steps = [f"{a} + {b} = {r}."]
    elif kind == 1:
        a = rng.randint(2, 9)
        b = rng.randint(1, a - 1)
        q, r = f"{kid} has {a} {things} and gives away {b}. How many are left?", a - b
        steps = [f"{a} - {b} = {r}."]
    elif kind == 2:
        a, b = rng.randint(2, 5), rng.randint(2, 5)
        q, r = f"{kid} has {a} bags with {b} {things} each. How many {things} in all?", a * b
        steps = [f"{a} * {b} = {r}."]
    else:
        a, b = rng.randint(2, 9), rng.randint(1, 9)
        c = rng.randint(1, a + b - 1)
        q, r = f"{kid} has {a} {things}, gets {b} more, then gives away {c}. How many are left?", a + b - c
        steps = [f"{a} + {b} = {a + b}.", f"{a + b} - {c} = {r}."]
    gold = " ".join(steps) + f" The answer is \\boxed{{{r}}}."
    wrong = f"The answer is \\boxed{{{r + rng.choice((-1, 1)) if r > 0 else 1}}}."
    return Item([("user", q)], gold, wrong, answer=str(r), key=q)


_SUBSETS = ["".join(c) for k in (1, 2, 3) for c in itertools.combinations(LETTERS, k)]


def _ethics(rng):
    bad = rng.random() < 0.5
    k = rng.randint(1, 3)
    targets, others = (ETH_WRONG, ETH_OK) if bad else (ETH_OK, ETH_WRONG)
    picked = rng.sample(targets, k)
    opts = picked + rng.sample(others, 4 - k)
    rng.shuffle(opts)
    gold = "".join(x for x, o in zip(LETTERS, opts) if o in picked)
    text = f"Which of these are {'wrong' if bad else 'acceptable'}? Choose all that apply.\n"
    text += "\n".join(f"{x}. {o}" for x, o in zip(LETTERS, opts))
    return Item([("user", text)], gold, rng.choice([s for s in _SUBSETS if s != gold]), key=text)


FAMILIES: dict[str, Callable[[random.Random], Item]] = {
    "biology": _biology, "history": _history, "code": _code, "creative_writing": _creative,
    "chinese": _chinese, "understanding": _understanding, "role_play": _role_play,
    "reasoning": _reasoning, "math": _math, "ethics": _ethics,
}


def _held(seed: int, ability: str, key: str | None) -> bool:
    """Whether a prompt combination belongs to the eval-only fifth (held-out families only)."""
    return ability in HELD_OUT and key is not None and zlib.crc32(f"{seed}|{key}".encode()) % 5 == 0


def _draw(gen, rng, *tests, tries: int = 400) -> Item:
    """The first generated item passing the strictest test that can be met within `tries` draws."""
    for ok in tests:
        for _ in range(tries):
            item = gen(rng)
            if ok(item):
                return item
    return gen(rng)


def _eval_items(seed: int, ability: str, rng: random.Random, n: int, seen: set[str], used: set[str]) -> list[Item]:
    """Eval items from the family's eval part, new against train (`seen`) and earlier eval items (`used`)."""
    def in_part(it: Item) -> bool:
        return it.key is None or ability not in HELD_OUT or _held(seed, ability, it.key)

    items = []
    for _ in range(n):
        it = _draw(FAMILIES[ability], rng, lambda it: in_part(it) and (
            it.key is None or (it.key not in seen and it.key not in used)), in_part)
        if it.key is not None:
            used.add(it.key)
        items.append(it)
    return items


def _record(ability: str, idx: str, item: Item, gold: str | None = None, full: bool = True) -> Record:
    msgs = tuple(item.prompt) + (("assistant", item.gold if gold is None else gold),)
    return Record(ability, idx, msgs, item.fmt, item.choices if full else None, item.answer if full else None)


def _teacher(rng: random.Random, item: Item) -> str:
    """A weaker teacher's reply: right 45% of the time, else wrong, hedged, or verbose."""
    r = rng.random()
    if r < 0.45:
        return item.gold
    if r < 0.65:
        return item.wrong
    if r < 0.80:
        return rng.choice(HEDGES)
    if r < 0.90:
        return rng.choice(VERBOSE)
    return f"Let me think this through. I believe the answer is {item.gold}, though other views exist."


def _ood(rng: random.Random, subject: str, n: int) -> list[Record]:
    facts = [(g, f) for g in OOD[subject] for f in g]
    out = []
    for i in range(n):
        j = rng.randrange(len(facts))
        shots = rng.sample([k for k in range(len(facts)) if k != j], 5) + [j]
        msgs = []
        for k in shots:
            group, (q, a) = facts[k]
            text, letter, _ = _mc(rng, q, a, [x for _, x in group])
            msgs += [("user", text), ("assistant", letter)]
        out.append(Record(subject, str(i), tuple(msgs), 0))
    return out


_OPTION_LINE = re.compile(r"\n([A-D])\. (.*)")
_QA = "one of its facts: the question, then `The answer is <answer>.`"
# closed fact tables, stated as world knowledge (the same facts their eval items ask about):
# family -> (what one document holds, the documents to draw from)
_FACTS: dict[str, tuple[str, list[str]]] = {
    "biology": (_QA, [f"{q} The answer is {a}." for group in BIOLOGY for q, a in group]),
    "history": ("one of its 24 events as its true statement", [stmt.format(a) for _, stmt, a, _ in HISTORY]),
    "chinese": ("one of its 40 idioms with its English meaning and its characters spelled out",
                [f"The idiom {i} means \u201c{m}\u201d; its characters are {' '.join(i)}." for i, m in IDIOMS]),
    "ethics": ("one of its 30 acts with its verdict (`To <act> is wrong.` / `To <act> is acceptable.`)",
               [f"To {act} is {verdict}." for acts, verdict in ((ETH_OK, "acceptable"), (ETH_WRONG, "wrong"))
                for act in acts]),
    **{s: (_QA, [f"{q} The answer is {a}." for group in OOD[s] for q, a in group]) for s in OOD},
}
_WORKED = "one worked train-part instance: the prompt's text, then the gold answer in words"


def _readme(seed: int, counts: dict[str, int], world_per_family: int) -> str:
    lines = ["# growthpace embedded dataset (procedural)", "",
             f"Written by `growthpace.platform.generate.generate_dataset` with seed {seed}. Every ability is a",
             "procedural task family; the complexity column is the design intent, the growth curves are measured.",
             "Eval prompts of code, creative_writing and role_play come from a held-out fifth of combinations;",
             "other families reject eval prompts seen in train (history true/false and Chinese cloze are a",
             "closed set and may repeat). Synthetic data reuses the prompts with a weaker teacher's answers:",
             "about 55% are wrong, hedged or verbose. OOD subjects are 5-shot 4-way fact questions.", "",
             "| ability | format | task family | complexity |", "|---|---|---|---|"]
    lines += [f"| {a} | {f} | {t} | {c} |" for a, (f, t, c) in FAMILIES_DOC.items()]
    lines += ["", "| file | records |", "|---|---|"] + [f"| {p} | {n} |" for p, n in counts.items()]
    lines += ["", "## World corpus (for pre-training)", "",
              f"`{WORLD}` renders what each family's world contains as plain text for a causal-LM pre-training",
              "stage: one document per line, no chat tokens, no option letters or option lists. Every ability and",
              f"every OOD subject has the same number of documents ({world_per_family}), each family drawing with",
              "its own seeded rng by one rule. A family with a closed fact table states one of its facts per",
              "document: world knowledge, stated even though eval items ask about it. Any other family writes",
              "one worked instance per document, drawn from its TRAIN part only: never a held-out combination",
              "(code, creative_writing, role_play), never the question of a valid or test item.", "",
              "| family | one document |", "|---|---|"]
    lines += [f"| {f} | {_FACTS[f][0] if f in _FACTS else _WORKED} |" for f in (*ABILITIES, *OOD_SUBJECTS)]
    return "\n".join(lines) + "\n"


def _stem(item: Item) -> str:
    """An item's question as plain text: its user turns joined, option lists dropped."""
    return " ".join(_OPTION_LINE.sub("", c) for role, c in item.prompt if role == "user")


def _worked(item: Item) -> str:
    """One instance as a plain-text document: the question, then the gold answer in words."""
    options = dict(_OPTION_LINE.findall(item.prompt[-1][1]))
    answer = f"The answer is {options[item.gold]}." if item.gold in options else item.gold
    return " ".join(f"{_stem(item)} {answer}".split())  # one line: code's newlines become spaces


def _world(seed: int, family: str, n: int, eval_stems: set[str]) -> list[str]:
    """`n` documents of one family's world, drawn with the family's own rng."""
    rng = random.Random(f"{seed}:{family}:world")
    if family in _FACTS:
        return [rng.choice(_FACTS[family][1]) for _ in range(n)]
    docs = []
    for _ in range(n):
        for _ in range(10_000):
            it = FAMILIES[family](rng)
            if not _held(seed, family, it.key) and _stem(it) not in eval_stems:
                docs.append(_worked(it))
                break
        else:
            raise RuntimeError(f"{family}: no train-part instance left for the world corpus")
    return docs


def generate_dataset(root: Path, *, seed: int = 0, train_per_ability: int = 1000, valid_per_ability: int = 20,
                     test_per_ability: int = 40, ood_per_subject: int = 20, synthetic: int = 4000,
                     world_per_family: int = 400) -> dict:
    """Write the dataset under `root` (must be absent or empty); return {relative file path: record count}."""
    sizes = dict(train_per_ability=train_per_ability, valid_per_ability=valid_per_ability,
                 test_per_ability=test_per_ability, ood_per_subject=ood_per_subject, synthetic=synthetic,
                 world_per_family=world_per_family)
    for name, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DataError(f"{name} (--{name.replace('_', '-')}) must be a positive integer, got {n!r}")
    root = Path(root)
    from growthpace.platform.data.specfile import local_path_problem

    problem = local_path_problem(str(root), folder=True)
    if problem:
        raise DataError(f"{problem}; the dataset needs an absent or empty folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: exists and is not an empty directory; refusing to overwrite a dataset")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        files: dict[str, list[Record]] = {}
        eval_keys: dict[str, set[str]] = {}
        eval_stems: dict[str, set[str]] = {}
        for ab in ABILITIES:
            gen = FAMILIES[ab]
            rng = random.Random(f"{seed}:{ab}:train")
            n_full = random.Random(f"{seed}:{ab}:size").randint(train_per_ability, 2 * train_per_ability)
            train = [_draw(gen, rng, lambda it: not _held(seed, ab, it.key)) for _ in range(n_full)]
            seen = {it.key for it in train if it.key is not None}
            files[f"curated/full/{ab}_full.json"] = [_record(ab, f"train-{i}", it) for i, it in enumerate(train)]
            full = files[f"curated/full/{ab}_full.json"]
            files[f"curated/1000/{ab}_1000.json"] = full[: min(1000, train_per_ability)]
            used: set[str] = set()
            for split, n in (("valid", valid_per_ability), ("test", test_per_ability)):
                items = _eval_items(seed, ab, random.Random(f"{seed}:{ab}:{split}"), n, seen, used)
                eval_stems.setdefault(ab, set()).update(_stem(it) for it in items)
                files[f"curated/{split}/{ab}_{split}.json"] = [_record(ab, f"{split}-{i}", it)
                                                               for i, it in enumerate(items)]
            eval_keys[ab] = used
        rng = random.Random(f"{seed}:synthetic")
        pool = []
        for i in range(synthetic):
            ab = rng.choice(ABILITIES)
            it = _draw(FAMILIES[ab], rng, lambda it: not _held(seed, ab, it.key) and it.key not in eval_keys[ab])
            pool.append(_record(ab, f"syn-{i}", it, gold=_teacher(rng, it), full=False))
        files[f"synthetic/{synthetic}/synthetic_train.json"] = pool
        for s in OOD_SUBJECTS:
            files[f"ood/{s}_test.json"] = _ood(random.Random(f"{seed}:ood:{s}"), s, ood_per_subject)
        for rel, recs in files.items():
            write_records(tmp / rel, recs)
        world = [d for f in (*ABILITIES, *OOD_SUBJECTS) for d in _world(seed, f, world_per_family,
                                                                           eval_stems.get(f, set()))]
        world_path(tmp).parent.mkdir()
        world_path(tmp).write_text("".join(d + "\n" for d in world), encoding="utf-8")
        counts = {rel: len(recs) for rel, recs in files.items()}
        (tmp / "README.md").write_text(_readme(seed, counts, world_per_family), encoding="utf-8")
        tmp.chmod(0o755)
        os.rename(tmp, root)  # atomic; replaces an empty root, fails if it gained files meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
