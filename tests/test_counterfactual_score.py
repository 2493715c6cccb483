"""Scoring counterfactual answers with lm-eval (fsgen.harness.counterfactual_score), and the two
rule scripts end to end on the tiny family: decode an oracle job, score it, continue a sample of
its interventions with System 1's token, score those answers. The task's metric looks at an
answer's first two characters only, so whether an intervention is critical is known in advance:
exactly when the slow reference's counterfactual answer starts otherwise than the job's."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fsgen.harness.counterfactual import read_frame
from fsgen.harness.counterfactual_score import response_slots, scoring_rounds, with_responses
from fsgen.pipeline.rulescript import run_script as run_in_process
from fsgen.testing import build_tiny_family

pytestmark = pytest.mark.timeout(600)
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
HEAD = 2  # characters of an answer the task's metric compares

# exact match of the answer's first HEAD characters (a regex filter), so outcomes can change
HEAD_TASK = """task: tiny_head
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["Question:"]
  do_sample: false
filter_list:
  - name: head
    filter:
      - function: regex
        regex_pattern: "^(?s:(.{{1,{head}}}))"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_response_slots_and_replacement():
    generations = [{"request_id": 2, "task": "a", "doc_id": 7, "idx": 0}, {"request_id": 0, "task": "a", "doc_id": 3, "idx": 0},
                   {"request_id": 3, "task": "a", "doc_id": 7, "idx": 0}, {"request_id": 1, "task": "b", "doc_id": 3, "idx": 1}]
    slots = response_slots(generations)
    assert slots == {0: ("a", 3, 0, 0), 1: ("b", 3, 1, 0), 2: ("a", 7, 0, 0), 3: ("a", 7, 0, 1)}
    samples = [{"task": "a", "doc_id": 7, "filter": f, "resps": [["r2", "r3"]]} for f in ("x", "y")] + [
        {"task": "a", "doc_id": 3, "filter": "x", "resps": [["r0"]]},
        {"task": "b", "doc_id": 3, "filter": "x", "resps": [["q"], ["r1"]]}]
    out = with_responses(samples, slots, {3: "new3", 1: "new1"})
    assert [s["resps"] for s in out] == [[["r2", "new3"]], [["r2", "new3"]], [["r0"]], [["q"], ["new1"]]]
    assert samples[0]["resps"] == [["r2", "r3"]]  # the originals are not changed


def test_scoring_rounds_change_one_answer_per_document():
    answers = pd.DataFrame({"task": "a", "doc_id": [5, 5, 5, 2, 9, 9], "request_id": [5, 5, 5, 2, 9, 9],
                            "position": [7, 1, 4, 0, 3, 2]})
    rounds = scoring_rounds(answers)
    assert [sorted(zip(r["doc_id"], r["position"])) for r in rounds] == [[(2, 0), (5, 1), (9, 2)], [(5, 4), (9, 3)],
                                                                        [(5, 7)]]
    assert scoring_rounds(answers.iloc[:0]) == []


# ---- the rule scripts end to end ---------------------------------------------------------------


def run_script(name, **fields):
    run_in_process(ROOT / "scripts" / name, SimpleNamespace(**fields))


def reference_text(systems, prompt_ids, position, forced, stop, budget) -> str:
    """The counterfactual answer's text, decoded by the large model alone, full forwards."""
    tok, vocab, out = systems.tokenizer, systems.vocab_size, []
    while True:
        if len(out) == position:
            token = forced
        else:
            with torch.no_grad():
                token = int(systems.large(input_ids=torch.tensor([prompt_ids + out])).logits[0, -1, :vocab].argmax())
        out.append(token)
        text = tok.decode(out, skip_special_tokens=True)
        if token == tok.eos_token_id or any(s in text for s in stop) or len(out) >= budget:
            cut = min([text.find(s) for s in stop if s in text], default=len(text))
            return text[:cut]


def test_counterfactual_rule_scripts_end_to_end(tmp_path):
    from fsgen.decoding.engine import encode_prompt, load_systems

    family = build_tiny_family(tmp_path / "family")
    rows = [{"question": f"{a} + 1?", "answer": "?"} for a in range(6)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    include = tmp_path / "overrides"
    include.mkdir()
    (include / "tiny_head.yaml").write_text(HEAD_TASK.format(data=data, head=HEAD))
    job = tmp_path / "results" / "tiny" / "oracle" / "large__small"
    models = {role: {"name": role, "path": str(family[role]), "dtype": "float32", "params": 1} for role in ("large", "small")}
    benchmark = {"task": "tiny_head", "limit": 5, "seed": 3, "max_new_tokens": 8, "batch_size": 4}
    wildcards = SimpleNamespace(benchmark="tiny", variant="oracle", large="large", small="small")
    decode = {"method": "oracle", "router": "always"}
    run_script("decode.py", input=SimpleNamespace(), threads=1, log=[str(tmp_path / "decode.log")],
               output=SimpleNamespace(trace=str(job / "trace.parquet"), samples=str(job / "samples.jsonl"),
                                      generations=str(job / "generations.jsonl")),
               params=SimpleNamespace(models=models, decode=decode, benchmark=benchmark, include_path=str(include)),
               resources=SimpleNamespace(batch_size=4), wildcards=wildcards)
    generations = {g["request_id"]: g for g in map(json.loads, (job / "generations.jsonl").read_text().splitlines())}
    for g in generations.values():  # the job answers every document right: its own first characters
        rows[g["doc_id"]]["answer"] = g["text"][:HEAD]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_script("score.py", input=SimpleNamespace(samples=str(job / "samples.jsonl")), log=[str(tmp_path / "score.log")],
               output=SimpleNamespace(metrics=str(job / "metrics.json")),
               params=SimpleNamespace(benchmark=benchmark, include_path=str(include)),
               wildcards=SimpleNamespace(benchmark="tiny", job="oracle/large__small"))
    assert json.loads((job / "metrics.json").read_text())["metrics"]["exact_match,head"] == 1.0
    continuations, outcomes = job / "counterfactual_continuations.parquet", job / "counterfactual.parquet"
    run_script("counterfactual.py", threads=1, log=[str(tmp_path / "cf.log")], wildcards=wildcards,
               input=SimpleNamespace(trace=str(job / "trace.parquet"), generations=str(job / "generations.jsonl"),
                                     metrics=str(job / "metrics.json")),
               output=SimpleNamespace(continuations=str(continuations)),
               params=SimpleNamespace(models=models, decode=decode, counterfactual={"positions": 14, "seed": 5},
                                      resume_dir=str(tmp_path / "resume")),
               resources=SimpleNamespace(batch_size=3))
    assert not any((tmp_path / "resume").iterdir())  # the finished job's cache is gone
    run_script("counterfactual_score.py", log=[str(tmp_path / "cfs.log")], wildcards=wildcards,
               input=SimpleNamespace(continuations=str(continuations), samples=str(job / "samples.jsonl"),
                                     generations=str(job / "generations.jsonl"), metrics=str(job / "metrics.json")),
               output=SimpleNamespace(counterfactual=str(outcomes)),
               params=SimpleNamespace(benchmark=benchmark, include_path=str(include)))

    frame, meta = read_frame(outcomes)
    assert meta["status"] == "ok" and len(frame) == 14 and meta["rounds"] >= 2
    systems = load_systems("oracle", small=str(family["small"]), large=str(family["large"]))
    expected_text, expected_critical = [], []
    for row in frame.itertuples():
        g = generations[row.request_id]
        prompt_ids = encode_prompt(systems.tokenizer, g["prompt"])
        text = reference_text(systems, prompt_ids, row.position, row.s1_token_id, g["stop"], g["max_new_tokens"])
        expected_text.append(text)
        expected_critical.append(text[:HEAD] != g["text"][:HEAD])
    assert frame["text"].tolist() == expected_text
    assert (frame["outcome_before"] == 1.0).all()
    assert frame["critical"].tolist() == expected_critical
    assert 0 < sum(expected_critical) < len(frame)  # both kinds occur, so the check can fail
    assert (frame["outcome_after"] == [0.0 if c else 1.0 for c in expected_critical]).all()
    assert meta["critical"] == sum(expected_critical)
