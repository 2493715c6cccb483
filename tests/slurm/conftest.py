"""Fixtures for the tests against a real one-node SLURM cluster (tests/slurm/cluster.sh).

The session fixture `slurm_cluster` starts the cluster once and always stops it afterwards (also
when a test fails, on Ctrl-C, SIGTERM or interpreter exit). The tests are skipped, with the
reason, when not running as root or when FSGEN_SKIP_SLURM=1; CI sets neither, so it runs them.
A cluster that was already running before the session (started by hand) is left running.
"""

from __future__ import annotations

import atexit
import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLUSTER_SH = HERE / "cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
STATE_DIR = Path(os.environ.get("FSGEN_SLURM_DIR", "/tmp/fsgen-slurm"))

ACCOUNT = "fsgen"  # must match cluster.sh
PARTITION = "debug"
# poll sacct every second instead of the plugin's 40 s first wait / the profile's 30 s
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]


def _cluster(command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), command], capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class SlurmCluster:
    conf: Path                      # SLURM_CONF of the test cluster
    account: str = ACCOUNT
    partition: str = PARTITION
    start_seconds: float = 0.0      # how long `cluster.sh start` took
    env: dict = field(default_factory=dict)

    def sacct(self, workdir: Path) -> list[dict]:
        """Accounting rows (one per job allocation) of the jobs submitted from workdir."""
        fields = ["JobID", "WorkDir", "Comment", "State", "Timelimit", "AllocTRES", "Submit"]
        out = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-a", "-S", "now-1days", "-o", ",".join(fields)],
            capture_output=True, text=True, check=True, env=self.env).stdout
        rows = [dict(zip(fields, r)) for r in csv.reader(out.splitlines(), delimiter="|")]
        return [r for r in rows if Path(r["WorkDir"]) == Path(workdir)]


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.environ.get("FSGEN_SKIP_SLURM") == "1":
        pytest.skip("FSGEN_SKIP_SLURM=1: SLURM cluster tests skipped")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (apt, daemons, mknod); CI runs these as root")

    was_running = _cluster("status").returncode == 0
    stopped = False

    def stop(*_):
        nonlocal stopped
        if not stopped and not was_running:
            stopped = True
            res = _cluster("stop", timeout=180)
            if res.returncode != 0:
                print(f"cluster.sh stop failed:\n{res.stdout}{res.stderr}", file=sys.stderr)

    def on_sigterm(signum, frame):  # let pytest unwind (and run the finally below)
        raise KeyboardInterrupt(f"signal {signum}")

    old_handler = signal.signal(signal.SIGTERM, on_sigterm)
    atexit.register(stop)  # backup for exits that skip fixture teardown
    t0 = time.monotonic()
    try:
        res = _cluster("start")
        if res.returncode != 0:
            pytest.fail(f"tests/slurm/cluster.sh start failed (rc {res.returncode}):\n"
                        f"{res.stdout}\n{res.stderr}", pytrace=False)
        conf = STATE_DIR / "etc" / "slurm.conf"
        old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(conf)
        try:
            yield SlurmCluster(conf=conf, start_seconds=time.monotonic() - t0,
                               env=dict(os.environ))
        finally:
            if old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old_conf
    finally:
        stop()
        signal.signal(signal.SIGTERM, old_handler)


@dataclass
class SnakemakeRun:
    returncode: int
    output: str                     # stdout + stderr
    seconds: float


@pytest.fixture(scope="session")
def run_slurm_snakemake(slurm_cluster):
    """run(workdir, *args, snakefile=None, timeout=...) -> SnakemakeRun: Snakemake through the
    project's SLURM profile plus the test cluster's account and partition."""

    def run(workdir: Path, *args: str, snakefile: Path | None = None, timeout: float = 900,
            profile: bool = True) -> SnakemakeRun:
        cmd = [sys.executable, "-m", "snakemake"]
        if snakefile is not None:
            cmd += ["--snakefile", str(snakefile)]
        if profile:
            cmd += ["--profile", str(PROFILE),
                    "--default-resources", f"slurm_account={slurm_cluster.account}",
                    f"slurm_partition={slurm_cluster.partition}", *FAST_STATUS]
        cmd += list(args)
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                             env=slurm_cluster.env)
        run = SnakemakeRun(res.returncode, res.stdout + res.stderr, time.monotonic() - t0)
        (Path(workdir) / f"snakemake-{int(time.time() * 1000)}.log").write_text(
            " ".join(cmd) + "\n" + run.output)  # kept for debugging failed tests
        return run

    return run
