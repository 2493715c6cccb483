"""lm-eval scoring paths with stub models (no engine): task overrides, GSM8K filters, replay,
multiple choice, MT-Bench (MBPP and code execution: test_mbpp_scoring.py)."""

from __future__ import annotations

import json
import re

import pytest
from lm_eval.api.model import LM

import fsgen.harness  # noqa: F401
from fsgen.harness.replay import ReplayLM, ReplayMismatch, read_samples
from fsgen.harness.run import evaluate_benchmark, flat_metrics, run_decode, run_score
from fsgen.harness.tasks import (
    TaskNotFound,
    make_task_manager,
    select_samples,
    write_task_overrides,
)

pytestmark = pytest.mark.timeout(300)


class StubLM(LM):
    """Answers generate_until with respond(prompt) and loglikelihood with score(context, continuation)."""

    def __init__(self, respond=None, score=None):
        super().__init__()
        self.respond, self.score = respond, score
        self.calls = 0

    def generate_until(self, requests, disable_tqdm=False):
        self.calls += len(requests)
        return [self.respond(r.args[0]) for r in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        self.calls += len(requests)
        return [self.score(*r.args) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        return [self.score("", r.args[0])[0] for r in requests]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# GSM8K-format docs and, per question, what the stub says (strict needs "The answer is N.")
GSM8K = [
    ("Tom has 9 apples and buys 9 more. How many?", "9 + 9 = 18\n#### 18", "9 + 9 = 18. The answer is 18."),
    ("Ann has 3 pens and gets 4. How many?", "3 + 4 = 7\n#### 7", "She has 3 + 4 = 7"),
    ("A box has 6 eggs. How many in 2 boxes?", "6 * 2 = 12\n#### 12", "6 * 2 = 13. The answer is 13."),
    ("A car costs 500 twice. Total?", "500 * 2 = 1000\n#### 1000", "500 * 2 = 1000. The answer is 1,000."),
]


def gsm8k_respond(prompt):
    question = prompt.rsplit("Q: ", 1)[1].split("\nA:")[0]
    return next(reply for q, _, reply in GSM8K if q == question)


@pytest.fixture()
def gsm8k_benchmark(tmp_path):
    data = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": q, "answer": a} for q, a, _ in GSM8K])
    return {"task": "gsm8k_cot", "data": {"path": str(data), "split": "test"}, "seed": 789798}


def test_gsm8k_override_strict_and_flexible(tmp_path, gsm8k_benchmark):
    results, indices = evaluate_benchmark(StubLM(gsm8k_respond), "gsm8k", gsm8k_benchmark, tmp_path / "direct",
                                          predict_only=False, bootstrap_iters=0)
    res = results["results"]["gsm8k_cot__local"]
    assert indices is None
    assert res["exact_match,strict-match"] == pytest.approx(0.5)  # docs 0 and 3
    assert res["exact_match,flexible-extract"] == pytest.approx(0.75)  # docs 0, 1, 3
    sample = results["samples"]["gsm8k_cot__local"][0]
    assert sample["arguments"][0][0].count("Q: ") == 9  # lm-eval's 8-shot CoT prompt + the question


def test_replay_equals_direct(tmp_path, gsm8k_benchmark):
    entry = {**gsm8k_benchmark, "limit": 3}
    direct, indices = evaluate_benchmark(StubLM(gsm8k_respond), "gsm8k", entry, tmp_path / "direct",
                                         predict_only=False, bootstrap_iters=100)  # stderrs compared too
    assert indices == select_samples(4, 3, 789798) and len(indices) == 3
    stub = StubLM(gsm8k_respond)
    run_decode("gsm8k", entry, None, tmp_path / "run", lm=stub)
    assert stub.calls == 3
    samples = read_samples(tmp_path / "run" / "samples.jsonl")
    assert sorted({s["doc_id"] for s in samples}) == indices  # dataset indices, not positions
    assert all("metrics" not in s or s["metrics"] == ["bypass"] for s in samples)
    metrics = run_score("gsm8k", entry, tmp_path / "run" / "samples.jsonl", tmp_path / "run", bootstrap_iters=100)
    assert isinstance(metrics["metrics"]["exact_match_stderr,strict-match"], float)
    assert metrics["metrics"] == flat_metrics(direct["results"]["gsm8k_cot__local"])
    assert metrics["n"] == 3 and metrics["doc_ids"] == indices
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["metrics"]["exact_match,strict-match"] == metrics["metrics"]["exact_match,strict-match"]
    assert (tmp_path / "run" / "lm_eval_results.json").exists()


def test_replay_refuses_changed_prompts(tmp_path, gsm8k_benchmark):
    run_decode("gsm8k", gsm8k_benchmark, None, tmp_path / "run", lm=StubLM(gsm8k_respond))
    replay = ReplayLM(samples=str(tmp_path / "run" / "samples.jsonl"))
    with pytest.raises(ReplayMismatch, match="prompt differs"):  # 2-shot instead of 8-shot
        evaluate_benchmark(replay, "gsm8k", {**gsm8k_benchmark, "num_fewshot": 2}, tmp_path / "s",
                           predict_only=False, bootstrap_iters=0)


def test_wrong_task_name_is_a_clear_error(tmp_path):
    with pytest.raises(TaskNotFound, match="no_such_task"):
        make_task_manager({"b": {"task": "no_such_task"}}, tmp_path, include_defaults=False)
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(TaskNotFound, match="no_such_task"):
        write_task_overrides({"b": {"task": "no_such_task", "data": {"path": str(data)}}}, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        write_task_overrides({"b": {"task": "gsm8k_cot", "data": {"path": str(tmp_path / "missing.jsonl")}}},
                             tmp_path / "o")


def test_override_of_a_save_to_disk_folder(tmp_path, gsm8k_benchmark):
    import datasets

    rows = [{"question": q, "answer": a} for q, a, _ in GSM8K]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    entry = {"task": "gsm8k_cot", "data": {"path": str(tmp_path / "hf"), "split": "test"}}
    results, _ = evaluate_benchmark(StubLM(gsm8k_respond), "gsm8k", entry, tmp_path / "direct",
                                    predict_only=False, bootstrap_iters=0)
    assert results["results"]["gsm8k_cot__local"]["exact_match,strict-match"] == pytest.approx(0.5)


def test_override_with_a_fewshot_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": f"Train question {i}?", "answer": f"#### {i}"}
                                                     for i in range(3)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": q, "answer": a} for q, a, _ in GSM8K[:2]])
    entry = {"task": "gsm8k", "num_fewshot": 2, "data": {"path": str(test), "fewshot_path": str(train)}}
    prompts = []
    evaluate_benchmark(StubLM(lambda p: (prompts.append(p), "#### 1")[1]), "g", entry, tmp_path / "d",
                       predict_only=True)
    assert len(prompts) == 2 and all(p.count("Train question") == 2 for p in prompts)
    # without the few-shot file, lm-eval would draw the examples from the test documents: refused
    with pytest.raises(ValueError, match="fewshot_path"):
        write_task_overrides({"g": {**entry, "data": {"path": str(test)}}}, tmp_path / "o")
    write_task_overrides({"g": {**entry, "num_fewshot": 0, "data": {"path": str(test)}}}, tmp_path / "o")


# ---------------------------------------------------------------- multiple choice, MT-Bench

MC_TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
MC_DOCS = [
    {"question": "2 + 2?", "choices": ["4", "5"], "answer": 0},
    {"question": "3 + 3?", "choices": ["7", "6"], "answer": 1},
    {"question": "1 + 1?", "choices": ["2", "3"], "answer": 1},
]


def write_mc_task(tmp_path):
    data = write_jsonl(tmp_path / "mc.jsonl", MC_DOCS)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(MC_TASK.format(data=data))
    return tmp_path / "tasks"


def test_multiple_choice_replay_equals_direct(tmp_path):
    tasks_dir = write_mc_task(tmp_path)

    def score(context, continuation):  # prefers the true sum: right on docs 0 and 1 (doc 2's label is wrong)
        a = int(re.search(r"(\d) \+ (\d)", context).group(1))
        return (-abs(int(continuation) - 2 * a), False)

    entry = {"task": "tiny_mc"}
    direct, _ = evaluate_benchmark(StubLM(score=score), "mc", entry, tmp_path / "d", predict_only=False,
                                   tasks_dir=tasks_dir, bootstrap_iters=0)
    assert direct["results"]["tiny_mc"]["acc,none"] == pytest.approx(2 / 3)
    run_decode("mc", entry, None, tmp_path / "run", lm=StubLM(score=score), tasks_dir=tasks_dir)
    metrics = run_score("mc", entry, tmp_path / "run" / "samples.jsonl", tmp_path / "run", tasks_dir=tasks_dir,
                        bootstrap_iters=0)
    assert metrics["metrics"] == flat_metrics(direct["results"]["tiny_mc"])


def test_mtbench_first_turns(tmp_path):
    rows = [{"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now another."]},
            {"question_id": 82, "category": "math", "turns": ["What is 2+2?", "And 3+3?"]}]
    entry = {"task": "mtbench_first_turn", "data": {"path": str(write_jsonl(tmp_path / "mt.jsonl", rows))},
             "max_new_tokens": 64}
    prompts = []
    stub = StubLM(lambda p: (prompts.append(p), "" if "2+2" in p else "Leaves fall.")[1])
    run_decode("mtbench", entry, None, tmp_path / "run", lm=stub)
    assert prompts == ["Question: Write a haiku.\nAnswer:", "Question: What is 2+2?\nAnswer:"]
    samples = read_samples(tmp_path / "run" / "samples.jsonl")
    assert samples[0]["arguments"][0][1]["max_gen_toks"] == 64  # the config's max_new_tokens
    metrics = run_score("mtbench", entry, tmp_path / "run" / "samples.jsonl", tmp_path / "run", bootstrap_iters=0)
    assert metrics["metrics"]["generated,none"] == pytest.approx(0.5)
