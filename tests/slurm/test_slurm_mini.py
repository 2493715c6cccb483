"""The SLURM profile against a real cluster, with a tiny self-contained workflow (mini/Snakefile):
GPU and CPU jobs, a retry after TIMEOUT with a larger time limit, a failure whose error names the
SLURM log, and a rerun that picks up from what finished. Skip locally: -m 'not slurm'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900, method="signal")]

MINI = Path(__file__).resolve().parent / "mini" / "Snakefile"


def read_env(path: Path) -> dict[str, str]:
    """KEY=value words written by the mini workflow's jobs."""
    return dict(word.split("=", 1) for word in path.read_text().split())


def by_rule(rows: list[dict]) -> dict[str, list[dict]]:
    """sacct rows grouped by rule name (the plugin's --comment is rule_<name> or
    rule_<name>_wildcards_<values>), each list in submission order."""
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: int(r["JobID"])):
        assert row["Comment"].startswith("rule_"), f"unexpected sacct comment {row['Comment']!r}"
        rule = row["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        groups.setdefault(rule, []).append(row)
    return groups


@pytest.fixture(scope="module")
def mini_run(run_slurm_snakemake, slurm_cluster, tmp_path_factory):
    """The mini workflow's `all` target, once, through the SLURM profile."""
    workdir = tmp_path_factory.mktemp("slurm_mini")
    run = run_slurm_snakemake(workdir, "all", snakefile=MINI)
    assert run.returncode == 0, run.output[-6000:]
    print(f"mini workflow through SLURM: {run.seconds:.0f} s; cluster start "
          f"{slurm_cluster.start_seconds:.0f} s")
    return workdir, run, by_rule(slurm_cluster.sacct(workdir))


def test_gpu_jobs_see_the_gpus_slurm_gave_them(mini_run):
    workdir, _, _ = mini_run
    pair = read_env(workdir / "gpu" / "pair.txt")
    single = read_env(workdir / "gpu" / "single.txt")
    cpu = read_env(workdir / "cpu" / "cpu.txt")
    assert pair["SLURM_JOB_ID"] and single["SLURM_JOB_ID"] and cpu["SLURM_JOB_ID"]
    assert sorted(pair["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "1"]
    assert single["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""


def test_accounting_shows_gpus_only_for_gpu_jobs(mini_run):
    _, _, jobs = mini_run
    # the profile asks cpus_per_task=threads for decode jobs (not threads x GPUs)
    assert "gres/gpu=2" in jobs["decode_pair"][0]["AllocTRES"]
    assert "cpu=1," in jobs["decode_pair"][0]["AllocTRES"]
    assert "gres/gpu=1" in jobs["decode_single"][0]["AllocTRES"]
    for rule in ("cpu_job", "slow"):
        for row in jobs[rule]:
            assert "gres/gpu" not in row["AllocTRES"], (rule, row)
    assert all(row["State"] == "COMPLETED" for rule in ("decode_pair", "decode_single", "cpu_job")
               for row in jobs[rule])


def test_timeout_is_retried_with_attempt_scaled_runtime(mini_run):
    workdir, _, jobs = mini_run
    first, second = jobs["slow"]  # exactly two attempts
    assert first["State"] == "TIMEOUT" and first["Timelimit"] == "00:01:00", first
    assert second["State"] == "COMPLETED" and second["Timelimit"] == "00:03:00", second
    assert read_env(workdir / "slow" / "slow.txt")["runtime"] == "3"


def test_failure_names_the_slurm_log_and_rerun_picks_up(run_slurm_snakemake, slurm_cluster,
                                                        tmp_path):
    (tmp_path / "fail.flag").touch()
    failed = run_slurm_snakemake(tmp_path, "failing_all", "--retries", "0", snakefile=MINI)
    assert failed.returncode != 0
    assert "Error in rule flaky" in failed.output, failed.output[-4000:]
    logs = re.findall(r"(\S*\.snakemake/slurm_logs/rule_flaky/(\d+)\.log)", failed.output)
    assert logs, f"no SLURM log path in Snakemake's error:\n{failed.output[-4000:]}"
    log_path, jobid = logs[0]
    assert Path(log_path).is_absolute() and Path(log_path).exists()
    assert "fail.flag is present" in Path(log_path).read_text()
    assert re.search(rf"SLURM-job '{jobid}' failed", failed.output)
    # keep-going: the independent job finished although flaky failed
    steady = tmp_path / "fail" / "steady.txt"
    assert steady.exists() and not (tmp_path / "fail" / "after_flaky.txt").exists()
    steady_text, steady_mtime = steady.read_text(), steady.stat().st_mtime_ns
    jobs_before = {r["JobID"] for r in slurm_cluster.sacct(tmp_path)}

    (tmp_path / "fail.flag").unlink()  # fix the cause
    rerun = run_slurm_snakemake(tmp_path, "failing_all", snakefile=MINI)
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert (tmp_path / "fail" / "after_flaky.txt").exists()
    # what finished is not redone: same file, and no new SLURM job for it
    assert steady.read_text() == steady_text and steady.stat().st_mtime_ns == steady_mtime
    new_jobs = [r for r in slurm_cluster.sacct(tmp_path) if r["JobID"] not in jobs_before]
    assert sorted(by_rule(new_jobs)) == ["after_flaky", "flaky"]
