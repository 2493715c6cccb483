"""Determinism: same inputs → identical traces (compared as data), whatever the batch size (so
an out-of-memory retry with a smaller batch changes no number), and seeds recorded in results."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from fsgen.decoding import engine
from fsgen.decoding.config import DecodeConfig
from fsgen.pipeline.rulescript import run_script as run_in_process
from fsgen.testing import write_generation_task
from fsgen.trace import read_trace, to_table, write_trace

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]

PROMPTS = ["Tom has 3 apples.", "", "def add(a, b):", "Question: What is 9 times 8? Answer:",
           "Ann had 12 pens and gave away 5.", "The quick brown fox", "A box holds 6 eggs. 4 boxes hold",
           "Small models write most tokens;", "x" * 40]
CONFIGS = {
    "single": dict(method="single"),
    "oracle": dict(method="oracle"),
    "oracle-entropy": dict(method="oracle", router="entropy:0.5"),
    "contrastive": dict(method="contrastive", top_k=3),
    "proxy": dict(method="proxy", router="margin:0.3"),
    "speculative": dict(method="speculative", k=3),
    "speculative-sampled": dict(method="speculative", k=3, temperature=0.9, seed=11),
}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    return {k: str(v) for k, v in build_tiny_family(tmp_path_factory.mktemp("family")).items()}


def fresh_systems(family, method):
    if method == "single":
        return engine.load_systems("single", model=family["large"])
    return engine.load_systems(method, small=family["small"], large=family["large"], small_tuned=family["small_tuned"])


def assert_same_result(a, b):
    assert a.generations == b.generations
    assert to_table(a.trace).equals(to_table(b.trace)), "traces differ as data"


FLOAT_TOLERANCE = 1e-5  # abs + rel, as the engine guarantees (tests/test_engine_batch.py): float32
# reductions over other padded shapes differ in the last bits


def assert_same_up_to_float_rounding(a, b):
    """Every token, decision and id identical; recorded probabilities/entropies within 1e-5."""
    assert a.generations == b.generations
    assert_traces_close(a.trace, b.trace)


def assert_traces_close(a, b):
    x, y = to_table(a).to_pandas(), to_table(b).to_pandas()
    assert list(x.columns) == list(y.columns) and len(x) == len(y)
    for col in x.columns:
        if col == "s1_topk_probs":
            assert all(np.allclose(u, v, rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE) for u, v in zip(x[col], y[col])), col
        elif col == "s1_topk_ids":
            assert [list(u) for u in x[col]] == [list(v) for v in y[col]], col
        elif pd.api.types.is_float_dtype(x[col]):
            assert np.allclose(x[col], y[col], rtol=FLOAT_TOLERANCE, atol=FLOAT_TOLERANCE, equal_nan=True), col
        else:
            assert x[col].tolist() == y[col].tolist(), col


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_fresh_runs_give_identical_traces_and_batch_size_changes_no_decision(family, name):
    spec = CONFIGS[name]
    runs = []
    for batch_size in (8, 8, 1, 3):  # twice from scratch, then the OOM-retry batch sizes
        config = DecodeConfig(max_new_tokens=10, batch_size=batch_size, **spec)
        runs.append(engine.decode(fresh_systems(family, spec["method"]), PROMPTS, config))
    assert len(runs[0].trace) > 0
    assert_same_result(runs[0], runs[1])  # same machine, same settings: bit for bit
    for other in runs[2:]:
        assert_same_up_to_float_rounding(runs[0], other)


def test_sampling_depends_on_the_seed_only(family):
    """An honest check that the comparison can fail: another seed samples other tokens."""
    systems = fresh_systems(family, "speculative")
    base = dict(method="speculative", k=3, temperature=1.5, max_new_tokens=12)
    a = engine.decode(systems, PROMPTS, DecodeConfig(seed=0, **base))
    b = engine.decode(systems, PROMPTS, DecodeConfig(seed=1, **base))
    assert [g["token_ids"] for g in a.generations] != [g["token_ids"] for g in b.generations]
    # a row's draws use seed + request_id: the same request alone, with its id, draws the same tokens
    alone = engine.decode(systems, PROMPTS[4:5], DecodeConfig(seed=0, **base), request_ids=[4])
    assert alone.generations[0]["token_ids"] == a.generations[4]["token_ids"]


def test_seed_is_recorded_in_the_trace_file(family, tmp_path):
    systems = fresh_systems(family, "speculative")
    config = DecodeConfig(method="speculative", temperature=0.5, seed=123, max_new_tokens=4)
    result = engine.decode(systems, PROMPTS[:2], config)
    write_trace(result.trace, tmp_path / "trace.parquet", result.metadata)
    _, metadata = read_trace(tmp_path / "trace.parquet")
    assert metadata["seed"] == 123 and metadata["params"]["seed"] == 123


# ---------------------------------------------------------------- the decode and score jobs



def run_script(name, **fields):
    run_in_process(ROOT / "scripts" / name, SimpleNamespace(**fields))


def decode_and_score(family, tmp_path, job: Path, include: Path, batch_size: int):
    models = {role: {"name": role, "path": family[role], "dtype": "float32", "params": 1}
              for role in ("large", "small")}
    benchmark = {"task": "det_gen", "limit": 6, "seed": 7, "max_new_tokens": 6, "batch_size": 4}
    run_script(
        "decode.py", input=SimpleNamespace(), threads=1, log=[str(job / "decode.log")],
        output=SimpleNamespace(trace=str(job / "trace.parquet"), samples=str(job / "samples.jsonl"),
                               generations=str(job / "generations.jsonl")),
        params=SimpleNamespace(models=models, decode={"method": "contrastive", "router": "always"},
                               benchmark=benchmark, include_path=str(include)),
        resources=SimpleNamespace(batch_size=batch_size), wildcards=SimpleNamespace(benchmark="det"),
    )
    run_script(
        "score.py", input=SimpleNamespace(samples=str(job / "samples.jsonl")), log=[str(job / "score.log")],
        output=SimpleNamespace(metrics=str(job / "metrics.json")),
        params=SimpleNamespace(benchmark=benchmark, include_path=str(include)),
        wildcards=SimpleNamespace(benchmark="det", job="contrastive/large__small"),
    )


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_decode_and_score_jobs_twice_give_identical_results(family, tmp_path):
    """The decode + score scripts run twice from scratch (batch 4, then an OOM-retry batch 1)."""
    rows = [{"question": f"{a} + {b}?", "answer": str(a + b)} for a in range(4) for b in range(3)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    include = tmp_path / "tasks"
    include.mkdir()
    write_generation_task(include, "det_gen", tmp_path / "d.jsonl")
    jobs = [tmp_path / "run1", tmp_path / "run2", tmp_path / "retry"]
    for job, batch_size in zip(jobs, (4, 4, 1)):
        job.mkdir()
        decode_and_score(family, tmp_path, job, include, batch_size)
    (trace1, meta1), (trace2, _), (trace3, _) = (read_trace(j / "trace.parquet") for j in jobs)
    assert len(trace1) > 0
    assert to_table(trace1).equals(to_table(trace2))  # twice from scratch: bit for bit
    assert_traces_close(trace1, trace3)  # batch 1 retry: every decision, floats to 1e-5
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    for job, m in zip(jobs[1:], metrics[1:]):
        assert jsonl(jobs[0] / "generations.jsonl") == jsonl(job / "generations.jsonl")
        assert jsonl(jobs[0] / "samples.jsonl") == jsonl(job / "samples.jsonl")
        for key in ("metrics", "doc_ids", "n", "seed"):
            assert m[key] == metrics[0][key], key
    m1 = metrics[0]
    # the seeds are in every result file
    assert meta1["seed"] == 0 and meta1["harness"]["entry"]["seed"] == 7
    assert m1["seed"] == 7 and m1["decode"]["seed"] == 0
