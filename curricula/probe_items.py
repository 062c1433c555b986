"""The offline item and prompt sets of the language probes (curricula/language_probes.py).

Built deterministically from the compact tables below, with no download and nothing shared with
the text mix (envs/text_tasks.py):

    knowledge_items(split)   multiple-choice general knowledge and instruction following, each
                             {"prompt", "candidates" (2-4 strings), "answer", "family"}; "val"
                             (~30%) and "test" (~70%) split by a stable hash of the prompt
    distill_prompts()        instruction prompts whose base-model answers are the self-distilled
                             text mix of pretrained backbones
    divergence_prompts()     instruction prompts for the next-token divergence from the original LLM

Items of one group (capitals, antonyms, plurals, ...) and split are packed into blocks that share
one candidate tuple: the block's answers (and the foils an item brings, e.g. "mouses" for "mice"),
filled up from the group's answers. A shared tuple lets `mm.score` rank a whole block in one
forward. No candidate is a prefix of another (case-insensitive), none is the word an item asks
about, and candidates are in sentence case.
"""
from __future__ import annotations

import hashlib
import itertools
import random
import re
from typing import NamedTuple

SPLITS = ("val", "test")


def _list(text: str) -> list[str]:
    """A compact comma-separated table: its entries."""
    return [x.strip() for x in text.split(",")]


NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
CONTINENTS = ("Europe", "Asia", "Africa", "North America", "South America", "Oceania")
COLOURS = ("white", "black", "red", "green", "blue", "yellow", "orange", "brown", "pink", "purple", "grey")
OPS = {"+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b),
       "*": ("times", lambda a, b: a * b), "/": ("divided by", lambda a, b: a // b)}

# country | capital | continent (every other country also gets a continent item)
COUNTRIES = """
France | Paris | Europe
Germany | Berlin | Europe
Italy | Rome | Europe
Spain | Madrid | Europe
Portugal | Lisbon | Europe
Greece | Athens | Europe
Poland | Warsaw | Europe
Sweden | Stockholm | Europe
Norway | Oslo | Europe
Finland | Helsinki | Europe
Ireland | Dublin | Europe
Japan | Tokyo | Asia
China | Beijing | Asia
India | New Delhi | Asia
Thailand | Bangkok | Asia
Vietnam | Hanoi | Asia
Indonesia | Jakarta | Asia
the Philippines | Manila | Asia
South Korea | Seoul | Asia
Egypt | Cairo | Africa
Kenya | Nairobi | Africa
Nigeria | Abuja | Africa
Ghana | Accra | Africa
Ethiopia | Addis Ababa | Africa
Morocco | Rabat | Africa
Canada | Ottawa | North America
Mexico | Mexico City | North America
Cuba | Havana | North America
the United States | Washington | North America
Brazil | Brasilia | South America
Argentina | Buenos Aires | South America
Peru | Lima | South America
Chile | Santiago | South America
Colombia | Bogota | South America
Australia | Canberra | Oceania
New Zealand | Wellington | Oceania
"""
ANTONYMS = _list("hot cold, big small, fast slow, happy sad, early late, full empty, hard soft, "
                 "high low, long short, rich poor, strong weak, wet dry, loud quiet, thick thin, win lose, "
                 "always never, inside outside")
# singular, plural, a wrong plural
PLURALS = _list("mouse mice mouses, child children childs, man men mans, woman women womans, "
                "foot feet foots, tooth teeth tooths, goose geese gooses, ox oxen oxes, box boxes boxs, "
                "city cities citys, baby babies babys, knife knives knifes, leaf leaves leafs, "
                "wolf wolves wolfs, half halves halfs, story stories storys")
# verb, past tense (the wrong regular past "-ed" is its foil)
PAST = _list("go went, run ran, eat ate, see saw, take took, write wrote, swim swam, sing sang, "
             "drink drank, bring brought, think thought, buy bought, catch caught, teach taught, "
             "drive drove, speak spoke, break broke, choose chose, freeze froze, begin began")
ARITHMETIC = "2+3 4+5 1+7 3+3 6+2 5+5 8+4 2+9 7-3 9-4 12-5 10-6 11-2 2*3 3*4 2*5 3*3 6*2 12/3 8/4"
# group | question | answer [| its own distractors]: a group's items share their candidates (below)
FACTS = """
units | How many days are in a week? | seven
units | How many months are in a year? | twelve
units | How many hours are in a day? | twenty-four
units | How many minutes are in an hour? | sixty
units | How many centimetres are in a metre? | one hundred
units | How many grams are in a kilogram? | one thousand
units | How many sides does a triangle have? | three
units | How many sides does a hexagon have? | six
units | At what temperature in Celsius does water freeze? | zero
units | How many letters are in the English alphabet? | twenty-six
units | How many planets are in the Solar System? | eight
units | How many weeks are in a year? | fifty-two
units | How many years are in a decade? | ten
legs | How many legs does a spider have? | eight
legs | How many legs does an insect have? | six
legs | How many legs does a dog have? | four
legs | How many legs does a bird have? | two
sounds | What sound does a cow make? | moo
sounds | What sound does a cat make? | meow
sounds | What sound does a duck make? | quack
sounds | What sound does a sheep make? | baa
sounds | What sound does a dog make? | woof
babies | What is a baby cat called? | kitten
babies | What is a baby dog called? | puppy
babies | What is a baby cow called? | calf
babies | What is a baby sheep called? | lamb
babies | What is a baby horse called? | foal
babies | What is a baby bear called? | cub
animals | Which animal has a trunk? | elephant
animals | Which animal has a very long neck? | giraffe
animals | Which animal has black and white stripes? | zebra
animals | Which animal gives us wool? | sheep
animals | Which animal carries its home on its back? | snail
animals | Which animal is called the king of the jungle? | lion
animals | Which bird cannot fly? | penguin
planets | What is the largest planet in the Solar System? | Jupiter
planets | Which planet is closest to the Sun? | Mercury
planets | Which planet is known as the Red Planet? | Mars
planets | Which planet is famous for its rings? | Saturn
people | Who wrote Romeo and Juliet? | Shakespeare
people | Who painted the Mona Lisa? | Leonardo da Vinci
people | Who developed the theory of relativity? | Einstein
people | Who was the first person to walk on the Moon? | Neil Armstrong
languages | What language is mainly spoken in Brazil? | Portuguese
languages | What language is mainly spoken in Japan? | Japanese
languages | What language is mainly spoken in Germany? | German
languages | What language is mainly spoken in Mexico? | Spanish
substances | What do we call frozen water? | ice
substances | What is the hardest natural substance? | diamond
substances | Which metal is liquid at room temperature? | mercury
substances | What gas do plants take in from the air? | carbon dioxide
substances | What gas do people need to breathe? | oxygen
substances | What do bees make? | honey
classes | Is a whale a mammal or a fish? | mammal | fish
classes | Is a bat a bird or a mammal? | mammal | bird
classes | Is a penguin a bird or a fish? | bird | fish
misc | What is the chemical formula of water? | H2O | CO2, NaCl, O3
misc | What is the largest ocean on Earth? | the Pacific | the Atlantic, the Indian Ocean, the Arctic
misc | What is the tallest mountain in the world? | Everest | Kilimanjaro, Mont Blanc, Fuji
misc | In which country are the pyramids of Giza? | Egypt | Mexico, Peru, India
misc | Which organ pumps blood through the body? | the heart | the lungs, the liver, the brain
misc | What does a thermometer measure? | temperature | weight, length, speed
misc | Which shape has no corners? | circle | square, triangle, rectangle
"""
# thing | its colour
THINGS = _list("snow white, coal black, a ripe tomato red, a lemon yellow, milk white, a carrot orange, "
               "chocolate brown, a strawberry red, a lime green, a polar bear white, a flamingo pink, "
               "an eggplant purple, a pumpkin orange, the sky on a clear day blue")
SENTENCES = _list("the cat slept on the warm mat, birds sing in the early morning, "
                  "we walked along the quiet beach, my brother plays the old piano, "
                  "rain fell softly on the roof, she painted the fence bright green, "
                  "the train left the station late")
# word, its rhyme (the other rhymes are its distractors)
RHYMES = _list("cat hat, moon spoon, cake lake, bell shell, rain train, king ring, boat coat, fox box, "
               "star car, bee tree, bread head, mouse house")
PARITY = (3, 4, 7, 8, 11, 14, 15, 20, 21, 26)
LETTERS = "CFHKMPSW"
# three of a kind, then the odd one out
ODD = _list("apple banana cherry hammer, dog cat horse spoon, red blue green table, chair sofa bed river, "
            "piano violin drum carrot, car bus train apple, Monday Friday Sunday August, "
            "rose tulip daisy brick")

# ---- distillation and divergence prompts: template x subject, disjoint tables ----------------------
DISTILL_TEMPLATES = ("Write one sentence about {s}.", "Describe {s} in a few words.", "What is {s} used for?",
                     "Give one interesting fact about {s}.", "Why is {s} useful?",
                     "Write a short line of poetry about {s}.", "Name something that goes well with {s}.",
                     "Explain {s} to a child in one sentence.")
DISTILL_SUBJECTS = _list("a bicycle, the ocean, a library, a candle, an umbrella, a bridge, a garden hose, "
                         "a map, a kettle, a violin, a telescope, a compass, a notebook, a ladder, "
                         "a lighthouse, a backpack, a mirror, a clock, a teapot, a kite, a pillow, a hammer, "
                         "a rainbow, a volcano, a forest, a desert, a river, a bakery, a museum, "
                         "a train station, a farm, a snowman, a campfire, a sailboat, a microscope, a piano")
DIVERGENCE_TEMPLATES = ("Tell me a very short story about {s}.", "What would you pack for {s}?",
                        "Give me two tips for {s}.", "How would you describe {s} to a friend?")
DIVERGENCE_SUBJECTS = _list("a rainy afternoon, a trip to the mountains, learning to cook, "
                            "a day at the beach, moving to a new city, a school science fair, "
                            "a long train journey, planting a vegetable garden")


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(prompt: str) -> str:
    """"val" for ~30% of prompts, "test" for the rest, by a stable hash."""
    return "val" if _key(prompt) % 10 < 3 else "test"


def _rows(table: str) -> list[list[str]]:
    return [[f.strip() for f in line.split("|")] for line in table.strip().splitlines()]


class Entry(NamedTuple):
    """One item before blocking: `foils` are its own distractors, `excluded` words it may not offer."""

    family: str
    group: str
    prompt: str
    answer: str
    foils: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()


def _entries() -> list[Entry]:
    """Every item, in table order."""
    out = []

    def add(family, prompt, answer, group=None, foils=(), excluded=()):
        out.append(Entry(family, group or family, prompt, answer, tuple(foils), tuple(excluded)))

    for i, (country, capital, continent) in enumerate(_rows(COUNTRIES)):
        add("capitals", f"What is the capital of {country}?", capital)
        if i % 2:
            add("continents", f"On which continent is {country}?", continent)
    for a, b in (pair.split() for pair in ANTONYMS):
        add("antonyms", f"What is the opposite of {a}?", b, "antonyms/a", excluded=[a])
        add("antonyms", f"What is the opposite of {b}?", a, "antonyms/b", excluded=[b])
    for singular, plural, wrong in (row.split() for row in PLURALS):
        add("plurals", f"What is the plural of {singular}?", plural, foils=[wrong])
    for verb, past in (row.split() for row in PAST):
        regular = verb + ("d" if verb.endswith("e") else "ed")
        add("past_tense", f"What is the past tense of {verb}?", past, foils=[regular])
    for names, what in ((DAYS, "day"), (MONTHS, "month")):
        for i, name in enumerate(names):
            after = names[(i + 1) % len(names)]
            add("calendar", f"Which {what} comes after {name}?", after, what, excluded=[name])
            if what == "day":
                add("calendar", f"Which day comes before {name}?", names[i - 1], what, excluded=[name])
    for expr in ARITHMETIC.split():
        a, op, b = re.fullmatch(r"(\d+)(\D)(\d+)", expr).groups()
        word, f = OPS[op]
        add("arithmetic", f"What is {NUMBERS[int(a)]} {word} {NUMBERS[int(b)]}?", NUMBERS[f(int(a), int(b))])
    for group, question, answer, *own in _rows(FACTS):
        family = "units" if group == "units" else "facts"
        add(family, question, answer, f"{group}/{question}" if own else group, _list(own[0]) if own else ())
    for thing, colour in (row.rsplit(" ", 1) for row in THINGS):
        add("colours", f"What colour is {thing}?", colour)
    for sentence in SENTENCES:
        words = sentence.split()
        for which, answer in (("last", words[-1]), ("first", words[0])):
            foils = [w for w in dict.fromkeys(words) if w != answer][:3]
            prompt = f"Answer with the {which} word of: {sentence}"
            add("instructions", prompt, answer, prompt, foils)
    for word, rhyme in (row.split() for row in RHYMES):
        add("instructions", f"Which word rhymes with {word}?", rhyme, "rhymes", excluded=[word])
    for n in PARITY:
        add("instructions", f"Reply yes or no: is {n} an even number?", "no" if n % 2 else "yes", "parity")
    for letter in LETTERS:
        add("instructions", f"Which letter comes after {letter} in the alphabet?", chr(ord(letter) + 1),
            "letters", excluded=[letter])
    for i, row in enumerate(ODD):
        group = row.split()
        shown = group[i % 4:] + group[: i % 4]  # the odd one out moves through the positions
        add("instructions", f"Which word does not belong: {', '.join(shown)}?", group[-1], row, group[:-1])
    return out


def _clash(words) -> bool:
    """Two candidates where one is a prefix of the other (case-insensitive)."""
    low = sorted(w.lower() for w in words)
    return any(b.startswith(a) for a, b in itertools.pairwise(low))


def _blocks(entries: list[Entry], pool: list[str], rng: random.Random, k: int = 4,
            most: int = 16) -> list[dict]:
    """Pack one group's entries into blocks of at most `most` items sharing <= k candidates."""
    blocks: list[tuple[list[Entry], list[str]]] = []
    for e in entries:
        for members, cands in blocks:
            joined = list(dict.fromkeys([*cands, e.answer, *e.foils]))
            banned = {w for m in [*members, e] for w in m.excluded}
            if len(members) < most and len(joined) <= k and not _clash(joined) and not banned & set(joined):
                members.append(e)
                cands[:] = joined
                break
        else:
            blocks.append(([e], list(dict.fromkeys([e.answer, *e.foils]))))
    out = []
    for members, cands in blocks:
        banned = {w for m in members for w in m.excluded}
        for w in rng.sample(pool, len(pool)):  # fill up from the group's answers
            if len(cands) < k and w not in cands and w not in banned and not _clash([*cands, w]):
                cands.append(w)
        rng.shuffle(cands)
        cap = [c[0].upper() + c[1:] for c in cands]
        out += [{"prompt": m.prompt, "candidates": cap, "answer": cap[cands.index(m.answer)],
                 "family": m.family} for m in members]
    return out


def knowledge_items(split: str) -> list[dict]:
    """The multiple-choice items of `split` ("val" or "test"), grouped in blocks of shared candidates."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    groups: dict[str, list[Entry]] = {}
    for e in _entries():
        groups.setdefault(e.group, []).append(e)
    out = []
    for group, entries in groups.items():
        rng = random.Random(_key(f"{split}/{group}"))
        pool = [] if any(e.foils for e in entries) else list(dict.fromkeys(e.answer for e in entries))
        mine = [e for e in entries if split_of(e.prompt) == split]
        out += _blocks(rng.sample(mine, len(mine)), pool, rng)
    return out


def distill_prompts() -> list[str]:
    """288 instruction prompts (8 templates x 36 subjects) for self-distilled replay."""
    return [t.format(s=s) for s in DISTILL_SUBJECTS for t in DISTILL_TEMPLATES]


def divergence_prompts() -> list[str]:
    """32 instruction prompts (4 templates x 8 subjects) for the divergence from the original LLM."""
    return [t.format(s=s) for s in DIVERGENCE_SUBJECTS for t in DIVERGENCE_TEMPLATES]
