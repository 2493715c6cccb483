"""The counterfactual rules in a real Snakemake run (no stubs) on a tiny config: the tiny test
family as local models, one pair, the oracle, the `arith` task on four local documents. The
`counterfactual_all` target brings in preflight, the oracle decode and score jobs, then the
two counterfactual rules; a second run has nothing to do, and `positions: 0` has no such job."""

from __future__ import annotations

import json

import pytest

from fsgen.harness.counterfactual import read_frame
from fsgen.testing import build_tiny_family
from test_workflow_support import copy_repo, dry_run_jobs, snakemake, write_config

pytestmark = pytest.mark.timeout(900)


def tiny_config(family, data, positions=5) -> dict:
    model = {"tokenizer": "check", "gpus": 0, "dtype": "float32"}
    return {
        "report": False,
        "counterfactual": {"positions": positions, "seed": 1},
        "models": {"tiny-s": {"path": str(family["small"]), "params": 1000, **model},
                   "tiny-l": {"path": str(family["large"]), "params": 5000, **model}},
        "pairs": [{"large": "tiny-l", "small": "tiny-s"}],
        "methods": {"oracle": {"method": "oracle"}},
        "benchmarks": {"arith": {"task": "arith", "data": {"path": str(data), "split": "test"}, "limit": 4,
                                 "seed": 0, "num_fewshot": 0, "max_new_tokens": 6, "batch_size": 4}},
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfwf")
    family = build_tiny_family(root / "family")
    data = root / "test.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {a} pens. How many?", "answer": f"#### {a}"}) + "\n"
                            for a in range(4)))
    repo = copy_repo(root / "repo", stub_scripts=False)
    write_config(repo / "config" / "tiny.yaml", tiny_config(family, data))
    write_config(repo / "config" / "tiny_off.yaml", tiny_config(family, data, positions=0))
    done = snakemake(repo, "counterfactual_all", "--cores", "1", "--configfile", "config/tiny.yaml", timeout=800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return repo


def test_counterfactual_outputs(repo):
    job = repo / "results" / "arith" / "oracle" / "tiny-l__tiny-s"
    frame, meta = read_frame(job / "counterfactual.parquet")
    assert meta["status"] == "ok" and meta["positions"] == 5 and meta["job"]["variant"] == "oracle"
    assert len(frame) == min(5, meta["interventions"]) > 0
    assert frame["critical"].tolist() == (frame["outcome_before"] != frame["outcome_after"]).tolist()
    assert (repo / "results" / "logs" / "counterfactual" / "arith" / "oracle" / "tiny-l__tiny-s.log").exists()
    cache = repo / "results" / ".resume" / "counterfactual"
    assert not cache.exists() or not any(cache.iterdir())  # a finished job's cache is removed


def test_second_run_has_nothing_to_do_and_positions_zero_has_no_job(repo):
    done = snakemake(repo, "counterfactual_all", "-n", "--configfile", "config/tiny.yaml")
    assert "Nothing to be done" in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]
    done = snakemake(repo, "-n", "--configfile", "config/tiny_off.yaml")
    counts = dry_run_jobs(done.stdout + done.stderr)
    assert done.returncode == 0 and "counterfactual" not in counts and "counterfactual_score" not in counts
