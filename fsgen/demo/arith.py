"""The "arith" benchmark: seeded multi-step arithmetic word problems in GSM8K's format.

A problem is `{"question": ..., "answer": "<steps> #### <number>"}` where every step is one
equation on the running total, e.g.

    question: "Mia has 23 pens. She buys 15 more. She gives away 8. How many pens does Mia have now?"
    answer:   "23 + 15 = 38. 38 - 8 = 30. #### 30"

Copying operands from the question is easy for any model; computing the digits of each result
(carries, borrows, products) is what separates model sizes, and errors compound over steps, so
the number of steps, the operand size and the operations are the difficulty knobs.

The "tuned" style (for proxy tuning) adds a visible sentence before the final line that restates
the result in the question's own words:
    "23 + 15 = 38. 38 - 8 = 30. Mia has 30 pens now. #### 30"
Base models never write it; a small model fine-tuned on it does, and proxy tuning measures how
far that carries over to the large model (the lm-eval task's "tuned-style" filter). Its words all
occur in the question (so every model has seen them in context), which is what lets the logit
difference of the small pair steer the large model through it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from fsgen import atomic

NAMES = [("Mia", "She"), ("Tom", "He"), ("Ann", "She"), ("Sam", "He"), ("Eva", "She"), ("Leo", "He"),
         ("Zoe", "She"), ("Max", "He")]
ITEMS = ["apples", "pens", "books", "coins", "cards", "eggs", "shells", "stamps"]
ADD_VERBS = ["buys {b} more", "finds {b} more", "gets {b} more"]
SUB_VERBS = ["gives away {b}", "loses {b}", "sells {b}"]
MUL_VERBS = ["then has {b} times as many"]

OPS = ("+", "-", "*")
STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")                 # lm-eval gsm8k "strict-match"
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")          # lm-eval gsm8k "flexible-extract"
TUNED_STYLE_RE = re.compile(r"[A-Z][a-z]+ has (\-?[0-9\.\,]+) [a-z]+ now\.")  # the tuned sentence
STEP_RE = re.compile(r"(-?\d+) ([+\-*]) (-?\d+) = (-?\d+)\.")


@dataclass
class Difficulty:
    min_steps: int = 1             # equations per problem (inclusive range)
    max_steps: int = 3
    max_start: int = 40            # the starting amount is drawn from [2, max_start]
    max_operand: int = 20          # + and - operands are drawn from [1, max_operand]
    max_factor: int = 5            # * factors are drawn from [2, max_factor]
    max_value: int = 200           # every running total stays in [1, max_value]
    ops: tuple[str, ...] = field(default=OPS)  # allowed operations, a subset of "+", "-", "*"

    def __post_init__(self):
        self.ops = tuple(self.ops)
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"Difficulty.ops must be a non-empty subset of {OPS}, got {self.ops}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.max_start < 2 or self.max_operand < 1 or self.max_factor < 2:
            raise ValueError("max_start >= 2, max_operand >= 1 and max_factor >= 2 are required")
        if self.max_value < self.max_start:
            raise ValueError(f"max_value ({self.max_value}) must be >= max_start ({self.max_start})")


def _apply(op: str, x: int, b: int) -> int:
    return x + b if op == "+" else x - b if op == "-" else x * b


def _pick_step(rng: random.Random, total: int, d: Difficulty) -> tuple[str, int] | None:
    """An operation and operand that keep the running total in [1, max_value], or None."""
    choices = []
    for op in d.ops:
        if op == "+" and total + 1 <= d.max_value:
            choices.append((op, rng.randint(1, min(d.max_operand, d.max_value - total))))
        elif op == "-" and total >= 2:  # leave at least 1: "how many ... now?" with 0 reads oddly
            choices.append((op, rng.randint(1, min(d.max_operand, total - 1))))
        elif op == "*" and 1 <= total and total * 2 <= d.max_value:
            choices.append((op, rng.randint(2, min(d.max_factor, d.max_value // total))))
    return rng.choice(choices) if choices else None


def make_problem(rng: random.Random, difficulty: Difficulty) -> dict:
    """One problem; the answer's equations are computed, so it is correct by construction."""
    d = difficulty
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    total = rng.randint(2, d.max_start)
    sentences = [f"{name} has {total} {item}."]
    steps = []
    for _ in range(rng.randint(d.min_steps, d.max_steps)):
        picked = _pick_step(rng, total, d)
        if picked is None:  # e.g. only "*" allowed and the total is already large
            break
        op, b = picked
        verbs = ADD_VERBS if op == "+" else SUB_VERBS if op == "-" else MUL_VERBS
        sentences.append(f"{pron} {rng.choice(verbs).format(b=b)}.")
        new_total = _apply(op, total, b)
        steps.append(f"{total} {op} {b} = {new_total}.")
        total = new_total
    if not steps:  # the first step is always possible (total <= max_start <= max_value)
        raise AssertionError("no step could be drawn; check the Difficulty bounds")
    sentences.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(sentences), "answer": " ".join(steps) + f" #### {total}"}


def generate_problems(n: int, seed: int, difficulty: Difficulty | None = None, **knobs) -> list[dict]:
    """`n` problems from a generator seeded with `seed`; knobs override `Difficulty` fields."""
    difficulty = difficulty or Difficulty(**knobs)
    rng = random.Random(seed)
    return [make_problem(rng, difficulty) for _ in range(n)]


# ---- answer parsing --------------------------------------------------------------------------

def _to_int(text: str) -> int | None:
    text = text.replace(",", "").rstrip(".").lstrip("$")
    try:
        return int(float(text))
    except ValueError:
        return None


def extract_strict(text: str) -> int | None:
    """The number after the first "#### " (lm-eval's strict-match), or None."""
    m = STRICT_RE.search(text)
    return _to_int(m.group(1)) if m else None


def extract_flexible(text: str) -> int | None:
    """The last number in the text (lm-eval's flexible-extract), or None."""
    matches = FLEXIBLE_RE.findall(text)
    if not matches:
        return None
    last = matches[-1]
    return _to_int(last[0] or last[1])


def extract_tuned_style(text: str) -> int | None:
    """The number in "<Name> has N <items> now." (the tuned variant's style), or None."""
    m = TUNED_STYLE_RE.search(text)
    return _to_int(m.group(1)) if m else None


def final_answer(problem: dict) -> int:
    """The gold number of a problem (its answer's "#### N")."""
    value = extract_strict(problem["answer"])
    if value is None:
        raise ValueError(f"answer has no '#### N' final line: {problem['answer']!r}")
    return value


def parse_steps(answer: str) -> list[tuple[int, str, int, int]]:
    """The equations of an answer as (x, op, b, result) tuples."""
    return [(int(x), op, int(b), int(r)) for x, op, b, r in STEP_RE.findall(answer)]


def check_problem(problem: dict) -> bool:
    """True when every equation holds, each starts from the previous result, and #### is the last."""
    steps = parse_steps(problem["answer"])
    if not steps:
        return False
    for i, (x, op, b, r) in enumerate(steps):
        if _apply(op, x, b) != r or (i > 0 and x != steps[i - 1][3]):
            return False
    return steps[-1][3] == final_answer(problem)


def to_tuned_style(problem: dict) -> dict:
    """The same problem with the tuned variant's answer: "... Mia has 30 pens now. #### 30"."""
    m = re.match(r"(\w+) has \d+ (\w+)\.", problem["question"])
    if m is None:
        raise ValueError(f"question does not start like '<Name> has N <items>.': {problem['question']!r}")
    steps, _, number = problem["answer"].rpartition(" #### ")
    name, item = m.groups()
    return {"question": problem["question"], "answer": f"{steps} {name} has {number} {item} now. #### {number}"}


def with_tuned_style_share(problems: list[dict], share: float, seed: int) -> list[dict]:
    """The problems with a seeded `share` of them (round(share · n), chosen at random) rewritten in
    the tuned style, the others unchanged and in their order.

    Base models trained on such a mix can write the tuned sentence (copying the name, the items
    and the result) but, at a small share, greedy decoding never chooses it: the style is there
    but unlikely, as a chat style is in a pretrained model's corpus. Proxy tuning then only has
    to shift the choice of style, which is what it transfers (docs/demo.md).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"tuned-style share must be in [0, 1], got {share}")
    chosen = set(random.Random(seed).sample(range(len(problems)), round(share * len(problems))))
    return [to_tuned_style(p) if i in chosen else p for i, p in enumerate(problems)]


# ---- splits on disk --------------------------------------------------------------------------

def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSON lines atomically (temp name, then rename)."""
    path = Path(path)
    atomic.write_jsonl(path, rows)
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_splits(
    out_dir: str | Path,
    n_train: int = 20000,
    n_test: int = 150,
    n_tuned: int = 4000,
    seed: int = 0,
    difficulty: Difficulty | None = None,
) -> dict[str, Path]:
    """train.jsonl, test.jsonl and tuned_train.jsonl (tuned style) under `out_dir`.

    The three splits come from independent seeds; train and tuned_train drop any question that
    is also in test, so test accuracy is never memorisation.
    """
    difficulty = difficulty or Difficulty()
    test = generate_problems(n_test, seed=seed * 3 + 1, difficulty=difficulty)
    test_questions = {p["question"] for p in test}
    train = [p for p in generate_problems(n_train, seed=seed * 3, difficulty=difficulty)
             if p["question"] not in test_questions]
    tuned = [to_tuned_style(p) for p in generate_problems(n_tuned, seed=seed * 3 + 2, difficulty=difficulty)
             if p["question"] not in test_questions]
    out_dir = Path(out_dir)
    return {
        "train": write_jsonl(train, out_dir / "train.jsonl"),
        "test": write_jsonl(test, out_dir / "test.jsonl"),
        "tuned_train": write_jsonl(tuned, out_dir / "tuned_train.jsonl"),
    }
