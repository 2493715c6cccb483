"""MBPP through lm-eval's metric path: pass@1 by the local scorer, the code-execution opt-in, and
sandbox failures reported as execution errors, never as wrong answers (also on a node where the
same user runs many other processes)."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_harness_scoring import StubLM, write_jsonl  # noqa: I001 (tests/ is on sys.path under pytest)

from fsgen import sandbox
from fsgen.harness import code_eval
from fsgen.harness.run import run_decode, run_score
from fsgen.harness.tasks import CodeExecutionNotAllowed

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]

MBPP = [
    {"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
     "test_setup_code": "", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"],
     "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to multiply two numbers.", "code": "def mul(a, b):\n    return a * b",
     "test_setup_code": "import math", "test_list": ["assert mul(2, 3) == 6", "assert mul(1, 1) == 1",
                                                     "assert math.isclose(mul(2, 0.5), 1.0)"],
     "challenge_test_list": []},
]
FIXED_CODE = "def add(a, b):\n    return a + b\n"  # right for task 11, a wrong answer for task 12


@pytest.fixture()
def mbpp_benchmark(tmp_path):
    data = write_jsonl(tmp_path / "mbpp.jsonl", MBPP)
    return {"task": "mbpp_local", "data": {"path": str(data), "split": "test"}, "allow_code_execution": True}


def decoded(tmp_path, entry) -> Path:
    """samples.jsonl of a decode run in which every response is FIXED_CODE."""
    stub = StubLM(lambda prompt: FIXED_CODE)
    run_decode("mbpp", entry, None, tmp_path / "run", lm=stub)
    assert stub.calls == 2
    return tmp_path / "run" / "samples.jsonl"


def scored(out_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out_dir / "scored_samples.jsonl").read_text().splitlines()]
    return {r["doc"]["task_id"]: {"pass_at_1": r["pass_at_1"], "execution_error": r["execution_error"]} for r in rows}


def test_mbpp_pass_at_1_with_local_scorer(tmp_path, mbpp_benchmark):
    samples = decoded(tmp_path, mbpp_benchmark)
    metrics = run_score("mbpp", mbpp_benchmark, samples, tmp_path / "run", bootstrap_iters=0)
    assert metrics["metrics"]["pass_at_1,none"] == pytest.approx(0.5)
    assert metrics["metrics"]["execution_error,none"] == 0.0
    assert scored(tmp_path / "run") == {11: {"pass_at_1": 1.0, "execution_error": 0.0},
                                        12: {"pass_at_1": 0.0, "execution_error": 0.0}}
    prompt = json.loads(samples.read_text().splitlines()[0])["arguments"]
    assert "[BEGIN]" in str(prompt) and "similar_elements" in str(prompt)


def test_code_execution_refused_without_opt_in(tmp_path, mbpp_benchmark):
    entry = {**mbpp_benchmark, "allow_code_execution": False}
    stub = StubLM(lambda prompt: FIXED_CODE)
    with pytest.raises(CodeExecutionNotAllowed, match="allow_code_execution: true"):
        run_decode("mbpp", entry, None, tmp_path / "run", lm=stub)
    assert stub.calls == 0 and not (tmp_path / "run" / "samples.jsonl").exists()
    with pytest.raises(CodeExecutionNotAllowed):
        run_score("mbpp", entry, tmp_path / "samples.jsonl", tmp_path / "run")
    # the metric itself refuses outside the opt-in (e.g. the task run by hand with lm_eval)
    with pytest.raises(code_eval.CodeExecutionRefused):
        code_eval.score_mbpp(MBPP[0], [FIXED_CODE])


def result(status: str, error: str = "") -> sandbox.SandboxResult:
    return sandbox.SandboxResult(status == "passed", status, 0 if status == "passed" else 1, "", "", 0.01, error)


def test_code_eval_uses_the_sandbox(monkeypatch):
    programs = []

    def fake_run_python(program, timeout_s=10.0, memory_mb=512):
        programs.append(program)
        return result("passed" if "add" in program.split("\n")[0] else "failed")

    monkeypatch.setattr("fsgen.sandbox.run_python", fake_run_python)
    with code_eval.allow_code_execution():
        score = code_eval.score_mbpp(MBPP[1], ["```python\ndef mul(a, b):\n    return a * b\n```"])
    assert score == {"pass_at_1": 0.0, "execution_error": 0.0}
    assert programs[0].startswith("def mul(a, b):") and "import math" in programs[0]
    assert programs[0].rstrip().endswith("assert math.isclose(mul(2, 0.5), 1.0)")
    assert code_eval.pass_at_k(2, 1, 1) == pytest.approx(0.5) and code_eval.pass_at_k(5, 0, 2) == 0.0


def test_pass_at_k_counts_only_candidates_that_ran(monkeypatch):
    """5 candidates: 2 pass, 1 is wrong, 2 never run (sandbox errors on every attempt).
    pass@1 = 2/3 over the 3 that ran (2/5 if errors were counted as wrong answers)."""
    statuses = iter(["passed", "error", "error", "error", "failed", "error", "error", "error", "passed"])
    monkeypatch.setattr("fsgen.sandbox.run_python", lambda program, **kw: result(next(statuses), "fork failed"))
    monkeypatch.setattr(code_eval, "RETRY_DELAY_S", 0.0)
    with code_eval.allow_code_execution():
        score = code_eval.score_mbpp(MBPP[0], ["a", "b", "c", "d", "e"], k=1)
    assert score == {"pass_at_1": pytest.approx(2 / 3), "execution_error": pytest.approx(2 / 5)}
    assert next(statuses, None) is None  # every attempt was used: the error retried SANDBOX_ATTEMPTS times
    assert code_eval.mean_over_executed([1.0, math.nan, 0.0, 0.0]) == pytest.approx(1 / 3)
    with pytest.raises(RuntimeError, match="all 2 problems"):
        code_eval.mean_over_executed([math.nan, math.nan])


def test_sandbox_error_is_reported_apart_from_wrong_answers(tmp_path, mbpp_benchmark, monkeypatch):
    """Task 12's program cannot be run (a sandbox error on every attempt): it is left out of
    pass@1 and counted in execution_error; task 11 still runs in the real sandbox and passes."""
    samples = decoded(tmp_path, mbpp_benchmark)
    real_run_python, attempts = sandbox.run_python, []

    def flaky_sandbox(program, **kwargs):
        if "mul(" in program:
            attempts.append(program)
            return result("error", "fork failed: [Errno 11] Resource temporarily unavailable")
        return real_run_python(program, **kwargs)

    monkeypatch.setattr("fsgen.sandbox.run_python", flaky_sandbox)
    monkeypatch.setattr(code_eval, "RETRY_DELAY_S", 0.0)
    metrics = run_score("mbpp", mbpp_benchmark, samples, tmp_path / "run", bootstrap_iters=0)["metrics"]
    assert (metrics["pass_at_1,none"], metrics["execution_error,none"]) == (1.0, 0.5)  # not 0.5 and 0
    per_doc = scored(tmp_path / "run")
    assert per_doc[11] == {"pass_at_1": 1.0, "execution_error": 0.0}
    assert math.isnan(per_doc[12]["pass_at_1"]) and per_doc[12]["execution_error"] == 1.0
    assert len(attempts) == code_eval.SANDBOX_ATTEMPTS
    monkeypatch.setattr("fsgen.sandbox.run_python", lambda program, **kw: result("error", "no sandbox"))
    with pytest.raises(RuntimeError, match="code execution failed for all 2 problems"):
        run_score("mbpp", mbpp_benchmark, samples, tmp_path / "all-errors", bootstrap_iters=0)


# Runs as a user of its own (a fresh uid when the test runs as root) without user namespaces,
# the configuration of the bug: 40 other processes of the same user are alive while lm-eval scores
# the samples; then the user's process limit is reached, so the sandbox cannot fork at all.
CROWDED_SCORER = """
import json, os, resource, subprocess, sys
from pathlib import Path
from fsgen import sandbox
from fsgen.harness import code_eval
from fsgen.harness.run import run_score

def user_tasks():  # RLIMIT_NPROC counts threads too
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "status").read_text().split("\\nUid:")[1].split()[0] == str(os.getuid()):
                count += len(os.listdir(entry / "task"))
        except (OSError, IndexError):
            pass
    return count

sandbox._unshare_works = lambda: False
code_eval.RETRY_DELAY_S = 0.05
entry, samples, out = json.loads(sys.argv[1])
sleepers = [subprocess.Popen(["sleep", "120"]) for _ in range(40)]
report = {"uid": os.getuid(), "user_tasks": user_tasks(), "isolation": sandbox.isolation()}
try:
    report["crowded"] = run_score("mbpp", entry, samples, out + "/crowded", bootstrap_iters=0)["metrics"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (user_tasks() + 1, hard))  # room for the sandbox's first process
    try:
        run_score("mbpp", entry, samples, out + "/exhausted", bootstrap_iters=0)
        report["exhausted"] = "scored without an error"
    except RuntimeError as exc:
        report["exhausted"] = str(exc)
    resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
finally:
    for sleeper in sleepers:
        sleeper.kill()
        sleeper.wait()
print("REPORT " + json.dumps(report))
"""


def as_other_user() -> tuple[list[str], int | None]:
    """Command prefix that runs as an unprivileged user, and its uid (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot run the scorer as an ordinary user")
    uid = 900_000 + secrets.randbelow(90_000)  # below fsgen.sandbox's fresh uids
    # CAP_DAC_READ_SEARCH only lets it read the Python installation and the repository where they
    # live under root-only folders; it gives no exemption from RLIMIT_NPROC.
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search"], uid


def kill_processes_of(uid: int) -> None:
    """SIGKILL leftovers of the test's own fresh uid (none when the helper cleaned up)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "status").read_text().split("\nUid:")[1].split()[0] == str(uid):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, IndexError):
            pass


def test_scorer_on_a_node_crowded_by_the_same_user(tmp_path, mbpp_benchmark):
    """Without user namespaces and with 40 other processes of the user alive, correct programs
    pass and wrong ones fail (a process limit that counted the user's processes would make every
    fork fail); with the user's process limit exhausted, scoring stops with an execution error
    instead of reporting pass@1 = 0."""
    samples = decoded(tmp_path, mbpp_benchmark)
    out, home = tmp_path / "out", tmp_path / "home"
    for folder in (out, home):
        folder.mkdir()
        folder.chmod(0o777)
    prefix, uid = as_other_user()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(home), "HF_HOME": str(home / "hf"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = json.dumps([mbpp_benchmark, str(samples), str(out)])
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", CROWDED_SCORER, args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=240)
    finally:
        if uid is not None:
            kill_processes_of(uid)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert report["uid"] != 0 and report["user_tasks"] > 40
    assert not report["isolation"]["network_namespace"] and not report["isolation"]["process_limit"]
    assert report["crowded"]["pass_at_1,none"] == pytest.approx(0.5)  # task 11 passes, task 12 is wrong
    assert report["crowded"]["execution_error,none"] == 0.0
    assert "code execution failed for all 2 problems" in report["exhausted"]
    assert "could not be executed (execution error, not a wrong answer)" in done.stderr
    assert "Resource temporarily unavailable" in done.stderr  # the fork that failed, named in the log
