"""`fsgen lm-eval ...`: lm-eval's own command line with the fsgen models registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fsgen.testing import build_tiny_family, write_generation_task
from fsgen.trace import read_trace

ROOT = Path(__file__).resolve().parents[1]


def test_lm_eval_command_line_runs_the_fsgen_model(tmp_path):
    family = build_tiny_family(tmp_path / "family")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} + 2?", "answer": str(a + 2)}) + "\n" for a in range(4)))
    write_generation_task(tmp_path / "tasks", "tiny_cli", data)
    trace = tmp_path / "run" / "trace.parquet"
    model_args = f"large={family['large']},small={family['small']},method=oracle,trace={trace}"
    cmd = [sys.executable, "-m", "fsgen", "lm-eval", "--model", "fsgen", "--model_args", model_args,
           "--tasks", "tiny_cli", "--include_path", str(tmp_path / "tasks"), "--limit", "2",
           "--gen_kwargs", "max_gen_toks=5", "--device", "cpu", "--output_path", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results_*.json")]
    assert len(results) == 1
    assert results[0]["n-samples"]["tiny_cli"]["effective"] == 2
    assert "exact_match,none" in results[0]["results"]["tiny_cli"]
    frame, meta = read_trace(trace)  # the fsgen model's own outputs, asked for through --model_args
    assert sorted(frame["request_id"].unique()) == [0, 1] and frame.groupby("request_id").size().max() <= 5
    assert meta["method"] == "oracle"


def test_every_argument_reaches_lm_eval_with_the_models_registered(monkeypatch):
    import lm_eval.__main__
    from lm_eval.api.registry import get_model

    from fsgen.cli import main

    seen = {}

    def fake_cli():
        seen["argv"] = list(sys.argv)
        seen["models"] = [get_model(name).__name__ for name in ("fsgen", "fsgen-replay")]

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", fake_cli)
    before = list(sys.argv)
    args = ["--model", "fsgen", "--model_args", "large=a,small=b", "--tasks", "t", "--help", "--limit", "0.5"]
    assert main(["lm-eval", *args]) == 0
    assert seen == {"argv": ["lm-eval", *args], "models": ["FsgenLM", "ReplayLM"]}
    assert sys.argv == before
