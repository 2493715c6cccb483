"""Token-level viewer (fsgen.viewer, `fsgen show`): hand-made traces whose every mark is known.

The tokenizer is a word-level one whose tokens decode to their own strings, so each expected
rendering below is written out by hand from the trace rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from fsgen.cli import main
from fsgen.trace import write_trace
from fsgen.viewer import load_job, render_job, render_page, sample_requests, use_colour
from fsgen.viewer.browser import find_chromium, screenshot
from fsgen.viewer.data import speculative_roles

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "Tom", " has", " 3", " 4", " apples", ".", "\n", ' <b>&"', "é"]
ID = {t: i for i, t in enumerate(VOCAB)}
EOS = "</s>"
SCRIPT_PROMPT = "Q: <script>alert('x')</script> & more\nA:"


def word_tokenizer(folder: Path) -> Path:
    """A tokenizer whose decode is the concatenation of the token strings (Fuse decoder)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(dict(ID), unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(str(folder))
    return folder


def rows(request_id, tokens, s1, called, rounds=None, drafted=None):
    """Trace rows of one request; intervened = token != System 1's choice (the trace's definition)."""
    n = len(tokens)
    return pd.DataFrame({
        "request_id": [request_id] * n, "position": list(range(n)),
        "token_id": [ID[t] for t in tokens], "s1_token_id": [ID[t] for t in s1],
        "s2_called": called, "intervened": [t != s for t, s in zip(tokens, s1)],
        "s1_top1_prob": [0.61 + 0.01 * i for i in range(n)], "s1_top2_prob": [0.2] * n, "s1_entropy": [1.3] * n,
        "s2_top1_prob": [0.87 if c else None for c in called], "s2_entropy": [0.4 if c else None for c in called],
        "round": rounds or [None] * n, "drafted": drafted or [False] * n,
    })


def write_job(folder: Path, tokenizer: Path, method: str, frames, generations, samples=None, k=5):
    folder.mkdir(parents=True)
    meta = {"method": method, "router": "entropy:0.5" if method == "oracle" else None, "k": k,
            "models": {"small": str(tokenizer), "large": str(tokenizer)}}
    write_trace(pd.concat(frames, ignore_index=True), folder / "trace.parquet", meta)
    (folder / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in generations))
    if samples is not None:
        (folder / "scored_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return folder


def sample(doc_id, filter_name, value):
    return {"task": "tiny", "doc_id": doc_id, "filter": filter_name, "metrics": ["exact_match"],
            "exact_match": value, "target": "4", "filtered_resps": ["4"]}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return word_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def oracle_job(tmp_path_factory, tokenizer):
    """Request 0: alone, agreed, intervened, alone, intervened, agreed (EOS after the text).
    Request 1: consulted everywhere, changed once (a newline). Request 2: not scored."""
    frames = [
        rows(0, ["Tom", " has", " 4", " apples", ".", EOS], ["Tom", " has", " 3", " apples", ' <b>&"', EOS],
             [False, True, True, False, True, True]),
        rows(1, ["Tom", " has", " 3", "\n", "é", EOS], ["Tom", " has", " 3", ".", "é", EOS], [True] * 6),
        rows(2, ["Tom"], ["Tom"], [False]),
    ]
    generations = [
        {"request_id": 0, "task": "tiny", "doc_id": 7, "prompt": "Q: Tom?\nA:", "text": "Tom has 4 apples."},
        {"request_id": 1, "task": "tiny", "doc_id": 3, "prompt": "Q: Ann?\nA:", "text": "Tom has 3\né"},
        {"request_id": 2, "task": "tiny", "doc_id": 11, "prompt": SCRIPT_PROMPT, "text": "Tom"},
    ]
    # doc 7 is right under flexible-extract (the analysis's first choice) and wrong under strict-match
    samples = [sample(7, "strict-match", 0.0), sample(7, "flexible-extract", 1.0),
               sample(3, "strict-match", 0.0), sample(3, "flexible-extract", 0.0)]
    return write_job(tmp_path_factory.mktemp("jobs") / "oracle", tokenizer, "oracle", frames, generations, samples)


# speculative, k = 3: round 0 accepts 2 drafts, then System 2's correction (System 1's rejected draft
# " 3" is its s1_token_id); round 1 accepts all 3, then an agreeing bonus; round 2 all 3, then a bonus
# that differs from System 1's argmax
SPEC_TOKENS = ["Tom", " has", " 4", " apples", ".", "\n", "é", "Tom", " has", " 3", EOS]
SPEC_S1 = ["Tom", " has", " 3", " apples", ".", "\n", "é", "Tom", " has", " 3", "."]
SPEC_ROUNDS = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
SPEC_DRAFTED = [True, True, False, True, True, True, False, True, True, True, False]
SPEC_ROLES = ["draft", "draft", "correction", "draft", "draft", "draft", "bonus", "draft", "draft", "draft", "bonus"]


@pytest.fixture(scope="module")
def speculative_job(tmp_path_factory, tokenizer):
    frames = [rows(0, SPEC_TOKENS, SPEC_S1, [True] * 11, SPEC_ROUNDS, SPEC_DRAFTED)]
    generations = [{"request_id": 0, "task": "tiny", "doc_id": 0, "prompt": "Q:", "text": "Tom has 4 apples.\néTom has 3"}]
    return write_job(tmp_path_factory.mktemp("jobs") / "spec", tokenizer, "speculative", frames, generations, k=3)


class Elements(HTMLParser):
    """Every element as (tag, attributes, text inside it, inside a request <section>)."""

    def __init__(self):
        super().__init__()
        self.found, self.open, self.sections = [], [], 0

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        if tag == "section":
            self.sections += 1
        self.open.append({"tag": tag, "attrs": dict(attrs), "text": "", "in_request": self.sections > 0})

    def handle_endtag(self, tag):
        element = self.open.pop()
        assert element["tag"] == tag, f"<{element['tag']}> closed by </{tag}>"
        if tag == "section":
            self.sections -= 1
        if self.open:
            self.open[-1]["text"] += element["text"]
        self.found.append(element)

    def handle_data(self, data):
        if self.open:
            self.open[-1]["text"] += data


def parse(page: str) -> list[dict]:
    parser = Elements()
    parser.feed(page)
    parser.close()
    assert not parser.open, "unclosed elements"
    return parser.found


def classes(element) -> set[str]:
    return set(element["attrs"].get("class", "").split())


# ---------------------------------------------------------------- the page


def test_page_highlights_each_intervened_token_once(oracle_job):
    job = load_job(oracle_job)
    page = render_page(job, [0, 1, 2], seed=0)
    elements = parse(page)
    highlighted = [e for e in elements if e["in_request"] and {"tok", "intervened"} <= classes(e)]
    # request 0 changes positions 2 and 4, request 1 position 3: one highlighted span each
    assert sorted((e["attrs"]["data-pos"], e["text"]) for e in highlighted) == [
        ("2", " 4"), ("3", "↵\n"), ("4", ".")]
    struck = [e["text"] for e in elements if e["tag"] == "s" and e["in_request"]]
    assert struck == [" 3", ' <b>&"', "."]  # System 1's choices, in page order
    tokens = [e for e in elements if e["in_request"] and "tok" in classes(e)]
    assert len(tokens) == 6 + 6 + 1
    kinds = [next(iter(classes(e) & {"intervened", "agreed", "alone"})) for e in tokens[:6]]
    assert kinds == ["alone", "agreed", "intervened", "alone", "intervened", "agreed"]
    after = [e["attrs"]["data-pos"] for e in tokens[:6] if "after-stop" in classes(e)]
    assert after == ["5"]  # the EOS is not part of the returned text
    title = highlighted[0]["attrs"]["title"]
    assert "System 2 chose ' 4'" in title and "System 1 chose ' 3' (p=0.63)" in title


def test_page_verdicts_and_escaping(oracle_job):
    page = render_page(load_job(oracle_job), [0, 1, 2], seed=0)
    sections = [e for e in parse(page) if e["tag"] == "section"]
    assert [classes(s) for s in sections] == [{"correct"}, {"wrong"}, {"unscored"}]
    assert "exact_match,flexible-extract = 1" in sections[0]["text"]
    assert "<script" not in page and "<b>&" not in page  # everything the model or task wrote is escaped
    assert SCRIPT_PROMPT in sections[2]["text"]


def test_speculative_rounds_and_rejected_draft(speculative_job):
    job = load_job(speculative_job)
    assert [t.role for t in job.request(0).tokens] == SPEC_ROLES
    elements = parse(render_page(job, [0]))
    bars = [e for e in elements if "round-bar" in classes(e) and e["in_request"]]
    assert [b["attrs"]["title"] for b in bars] == ["round 0", "round 1", "round 2"]
    struck = [e["text"] for e in elements if e["tag"] == "s" and e["in_request"]]
    assert struck == [" 3", "."]  # the rejected draft, then System 1's argmax under the last bonus
    correction = next(e for e in elements if e["attrs"].get("data-pos") == "2")
    assert "role-correction" in classes(correction) and "draft rejected" in correction["attrs"]["title"]


def test_roles_when_a_round_ends_early():
    """An agreeing undrafted row is a bonus even after fewer than k drafts (a budget-cut round)."""
    frame = pd.DataFrame({"round": [0, 0, 1, 1], "drafted": [True, False, True, False],
                          "intervened": [False, True, False, False]})
    assert speculative_roles(frame, 3) == ["draft", "correction", "draft", "bonus"]
    assert speculative_roles(frame.assign(round=[None] * 4), 3) == [None] * 4


# ---------------------------------------------------------------- terminal


PLAIN_0 = 'Tom< has>[·3=>·4] apples[·<b>&"=>.]<</s>>'
PLAIN_1 = "<Tom has 3>[.=>↵]<é><</s>>"
PLAIN_SPEC = "|<Tom has>[·3=>·4]|< apples.\né>|<Tom has 3>[.=></s>]"


def test_plain_rendering(oracle_job, speculative_job):
    text = render_job(load_job(oracle_job), [0, 1], colour=False)
    assert "\x1b" not in text
    assert PLAIN_0 in text.splitlines() and PLAIN_1 in text.splitlines()
    assert "request 0 · task tiny · doc 7 · correct (exact_match,flexible-extract = 1" in text
    assert render_job(load_job(speculative_job), [0], colour=False).endswith(PLAIN_SPEC + "\n")


def test_ansi_rendering(oracle_job):
    text = render_job(load_job(oracle_job), [0], colour=True)
    line = next(x for x in text.splitlines() if x.startswith("Tom"))
    struck, highlight, underline, dim, reset = "\x1b[2;9;31m", "\x1b[1;30;43m", "\x1b[4;34m", "\x1b[2m", "\x1b[0m"
    assert line == (f"Tom{underline} has{reset}{struck}·3{reset}{highlight}·4{reset} apples"
                    f'{struck}·<b>&"{reset}{highlight}.{reset}{dim}</s>{reset}')


def test_colour_choice(monkeypatch):
    tty = SimpleNamespace(isatty=lambda: True)
    pipe = SimpleNamespace(isatty=lambda: False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(tty) and not use_colour(pipe)
    assert use_colour(pipe, "always") and not use_colour(tty, "never")
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(tty)


def test_control_characters_never_reach_the_terminal(tmp_path, tokenizer):
    folder = write_job(tmp_path / "job", tokenizer, "oracle", [rows(0, ["Tom"], ["Tom"], [False])],
                       [{"request_id": 0, "prompt": "Q\n\x1b[31mred\x1b[0m A:", "text": "Tom"}])
    text = render_job(load_job(folder), [0], colour=False)
    assert "\x1b" not in text and "\\x1b[31mred" in text


# ---------------------------------------------------------------- fsgen show


def test_show_cli(oracle_job, tmp_path, capsys):
    assert main(["show", str(oracle_job), "--request", "0"]) == 0  # captured stdout: not a terminal
    out = capsys.readouterr().out
    assert PLAIN_0 in out.splitlines() and "\x1b" not in out
    assert main(["show", str(oracle_job / "trace.parquet"), "--html", str(tmp_path / "p.html"), "--requests", "2"]) == 0
    page = (tmp_path / "p.html").read_text()
    chosen = sample_requests([0, 1, 2], 2, 0)
    assert [e["text"].split(" ")[1] for e in parse(page) if e["tag"] == "h2"] == [str(r) for r in chosen]
    assert main(["show", str(oracle_job), "--request", "9"]) == 2
    assert "request_id 9 is not in" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing")]) == 2


def test_show_without_tokenizer_shows_ids(tmp_path, oracle_job):
    frame = rows(0, ["Tom", " 4"], ["Tom", " 3"], [False, True])
    folder = write_job(tmp_path / "job", tmp_path / "gone", "oracle", [frame], [{"request_id": 0, "text": "x"}])
    text = render_job(load_job(folder), [0], colour=False)
    assert f"⟨{ID['Tom']}⟩[⟨{ID[' 3']}⟩=>⟨{ID[' 4']}⟩]" in text and "no tokenizer found" in text


def test_sample_is_seeded_and_sorted():
    ids = list(range(40))
    first, again, other = sample_requests(ids, 5, 3), sample_requests(ids, 5, 3), sample_requests(ids, 5, 4)
    assert first == again == sorted(first) and first != other and len(set(first)) == 5
    assert sample_requests([4, 2], 5, 0) == [2, 4]


def test_viewer_rule_script(oracle_job, tokenizer, tmp_path):
    from fsgen.pipeline.rulescript import run_script

    page = tmp_path / "out" / "viewer.html"
    job = SimpleNamespace(
        input=SimpleNamespace(trace=str(oracle_job / "trace.parquet"), generations=str(oracle_job / "generations.jsonl")),
        output=SimpleNamespace(page=str(page)), log=[str(tmp_path / "viewer.log")],
        params=SimpleNamespace(requests=2, seed=1, tokenizer=str(tokenizer), get=lambda key, default=None: default),
    )
    run_script(ROOT / "scripts" / "viewer.py", job)
    heads = [e["text"] for e in parse(page.read_text()) if e["tag"] == "h2"]
    assert [h.split(" ")[1] for h in heads] == [str(r) for r in sample_requests([0, 1, 2], 2, 1)]
    assert "wrote" in (tmp_path / "viewer.log").read_text()


# ---------------------------------------------------------------- a real browser


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)")
def test_chromium_renders_the_page(oracle_job, tmp_path):
    import numpy as np
    from PIL import Image

    html = tmp_path / "page.html"
    html.write_text(render_page(load_job(oracle_job), [0, 1, 2], seed=0), encoding="utf-8")
    png = screenshot(html, tmp_path / "page.png", width=900, height=700)
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)  # [H, W, 3]
    assert image.shape == (700, 900, 3)
    assert image.std() > 20  # text and boxes, not a blank page
    highlight = (np.abs(image - np.array([0xff, 0xd5, 0x4a])).sum(axis=-1) < 30).sum()
    assert highlight > 100  # the intervened tokens' yellow background was painted


def test_show_module_entry_point_plain_when_piped(oracle_job):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "fsgen", "show", str(oracle_job), "--request", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert PLAIN_1 in done.stdout.splitlines()
