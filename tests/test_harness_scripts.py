"""scripts/decode.py and scripts/score.py as Snakemake runs them (a stand-in `snakemake` object;
fsgen.pipeline.rulescript.run_script, as the `run:` rules do)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from fsgen.pipeline.rulescript import run_script as run_in_process
from fsgen.testing import build_tiny_family, write_generation_task

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]



def run_script(name, **fields):
    run_in_process(ROOT / "scripts" / name, SimpleNamespace(**fields))


def test_decode_and_score_scripts(tmp_path):
    family = build_tiny_family(tmp_path / "family")
    rows = [{"question": f"{a} + 1?", "answer": str(a + 1)} for a in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    include = tmp_path / "overrides"
    include.mkdir()
    write_generation_task(include, "tiny_gen", tmp_path / "d.jsonl")
    job = tmp_path / "results" / "tiny" / "proxy" / "large__small"
    models = {role: {"name": role, "path": str(family[role]), "dtype": "float32", "params": 1}
              for role in ("large", "small", "small_tuned")}
    benchmark = {"task": "tiny_gen", "limit": 3, "seed": 7, "max_new_tokens": 5, "batch_size": 8}
    run_script(
        "decode.py",
        input=SimpleNamespace(), threads=1, log=[str(tmp_path / "decode.log")],
        output=SimpleNamespace(trace=str(job / "trace.parquet"), samples=str(job / "samples.jsonl"),
                               generations=str(job / "generations.jsonl")),
        params=SimpleNamespace(models=models, decode={"method": "proxy", "alpha": 0.5, "router": "always"},
                               benchmark=benchmark, include_path=str(include)),
        resources=SimpleNamespace(batch_size=2), wildcards=SimpleNamespace(benchmark="tiny"),
    )
    for name in ("trace.parquet", "samples.jsonl", "generations.jsonl", "decode_results.json"):
        assert (job / name).exists(), name
    decoded = json.loads((job / "decode_results.json").read_text())["fsgen_run"]
    assert decoded["fsgen"]["params"]["alpha"] == 0.5 and decoded["fsgen"]["params"]["batch_size"] == 2
    assert len(decoded["doc_ids"]) == 3
    run_script(
        "score.py",
        input=SimpleNamespace(samples=str(job / "samples.jsonl")), log=[str(tmp_path / "score.log")],
        output=SimpleNamespace(metrics=str(job / "metrics.json")),
        params=SimpleNamespace(benchmark=benchmark, include_path=str(include)),
        wildcards=SimpleNamespace(benchmark="tiny", job="proxy/large__small"),
    )
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["n"] == 3 and "exact_match,none" in metrics["metrics"] and metrics["decode"]["method"] == "proxy"
