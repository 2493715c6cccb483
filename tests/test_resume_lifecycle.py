"""The resume cache through the workflow's decode script (scripts/decode.py) and Snakemake: a
killed attempt leaves its finished requests and the next attempt resumes from them; a job that
succeeds removes its cache folders (also those of older code), so any later run of it - a forced
rerun included - decodes afresh (issue #15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from fsgen.fingerprint import decode_environment
from fsgen.pipeline.rulescript import run_script
from fsgen.resume import ResumeCache, job_key
from fsgen.testing import write_generation_task
from test_resume_key import count_engine_calls
from test_workflow_support import copy_repo, snakemake, write_config

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("trace.parquet", "samples.jsonl", "generations.jsonl")
DOCS = [{"question": f"{a} + {b}?", "answer": str(a + b)} for a, b in [(3, 1), (2, 7), (5, 5), (8, 1)]]
JOB = {"benchmark": "tiny", "model": "ts"}
pytestmark = pytest.mark.timeout(600)


class Killed(Exception):
    """Stands in for SIGKILL inside the decode script."""


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    import torch

    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    return {k: str(v) for k, v in build_tiny_family(tmp_path_factory.mktemp("family")).items()}


def write_task(folder: Path) -> Path:
    (folder / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    write_generation_task(folder / "tasks", "life_gen", folder / "d.jsonl")
    return folder / "tasks"


def decode_single(workdir: Path, family: dict, include: Path) -> None:
    """scripts/decode.py as rule decode_single runs it for JOB (wildcards benchmark, model)."""
    out = workdir / "results" / "tiny" / "single" / "ts"
    run_script(ROOT / "scripts" / "decode.py", SimpleNamespace(
        input=SimpleNamespace(), threads=1, log=[str(workdir / "decode.log")],
        output=SimpleNamespace(**{n.split(".")[0]: str(out / n) for n in OUTPUTS}),
        params=SimpleNamespace(models={"model": {"name": "ts", "path": family["small"], "dtype": "float32",
                                                 "params": 1}},
                               decode={"method": "single"}, include_path=str(include),
                               benchmark={"task": "life_gen", "limit": len(DOCS), "seed": 1, "max_new_tokens": 5},
                               resume_dir=str(workdir / "results" / ".resume")),
        resources=SimpleNamespace(batch_size=2), wildcards=SimpleNamespace(**JOB),
    ))


def cache_folders(workdir: Path) -> dict[str, dict]:
    """key -> key.json parts of every folder in the workflow's resume cache."""
    root = workdir / "results" / ".resume"
    return {p.name: json.loads((p / "key.json").read_text())["parts"] for p in root.iterdir() if p.is_dir()}


def test_killed_attempt_resumes_then_success_removes_the_cache_and_a_rerun_decodes_afresh(family, tmp_path,
                                                                                          monkeypatch):
    from fsgen.harness.lm import FsgenLM

    include = write_task(tmp_path)
    decoded = count_engine_calls(monkeypatch)

    def killed(*args, **kwargs):
        raise Killed("killed after decoding, before writing the outputs")

    with monkeypatch.context() as patch, pytest.raises(Killed):  # attempt 1
        patch.setattr(FsgenLM, "write_generations", killed)
        decode_single(tmp_path, family, include)
    assert len(decoded) == len(DOCS)
    (key, parts), = cache_folders(tmp_path).items()
    assert parts["job"] == JOB and parts["tasks"] == ["life_gen"] and parts["decode"]["method"] == "single"
    assert parts["models"]["model"]["path"] == family["small"]
    assert {k: parts[k] for k in ("code", "versions")} == decode_environment()

    # a folder of the same job written by older code, and one of another job
    cache_dir = tmp_path / "results" / ".resume"
    for other in ({**parts, "code": "0" * 64}, {**parts, "job": {"benchmark": "tiny", "model": "tl"}}):
        with ResumeCache(cache_dir, job_key(**other), parts=other) as cache:
            cache.put("r", {"text": ""})

    decoded.clear()  # attempt 2 (a Snakemake retry): resumes every finished request
    decode_single(tmp_path, family, include)
    assert decoded == []
    out = tmp_path / "results" / "tiny" / "single" / "ts"
    first = (out / "generations.jsonl").read_text()
    assert len(first.splitlines()) == len(DOCS)
    # the job succeeded: its folders are gone (this code's and the older code's), the other job's stays
    assert [p["job"] for p in cache_folders(tmp_path).values()] == [{"benchmark": "tiny", "model": "tl"}]

    decoded.clear()  # a later run of the finished job (forced, or for changed inputs) decodes afresh
    decode_single(tmp_path, family, include)
    assert sorted(decoded) == list(range(len(DOCS)))
    assert (out / "generations.jsonl").read_text() == first
    assert len(cache_folders(tmp_path)) == 1


# ---------------------------------------------------------------- through Snakemake

TRACE = "results/tiny/oracle/tl__ts/trace.parquet"
LOG = "results/logs/decode/tiny/oracle/tl__ts.log"


def tiny_config(family: dict, data: Path) -> dict:
    model = {"tokenizer": "tiny", "gpus": 0, "dtype": "float32"}
    return {
        "report": False,
        "models": {"tl": {**model, "path": family["large"], "params": 2000},
                   "ts": {**model, "path": family["small"], "params": 1000}},
        "pairs": [{"large": "tl", "small": "ts"}],
        "methods": {"oracle": {"method": "oracle"}},
        "benchmarks": {"tiny": {"task": "arith", "data": {"path": str(data)}, "limit": 3, "seed": 1,
                                "max_new_tokens": 4, "batch_size": 2}},
    }


@pytest.mark.slow
def test_forced_rerun_decodes_afresh(family, tmp_path):
    """`snakemake --forcerun <trace>` of a finished decode job decodes every request again (the
    issue's observation was "150 of 150 requests reused, 0 decoded"). Only the decode script and
    the task overrides are real; the other rules are stubs. Slow: two decode jobs of 8-35 s, most
    of it importing torch and lm-eval; the test above checks the same through the script in-process."""
    repo = copy_repo(tmp_path / "repo", stub_scripts=True)
    for name in ("decode", "task_overrides"):
        shutil.copy(ROOT / "scripts" / f"{name}.py", repo / "scripts" / f"{name}.py")
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"question": d["question"], "answer": f"#### {d['answer']}"}) + "\n"
                            for d in DOCS))
    write_config(repo / "config" / "tiny.yaml", tiny_config(family, data))

    def decode(*extra: str) -> str:
        (repo / LOG).unlink(missing_ok=True)
        done = snakemake(repo, TRACE, "--cores", "1", "--configfile", "config/tiny.yaml", *extra)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return (repo / LOG).read_text()

    assert "0 of 3 requests reused, 3 decoded" in decode()
    assert not list((repo / "results" / ".resume").iterdir())  # the finished job removed its cache
    assert "0 of 3 requests reused, 3 decoded" in decode(f"--forcerun={TRACE}")
