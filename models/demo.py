"""The offline `demo` corpus: the same intents, with drawn names and values, rendered in Python,
Bash and SQL. The tiny LM (models/tiny.py) learns to follow a language tag on all three;
DDPT's task is Python under a vague prompt. A fifth of the (intent, name) combinations are held
out of training in every language, and the validation and test pairs use only those.
"""
import random
import zlib

INTENTS = [  # (instruction, python, bash, sql); {n} a name, {v} a number, {w} {u} words
    ("sort {n}", "{n}.sort()", "sort {n}.txt", "SELECT * FROM {n} ORDER BY 1;"),
    ("show the first {v} items of {n}", "print({n}[:{v}])", "head -n {v} {n}.txt", "SELECT * FROM {n} LIMIT {v};"),
    ("show the last {v} items of {n}", "print({n}[-{v}:])", "tail -n {v} {n}.txt",
     "SELECT * FROM {n} ORDER BY id DESC LIMIT {v};"),
    ("remove duplicates from {n}", "{n} = list(set({n}))", "sort -u {n}.txt", "SELECT DISTINCT * FROM {n};"),
    ("count the items in {n}", "len({n})", "wc -l < {n}.txt", "SELECT COUNT(*) FROM {n};"),
    ("reverse {n}", "{n}.reverse()", "tac {n}.txt", "SELECT * FROM {n} ORDER BY id DESC;"),
    ("find {w} in {n}", "[x for x in {n} if '{w}' in x]", "grep '{w}' {n}.txt",
     "SELECT * FROM {n} WHERE name LIKE '%{w}%';"),
    ("replace {w} with {u} in {n}", "{n} = [x.replace('{w}', '{u}') for x in {n}]", "sed -i 's/{w}/{u}/g' {n}.txt",
     "UPDATE {n} SET name = REPLACE(name, '{w}', '{u}');"),
    ("sum the values of {n}", "sum({n})", "paste -sd+ {n}.txt | bc", "SELECT SUM(value) FROM {n};"),
    ("delete {n}", "del {n}", "rm {n}.txt", "DROP TABLE {n};"),
    ("add {v} to every item of {n}", "{n} = [x + {v} for x in {n}]", "awk '{{print $1 + {v}}}' {n}.txt",
     "UPDATE {n} SET value = value + {v};"),
    ("make {n} upper case", "{n} = [x.upper() for x in {n}]", "tr a-z A-Z < {n}.txt", "SELECT UPPER(name) FROM {n};"),
]
NUMERIC = {i for i, intent in enumerate(INTENTS) if intent[0].startswith(("sum", "add"))}  # run on numbers
NAMES = ("users orders items logs words prices scores names files lines rows records values tasks events "
         "emails cities books songs notes jobs posts tags votes links").split()
WORDS = "red blue cat dog sun tea map key box fox ink owl".split()
TAGS = {  # four wordings of each language tag; the prompt DDPT starts from names no language
    "python": ["Python:", "In Python,", "Write Python code to", "# python"],
    "bash": ["Bash:", "In Bash,", "Write a shell command to", "# bash"],
    "sql": ["SQL:", "In SQL,", "Write an SQL query to", "-- sql"],
}
MIX = {"bash": 0.45, "sql": 0.30, "python": 0.25}  # pre-training mix: Python is the rarest


def held_out(i, name):
    """A fifth of the (intent, name) combinations never appear in training, in any language."""
    return zlib.crc32(f"{i}:{name}".encode()) % 5 == 0


def _render(rng, held_out_only):
    while True:
        i, name = rng.randrange(len(INTENTS)), rng.choice(NAMES)
        if held_out(i, name) == held_out_only:
            break
    w, u = rng.sample(WORDS, 2)
    slots = dict(n=name, v=rng.randint(2, 20), w=w, u=u)
    nl, *code = (t.format(**slots) for t in INTENTS[i])
    return nl, dict(zip(("python", "bash", "sql"), code), combo=(i, name))


def splits(seed=0, n_train=2000, n_valid=100, n_test=200):
    """Python pairs for DDPT; valid and test use only held-out (intent, name) combinations."""
    rng = random.Random(seed)
    make = lambda k, held: [{"nl": nl, "code": code["python"], "combo": code["combo"],
                             "fixture": "numbers" if code["combo"][0] in NUMERIC else "words"}
                            for nl, code in (_render(rng, held) for _ in range(k))]
    return {"train": make(n_train, False), "valid": make(n_valid, True), "test": make(n_test, True)}


def pretraining(n=20_000, seed=0):
    """(language tag, instruction, code) in all three languages, training combinations only."""
    rng, out = random.Random(seed + 1), []
    langs, weights = list(MIX), list(MIX.values())
    for _ in range(n):
        lang = rng.choices(langs, weights)[0]
        nl, code = _render(rng, False)
        out.append((rng.choice(TAGS[lang]), nl, code[lang]))
    return out
