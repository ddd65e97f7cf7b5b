"""The demo instruction task suite: 33 small tasks generated from a seed, with short responses.

    python -m forgetting_jax.data.demo.tasks --output DIR [--seed 0]   (writes DIR/<task>.<split>.jsonl)

Kinds: arithmetic, string transforms, format conversions, list operations, lookups (fixed tables and
in-context tables), and tasks over the demo corpus's own text (naming the function a docstring
describes, naming the family of a definition). Every task draws from its own `StableRng(seed,
task)`, so the suite is identical on every machine and Python version, and adding a task changes no
other. Records are chat conversations {"id": "<task>:<split>:<i>", "task", "messages": [user,
assistant]} whose prompts are unique within a task, so train and validation never share a prompt.
"""

import argparse
import dataclasses
import functools
import json
import os
import re
from typing import Callable

from forgetting_jax.data.demo.rng import StableRng
from forgetting_jax.data.examples import encode_records
from forgetting_jax.data.records import Example
from forgetting_jax.utils.io import write_text

NUM_TRAIN = 200
NUM_VALIDATION = 50
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class CorpusMaterial:
    """Words, sentences and definitions drawn from the demo corpus, in a fixed order."""

    words: tuple[str, ...]  # lowercase alphabetic words, 4-9 letters
    sentences: tuple[str, ...]  # first sentences of docstrings, 4-14 plain words
    functions: tuple[tuple[str, str], ...]  # (first paragraph of the docstring, function name)
    definitions: tuple[tuple[str, str], ...]  # (dotted name, source family)
    snake_names: tuple[str, ...]  # function names like read_until_eof


@functools.lru_cache(maxsize=1)
def corpus_material() -> CorpusMaterial:
    from forgetting_jax.data.demo.corpus import read_demo_corpus

    words, sentences, functions, definitions, snake = {}, [], [], [], set()
    for record in read_demo_corpus():
        header, _, doc = record["text"].partition("\n\n")
        for word in re.findall(r"(?<![\w.])[a-z]{4,9}(?![\w.])", doc):
            words[word] = words.get(word, 0) + 1
        if record["source"] == "reference" or not doc:
            continue
        definitions.append((record["id"], record["source"]))
        first = re.split(r"(?<=\.)\s", doc.strip(), maxsplit=1)[0].replace("\n", " ")
        if re.fullmatch(r"[A-Za-z][A-Za-z ,']*\.", first) and 4 <= len(first.split()) <= 14:
            sentences.append(first)
        if header.startswith("def "):
            name = record["id"].rsplit(".", 1)[1]
            paragraph = " ".join(doc.strip().split("\n\n")[0].split())
            if 30 <= len(paragraph) <= 300 and name.lower() not in paragraph.lower():
                functions.append((paragraph, name))
            if re.fullmatch(r"[a-z]+(_[a-z]+){1,3}", name):
                snake.add(name)
    common = sorted(w for w, n in words.items() if n >= 3)
    return CorpusMaterial(tuple(common), tuple(sentences), tuple(functions), tuple(definitions),
                          tuple(sorted(snake)))


# Tables for the lookup tasks.
CAPITALS = dict(pair.split(":") for pair in (
    "France:Paris Germany:Berlin Italy:Rome Spain:Madrid Portugal:Lisbon Greece:Athens Poland:Warsaw "
    "Austria:Vienna Hungary:Budapest Norway:Oslo Sweden:Stockholm Finland:Helsinki Denmark:Copenhagen "
    "Ireland:Dublin Belgium:Brussels Netherlands:Amsterdam Switzerland:Bern Czechia:Prague "
    "Romania:Bucharest Bulgaria:Sofia Serbia:Belgrade Croatia:Zagreb Ukraine:Kyiv Russia:Moscow "
    "Turkey:Ankara Egypt:Cairo Kenya:Nairobi Nigeria:Abuja Ghana:Accra Morocco:Rabat Ethiopia:Addis_Ababa "
    "Japan:Tokyo China:Beijing India:New_Delhi Thailand:Bangkok Vietnam:Hanoi Indonesia:Jakarta "
    "Philippines:Manila Iran:Tehran Iraq:Baghdad Canada:Ottawa Mexico:Mexico_City Peru:Lima Chile:Santiago "
    "Argentina:Buenos_Aires Brazil:Brasilia Colombia:Bogota Australia:Canberra").split())
ELEMENTS = dict(pair.split(":") for pair in (
    "hydrogen:H helium:He lithium:Li beryllium:Be boron:B carbon:C nitrogen:N oxygen:O fluorine:F "
    "neon:Ne sodium:Na magnesium:Mg aluminium:Al silicon:Si phosphorus:P sulfur:S chlorine:Cl argon:Ar "
    "potassium:K calcium:Ca titanium:Ti chromium:Cr manganese:Mn iron:Fe cobalt:Co nickel:Ni copper:Cu "
    "zinc:Zn arsenic:As bromine:Br krypton:Kr silver:Ag tin:Sn iodine:I xenon:Xe platinum:Pt gold:Au "
    "mercury:Hg lead:Pb uranium:U").split())
ANTONYMS = dict(pair.split(":") for pair in (
    "hot:cold big:small fast:slow high:low open:closed early:late light:dark full:empty hard:soft "
    "old:new rich:poor strong:weak thick:thin wide:narrow wet:dry loud:quiet deep:shallow heavy:light "
    "long:short happy:sad true:false first:last inside:outside above:below before:after push:pull "
    "win:lose buy:sell give:take start:finish enter:exit accept:reject increase:decrease add:remove "
    "always:never friend:enemy north:south east:west minimum:maximum import:export input:output "
    "visible:hidden public:private valid:invalid local:global").split())


def _lookup(rng: StableRng, table: dict[str, str], questions: tuple[str, ...]) -> tuple[str, str]:
    key = rng.choice(sorted(table))
    question = rng.choice(questions).format(key.replace("_", " "))
    return question, table[key].replace("_", " ")


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for 0 <= n <= 999, e.g. 342 -> "three hundred forty-two"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    rest = n % 100
    return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))


def roman(n: int) -> str:
    out = ""
    for value, numeral in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                           (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + numeral, n - value
    return out


def _numbers(rng: StableRng, k: int, low: int = 0, high: int = 99) -> list[int]:
    return [rng.randint(low, high) for _ in range(k)]


Generator = Callable[[StableRng, CorpusMaterial], tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    kind: str
    generate: Generator  # (rng, corpus material) -> (prompt, response)


def _add(r, m):
    a, b = _numbers(r, 2, 0, 999)
    return f"What is {a} + {b}?", str(a + b)


def _subtract(r, m):
    a, b = sorted(_numbers(r, 2, 0, 999), reverse=True)
    return f"What is {a} - {b}?", str(a - b)


def _multiply(r, m):
    a, b = r.randint(2, 99), r.randint(2, 9)
    return f"What is {a} times {b}?", str(a * b)


def _divide(r, m):
    a, b = r.randint(2, 99), r.randint(2, 9)
    return f"What is {a * b} divided by {b}?", str(a)


def _remainder(r, m):
    a, b = r.randint(10, 999), r.randint(2, 12)
    return f"What is the remainder of {a} divided by {b}?", str(a % b)


def _larger(r, m):
    a, b = r.sample(range(1000), 2)
    return f"Which is larger, {a} or {b}?", str(max(a, b))


def _parity(r, m):
    n = r.randint(0, 9999)
    return f"Is {n} even or odd?", "even" if n % 2 == 0 else "odd"


def _digit_sum(r, m):
    n = r.randint(10, 99999)
    return f"What is the sum of the digits of {n}?", str(sum(map(int, str(n))))


def _reverse_word(r, m):
    w = r.choice(m.words)
    return f"Reverse the word: {w}", w[::-1]


def _uppercase(r, m):
    phrase = " ".join(r.sample(m.words, 3))
    return f"Write in capital letters: {phrase}", phrase.upper()


def _sort_letters(r, m):
    w = r.choice(m.words)
    return f"Sort the letters of '{w}' alphabetically.", "".join(sorted(w))


def _count_letter(r, m):
    w = r.choice(m.words)
    c = r.choice(w)
    return f"How many times does the letter '{c}' appear in '{w}'?", str(w.count(c))


def _acronym(r, m):
    ws = r.sample(m.words, r.randint(2, 5))
    return f"Give the first letter of each word, in capitals: {' '.join(ws)}", "".join(w[0] for w in ws).upper()


def _remove_vowels(r, m):
    w = r.choice(m.words)
    return f"Remove the vowels from '{w}'.", re.sub("[aeiou]", "", w) or "(nothing)"


def _word_count(r, m):
    s = r.choice(m.sentences)
    return f"How many words are in this sentence? {s}", str(len(s.split()))


def _palindrome(r, m):
    word = r.choice(m.words)
    if r.coin():
        half = word[: r.randint(2, 4)]
        word = half + (r.choice("aeiou") if r.coin() else "") + half[::-1]
    return f"Is '{word}' a palindrome? Answer yes or no.", "yes" if word == word[::-1] else "no"


def _shift_letters(r, m):
    w = r.choice(m.words)
    shifted = "".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in w)
    return f"Shift each letter of '{w}' one step forward in the alphabet.", shifted


def _to_binary(r, m):
    n = r.randint(1, 1023)
    return f"Write {n} in binary.", format(n, "b")


def _to_hex(r, m):
    n = r.randint(16, 4095)
    return f"Write {n} in hexadecimal.", format(n, "x")


def _roman(r, m):
    n = r.randint(1, 399)
    return f"Write {n} in Roman numerals.", roman(n)


def _number_words(r, m):
    n = r.randint(0, 999)
    return f"Write {n} in words.", number_words(n)


def _date_format(r, m):
    y, mo, d = r.randint(1950, 2049), r.randint(1, 12), r.randint(1, 28)
    return f"Convert the date {y}-{mo:02d}-{d:02d} to DD/MM/YYYY.", f"{d:02d}/{mo:02d}/{y}"


def _time_24h(r, m):
    hour, minute, pm = r.randint(1, 12), r.randint(0, 59), r.coin()
    h24 = hour % 12 + (12 if pm else 0)
    return f"Convert {hour}:{minute:02d} {'PM' if pm else 'AM'} to 24-hour time.", f"{h24:02d}:{minute:02d}"


def _snake_to_camel(r, m):
    name = r.choice(m.snake_names)
    first, *rest = name.split("_")
    return f"Convert {name} to camelCase.", first + "".join(part.capitalize() for part in rest)


def _kv_to_json(r, m):
    keys = r.sample(("name", "size", "color", "count", "mode", "level", "owner", "limit"), r.randint(2, 3))
    values = {k: r.randint(0, 99) if k in ("size", "count", "level", "limit") else r.choice(m.words)
              for k in keys}
    pairs = ", ".join(f"{k}={v}" for k, v in values.items())
    return f"Write as a JSON object: {pairs}", json.dumps(values)


def _sort_numbers(r, m):
    xs = _numbers(r, r.randint(3, 6))
    return f"Sort in ascending order: {', '.join(map(str, xs))}", ", ".join(map(str, sorted(xs)))


def _max_number(r, m):
    xs = _numbers(r, r.randint(3, 7))
    return f"What is the largest number in: {', '.join(map(str, xs))}?", str(max(xs))


def _capital(r, m):
    return _lookup(r, CAPITALS, (
        "What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?",
        "{}: what is its capital?", "Capital of {}?", "Tell me the capital of {}."))


def _element_symbol(r, m):
    return _lookup(r, ELEMENTS, (
        "What is the chemical symbol of {}?", "Symbol for {}?", "Which symbol stands for {}?",
        "Give the element symbol of {}.", "{}: chemical symbol?", "Write the symbol of the element {}.",
        "How is {} written in the periodic table?"))


def _antonym(r, m):
    return _lookup(r, ANTONYMS, (
        "What is the opposite of '{}'?", "Give an antonym of '{}'.", "Opposite of {}?",
        "Name the opposite of the word {}.", "{}: opposite?", "Which word means the opposite of {}?"))


def _code_lookup(r, m):
    keys = r.sample("abcdefghijklmnopqrstuvwxyz", 4)
    codes = {k: r.randint(0, 9) for k in keys}
    key = r.choice(keys)
    table = ", ".join(f"{k}={v}" for k, v in codes.items())
    return f"Codes: {table}. What is the code for {key}?", str(codes[key])


def _docstring_function(r, m):
    paragraph, name = r.choice(m.functions)
    return f"Which standard library function does this docstring describe?\n\n{paragraph}", name


def _definition_family(r, m):
    name, family = r.choice(m.definitions)
    return f"Which part of the Python standard library defines {name}?", family


TASKS: dict[str, TaskSpec] = {
    "add": TaskSpec("arithmetic", _add),
    "subtract": TaskSpec("arithmetic", _subtract),
    "multiply": TaskSpec("arithmetic", _multiply),
    "divide": TaskSpec("arithmetic", _divide),
    "remainder": TaskSpec("arithmetic", _remainder),
    "larger": TaskSpec("arithmetic", _larger),
    "parity": TaskSpec("arithmetic", _parity),
    "digit_sum": TaskSpec("arithmetic", _digit_sum),
    "reverse_word": TaskSpec("string", _reverse_word),
    "uppercase": TaskSpec("string", _uppercase),
    "sort_letters": TaskSpec("string", _sort_letters),
    "count_letter": TaskSpec("string", _count_letter),
    "acronym": TaskSpec("string", _acronym),
    "remove_vowels": TaskSpec("string", _remove_vowels),
    "word_count": TaskSpec("string", _word_count),
    "palindrome": TaskSpec("string", _palindrome),
    "shift_letters": TaskSpec("string", _shift_letters),
    "to_binary": TaskSpec("format", _to_binary),
    "to_hex": TaskSpec("format", _to_hex),
    "roman": TaskSpec("format", _roman),
    "number_words": TaskSpec("format", _number_words),
    "date_format": TaskSpec("format", _date_format),
    "time_24h": TaskSpec("format", _time_24h),
    "snake_to_camel": TaskSpec("format", _snake_to_camel),
    "kv_to_json": TaskSpec("format", _kv_to_json),
    "sort_numbers": TaskSpec("list", _sort_numbers),
    "max_number": TaskSpec("list", _max_number),
    "capital": TaskSpec("lookup", _capital),
    "element_symbol": TaskSpec("lookup", _element_symbol),
    "antonym": TaskSpec("lookup", _antonym),
    "code_lookup": TaskSpec("lookup", _code_lookup),
    "docstring_function": TaskSpec("corpus", _docstring_function),
    "definition_family": TaskSpec("corpus", _definition_family),
}


def task_names() -> list[str]:
    return list(TASKS)


def generate_task(name: str, seed: int = 0, num_train: int = NUM_TRAIN,
                  num_validation: int = NUM_VALIDATION) -> dict[str, list[dict]]:
    """{"train": [...], "validation": [...]} chat records of one task, unique prompts."""
    spec = TASKS[name]
    material = corpus_material() if spec.kind in ("string", "format", "corpus") else None
    rng = StableRng(seed, name)
    total = num_train + num_validation
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for _ in range(50 * total):
        if len(pairs) == total:
            break
        prompt, response = spec.generate(rng, material)
        if prompt not in seen:
            seen.add(prompt)
            pairs.append((prompt, response))
    if len(pairs) < total:
        raise ValueError(f"task {name!r} has only {len(pairs)} distinct prompts, {total} requested")
    out = {}
    for split, chunk in (("validation", pairs[:num_validation]), ("train", pairs[num_validation:])):
        out[split] = [{"id": f"{name}:{split}:{i}", "task": name,
                       "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
                      for i, (p, a) in enumerate(chunk)]
    return {"train": out["train"], "validation": out["validation"]}


@functools.lru_cache(maxsize=4)
def build_task_suite(seed: int = 0, num_train: int = NUM_TRAIN,
                     num_validation: int = NUM_VALIDATION) -> dict[str, dict[str, list[dict]]]:
    """task -> split ("train", "validation") -> chat records, for every task of TASKS.

    Cached: treat the result as read-only.
    """
    return {name: generate_task(name, seed, num_train, num_validation) for name in TASKS}


def task_kinds() -> dict[str, str]:
    """task -> kind (arithmetic, string, format, list, lookup, corpus)."""
    return {name: spec.kind for name, spec in TASKS.items()}


def suite_records(tasks, split: str = "train", seed: int = 0) -> list[dict]:
    """The chat records of `split` of these suite tasks, task after task (KeyError naming an
    unknown task): the demo's exact-match upstream set (matrix.upstream=demo_tasks) and the
    instruction data of an instruction-tuned demo base (pretrain.demo_tasks)."""
    unknown = [name for name in tasks if name not in TASKS]
    if unknown:
        raise KeyError(f"unknown demo task(s) {', '.join(unknown)}; tasks: {', '.join(TASKS)}")
    suite = build_task_suite(seed)
    return [record for name in tasks for record in suite[name][split]]


def load_task_examples(name: str, split: str, tokenizer, max_length: int | None = None, seed: int = 0,
                       num_train: int = NUM_TRAIN, num_validation: int = NUM_VALIDATION) -> list[Example]:
    """One task's split as chat Examples (loss on the response tokens only)."""
    if name not in TASKS:
        raise KeyError(f"unknown demo task {name!r}; tasks: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; splits: {SPLITS}")
    records = build_task_suite(seed, num_train, num_validation)[name][split]
    return encode_records(tokenizer, records, max_length, source=f"demo task {name}")


def write_task_suite(output: str, seed: int = 0, num_train: int = NUM_TRAIN,
                     num_validation: int = NUM_VALIDATION) -> list[str]:
    """Writes <output>/<task>.<split>.jsonl chat files (the scorer's chat format); returns the paths."""
    paths = []
    for name, splits in build_task_suite(seed, num_train, num_validation).items():
        for split, records in splits.items():
            path = os.path.join(output, f"{name}.{split}.jsonl")
            write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Writes the demo task suite as chat JSON lines.")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=NUM_TRAIN)
    parser.add_argument("--num_validation", type=int, default=NUM_VALIDATION)
    args = parser.parse_args(argv)
    paths = write_task_suite(args.output, args.seed, args.num_train, args.num_validation)
    print(f"wrote {len(paths)} files for {len(TASKS)} tasks to {args.output}")


if __name__ == "__main__":
    main()
