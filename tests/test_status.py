"""`fsgen status`: a fake grid folder with one job in each state, and the real Snakemake markers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from fsgen.analysis import outputs
from fsgen.cli import main
from fsgen.pipeline.rulescript import run_script
from fsgen.status import (
    analyses,
    collect,
    format_status,
    incomplete_outputs,
    last_events,
    load_config,
    workflow_locked,
)
from fsgen.testing import build_tiny_family, write_generation_task

ROOT = Path(__file__).resolve().parents[1]
SPEC = "results/tiny/spec/tl__ts"
ORACLE = "results/tiny/oracle/tl__ts"
OUTPUTS = ("trace.parquet", "samples.jsonl", "generations.jsonl")


def mark_incomplete(workdir: Path, path: str, job_id: str | None) -> None:
    """An incomplete marker named the way Snakemake's file persistence names it."""
    from snakemake.persistence.file import FilePersistence

    root = workdir / ".snakemake" / "incomplete"
    marker = Path(FilePersistence._record_path(SimpleNamespace(_fetch_max_len=lambda subject: 255), str(root), path))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": job_id}))


def snakemake_log(workdir: Path, name: str, text: str) -> None:
    folder = workdir / ".snakemake" / "log"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.snakemake.log").write_text(text)


class Killed(Exception):
    """A job killed (the test's stand-in for SIGKILL inside the decode script)."""


def decode_spec_job(workdir: Path, config: dict, include: Path) -> None:
    """The speculative pair job decoded by scripts/decode.py with the workflow's params, killed
    once every request is decoded, before its outputs are written (a finished job removes its
    resume cache)."""
    from fsgen.harness.lm import FsgenLM
    from fsgen.pipeline.jobs import decode_settings

    def killed(*args, **kwargs):
        raise Killed("killed before writing the outputs")

    models = {role: {"name": n, "path": config["models"][n]["path"], "dtype": "float32", "params": 1}
              for role, n in (("large", "tl"), ("small", "ts"))}
    job = workdir / SPEC
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(FsgenLM, "write_generations", killed)
        run_script(ROOT / "scripts" / "decode.py", SimpleNamespace(
            input=SimpleNamespace(), threads=1, log=[str(workdir / "decode.log")],
            output=SimpleNamespace(**{n.split(".")[0]: str(job / n) for n in OUTPUTS}),
            params=SimpleNamespace(models=models, decode=decode_settings(config, "spec"),
                                   benchmark=config["benchmarks"]["tiny"], include_path=str(include),
                                   resume_dir=str(workdir / "results" / ".resume")),
            resources=SimpleNamespace(batch_size=2),
            wildcards=SimpleNamespace(benchmark="tiny", variant="spec", large="tl", small="ts"),
        ))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    family = build_tiny_family(root / "family")
    workdir = root / "work"
    (workdir / "workflow").mkdir(parents=True)
    (workdir / "workflow" / "schemas").symlink_to(ROOT / "workflow" / "schemas")
    config = {
        "models": {"tl": {"path": str(family["large"]), "params": 2000},
                   "ts": {"path": str(family["small"]), "params": 1000, "tuned": "tst"},
                   "tst": {"path": str(family["small_tuned"]), "params": 1000}},
        "pairs": [{"large": "tl", "small": "ts"}],
        "methods": {"oracle": {"method": "oracle"}, "spec": {"method": "speculative", "k": 3}},
        "benchmarks": {"tiny": {"task": "tiny_gen", "limit": 3, "seed": 7, "max_new_tokens": 4, "batch_size": 2}},
    }
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} + 1?", "answer": str(a + 1)}) + "\n" for a in range(5)))
    include = workdir / "results" / "tasks"
    write_generation_task(include, "tiny_gen", data)
    (include / "overrides.json").write_text(json.dumps({"include_path": "results/tasks", "tasks": {"tiny": "tiny_gen"}}))
    config = load_config(workdir)
    decode_spec_job(workdir, config, include)

    # the speculative decode is running on a cluster: outputs gone (Snakemake deletes a failed job's),
    # 2 records and a torn third in its cache
    for name in OUTPUTS:
        (workdir / SPEC / name).unlink(missing_ok=True)
        mark_incomplete(workdir, f"{SPEC}/{name}", "4242")
    (records,) = (workdir / "results" / ".resume").glob("*/records.jsonl")
    lines = records.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    records.write_bytes(b"".join(lines[:2]) + lines[2][:20])
    (workdir / ".snakemake" / "locks").mkdir(parents=True)
    (workdir / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
    # the oracle decode is done; its score failed
    for name in OUTPUTS:
        (workdir / ORACLE).mkdir(parents=True, exist_ok=True)
        (workdir / ORACLE / name).write_text("{}\n" * 3)
    # every figure of the registry is there: the figures rule is done
    for figure in outputs.FIGURES.values():
        (workdir / "results" / figure.path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / "results" / figure.path).write_bytes(b"png")
    single = "results/tiny/single/ts"
    snakemake_log(workdir, "2026-01-01T000000.000000", f"""[Thu Jan  1 00:00:00 2026]
Error in rule score:
    message: None
    jobid: 4
    output: {ORACLE}/metrics.json
    log: results/logs/score/tiny/oracle/tl__ts.log (check log file(s) for error details)
Error in rule decode_single:
    jobid: 7
    output: {single}/trace.parquet, {single}/samples.jsonl, {single}/generations.jsonl
""")
    # ... and the single job that failed then was started again by a later run (not failed any more)
    snakemake_log(workdir, "2026-01-02T000000.000000", f"""localrule decode_single:
    input: x
    output: {single}/trace.parquet, {single}/samples.jsonl, {single}/generations.jsonl
    log: results/logs/decode/tiny/single/ts.log
""")
    return SimpleNamespace(workdir=workdir, config=config)


def by_name(jobs):
    return {(j.stage, j.name): j for j in jobs}


def test_states_of_a_running_grid(grid):
    jobs = by_name(collect(grid.workdir, grid.config))
    assert len(jobs) == 4 * 3 + 8  # 2 pair + 2 single decode jobs, each scored and analysed; 8 analyses
    assert jobs[("decode", "tiny/oracle/tl__ts")].state == "done"
    assert jobs[("decode", "tiny/oracle/tl__ts")].detail == "3 requests"
    spec = jobs[("decode", "tiny/spec/tl__ts")]
    # the count is the cache folder the real decode wrote, found by the job named in its key.json
    assert (spec.state, spec.detail) == ("running", "2 of 3 requests decoded, cluster job 4242")
    assert jobs[("score", "tiny/oracle/tl__ts")].state == "failed"
    assert jobs[("decode", "tiny/single/ts")].state == "pending"  # its last mention is a restart
    assert jobs[("decode", "tiny/single/tl")].state == "pending"
    assert jobs[("analyses", "figures")].state == "done"
    assert jobs[("analyses", "report")].state == "pending"


def test_printed_summary(grid, capsys):
    assert main(["status", "--workdir", str(grid.workdir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in lines[1:5]}
    #                  done running interrupted failed pending total
    assert rows == {"decode": [1, 1, 0, 0, 2, 4], "score": [0, 0, 0, 1, 3, 4], "stats": [0, 0, 0, 0, 4, 4],
                    "analyses": [1, 0, 0, 0, 7, 8]}
    assert "running     decode   tiny/spec/tl__ts (2 of 3 requests decoded, cluster job 4242)" in lines
    assert "failed      score    tiny/oracle/tl__ts  log: results/logs/score/tiny/oracle/tl__ts.log" in lines


def test_analyses_are_the_registry_outputs(grid):
    """Each analysis rule is done when every output the registry gives it exists (rules/analyze.smk
    declares the same ones); the paper comparison belongs to aggregate only with a reference."""
    rules = analyses(grid.config)
    assert list(rules) == ["aggregate", "scaling_law", "frontier", "critical", "proxy_gap", "figures", "summary",
                           "report"]
    assert rules["figures"] == [f.path for f in outputs.FIGURES.values()]
    assert rules["scaling_law"] == ["tables/scaling_law.csv", "tables/scaling_residuals.csv",
                                    "tables/scaling_forms.csv", "tables/scaling_bootstrap.csv",
                                    "tables/scaling_verdicts.csv", "tables/scaling_bands.csv"]
    assert rules["summary"] == ["summary.md", "findings.rst"]
    assert "tables/paper_comparison.csv" not in rules["aggregate"]
    assert "tables/paper_comparison.csv" in analyses({**grid.config, "reference": "ref.csv"})["aggregate"]
    assert "report" not in analyses({**grid.config, "report": False})
    missing = grid.workdir / "results" / outputs.FIGURES["speculative"].path
    missing.rename(missing.with_suffix(".bak"))
    try:
        assert by_name(collect(grid.workdir, grid.config))[("analyses", "figures")].state == "pending"
    finally:
        missing.with_suffix(".bak").rename(missing)


def test_without_the_lock_a_marked_job_was_interrupted(grid):
    lock = grid.workdir / ".snakemake" / "locks" / "0.input.lock"
    lock.rename(lock.with_suffix(".bak"))
    try:
        jobs = by_name(collect(grid.workdir, grid.config))
        assert jobs[("decode", "tiny/spec/tl__ts")].state == "interrupted"
        assert "interrupted decode   tiny/spec/tl__ts" in format_status(list(jobs.values()))
    finally:
        lock.with_suffix(".bak").rename(lock)


def test_long_output_paths_are_decoded(tmp_path):
    long_path = "results/" + "x" * 300 + "/trace.parquet"  # its marker name is split over folders
    mark_incomplete(tmp_path, long_path, None)
    assert incomplete_outputs(tmp_path) == {long_path: None}


def test_bad_config_is_one_line(tmp_path, capsys):
    assert main(["status", "--workdir", str(tmp_path)]) == 2
    assert "config file not found" in capsys.readouterr().err


SNAKEFILE = """
rule all:
    input: "results/ok.txt", "results/bad.txt", "results/slow.txt"
rule ok:
    output: "results/ok.txt"
    shell: "echo ok > {output}"
rule bad:
    output: "results/bad.txt"
    log: "results/logs/bad.log"
    shell: "echo trying > {log}; exit 3"
rule slow:
    output: "results/slow.txt"
    shell: "while [ ! -e release ]; do sleep 0.1; done; echo done > {output}"
"""


def test_what_a_real_snakemake_run_leaves(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--keep-going"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # until bad has failed and ok has finished (on a loaded machine bad may still be running
        # when slow starts), only slow is left running
        while incomplete_outputs(tmp_path) != {"results/slow.txt": None} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert incomplete_outputs(tmp_path) == {"results/slow.txt": None}
        assert workflow_locked(tmp_path)
        (tmp_path / "release").touch()
        assert proc.wait(timeout=120) != 0  # rule bad failed
    finally:
        proc.kill()
    events = last_events(tmp_path)
    assert events["results/bad.txt"][0] == "failed"
    assert events["results/ok.txt"][0] == events["results/slow.txt"][0] == "started"
    assert not workflow_locked(tmp_path) and incomplete_outputs(tmp_path) == {}


def test_after_a_code_change_the_old_cache_is_not_counted(grid):
    """A folder written by other decoding code is not what the job's next attempt resumes."""
    (key_file,) = (grid.workdir / "results" / ".resume").glob("*/key.json")
    original = key_file.read_text()
    edited = json.loads(original)
    edited["parts"]["code"] = "0" * 64
    key_file.write_text(json.dumps(edited))
    try:
        spec = by_name(collect(grid.workdir, grid.config))[("decode", "tiny/spec/tl__ts")]
        assert spec.detail == "0 of 3 requests decoded, cluster job 4242"
    finally:
        key_file.write_text(original)
