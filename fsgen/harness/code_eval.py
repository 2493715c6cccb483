"""Local pass@k for code benchmarks (MBPP), offline: each candidate runs in `fsgen.sandbox`.

lm-eval's mbpp metric needs `evaluate.load("code_eval")`, which fetches its script from the hub;
this one does the same job without it. It executes model-written code, so it runs only inside
`allow_code_execution()` (the score runner enters it when the benchmark's config opts in with
`allow_code_execution: true`); anywhere else it raises CodeExecutionRefused, so a task YAML
evaluated by hand (lm_eval CLI) cannot execute code behind the config's back.

A candidate the sandbox could not run (status `error`: its start-up, fork or exec failed; see
fsgen.sandbox) is retried, and if it still cannot run it is an *execution error*, never a wrong
answer: pass@k is computed over the candidates that ran, and the share that could not run is
reported as its own metric (`execution_error`). A task in which no candidate ran has no pass@k
and its aggregation stops the scoring with an error (`mean_over_executed`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from contextlib import contextmanager
from math import comb

ENV_FLAG = "FSGEN_ALLOW_CODE_EXECUTION"  # "1" inside allow_code_execution()
TIMEOUT_S = 10.0  # per candidate program (all of a problem's asserts)
MEMORY_MB = 512
SANDBOX_ATTEMPTS = 3  # a sandbox error (not a failing program) is retried this often in all
RETRY_DELAY_S = 0.5  # before the second attempt; doubled before each further one

log = logging.getLogger(__name__)


class CodeExecutionRefused(RuntimeError):
    pass


@contextmanager
def allow_code_execution(timeout_s: float = TIMEOUT_S, memory_mb: int = MEMORY_MB):
    """Let code_eval run candidates while inside; restores the previous state afterwards."""
    saved = {k: os.environ.get(k) for k in (ENV_FLAG, f"{ENV_FLAG}_TIMEOUT_S", f"{ENV_FLAG}_MEMORY_MB")}
    os.environ[ENV_FLAG] = "1"
    os.environ[f"{ENV_FLAG}_TIMEOUT_S"] = str(timeout_s)
    os.environ[f"{ENV_FLAG}_MEMORY_MB"] = str(memory_mb)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def code_execution_allowed() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: 1 - C(n-c, k) / C(n, k), n samples of which c pass."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


_FENCE = re.compile(r"```(?:[A-Za-z0-9_+-]*)\n?(.*?)(?:\n?```|$)", re.DOTALL)


def extract_code(response: str) -> str:
    """The candidate program in a response: the first fenced block if any, else the whole text."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def mbpp_program(candidate: str, doc: dict) -> str:
    """candidate code + the problem's test_setup_code + its asserts, as one program."""
    tests = list(doc.get("test_list") or [])
    if not tests:
        raise ValueError(f"MBPP doc {doc.get('task_id')!r} has no test_list")
    setup = doc.get("test_setup_code") or ""
    return "\n".join([extract_code(candidate), "", setup, "", *tests, ""])


def run_candidate(program: str):
    """Run one program in the sandbox (refused outside allow_code_execution()).

    A sandbox error (the program never ran) is retried up to SANDBOX_ATTEMPTS times in all; the
    last result is returned, so a persistent one still reads status "error".
    """
    if not code_execution_allowed():
        raise CodeExecutionRefused(
            "code execution is not enabled: set allow_code_execution: true for this benchmark in "
            "the config (fsgen's score runner then runs candidates in fsgen.sandbox)"
        )
    from fsgen import sandbox  # imported here so tests can stand in for it

    timeout_s = float(os.environ.get(f"{ENV_FLAG}_TIMEOUT_S", TIMEOUT_S))
    memory_mb = int(os.environ.get(f"{ENV_FLAG}_MEMORY_MB", MEMORY_MB))
    for attempt in range(SANDBOX_ATTEMPTS):
        if attempt:
            time.sleep(RETRY_DELAY_S * 2 ** (attempt - 1))
        result = sandbox.run_python(program, timeout_s=timeout_s, memory_mb=memory_mb)
        if result.status != "error":
            break
    return result


def score_mbpp(doc: dict, candidates: list[str], k: int = 1) -> dict[str, float]:
    """{pass_at_k: pass@k over the candidates that ran (NaN when fewer than k ran),
    execution_error: share of candidates the sandbox could not run} on one MBPP problem."""
    results = [run_candidate(mbpp_program(c, doc)) for c in candidates]
    errors = [r for r in results if r.status == "error"]
    for result in errors:
        log.warning("MBPP task_id %s: a candidate could not be executed (execution error, not a wrong answer): %s",
                    doc.get("task_id"), result.error)
    ran = len(results) - len(errors)
    passed = sum(bool(r.passed) for r in results)
    value = pass_at_k(ran, passed, k) if ran >= k else math.nan
    return {f"pass_at_{k}": value, "execution_error": len(errors) / len(results)}


def mean_over_executed(values: list[float]) -> float:
    """lm-eval aggregation of a pass@k column: the mean over problems whose candidates ran (NaN =
    execution error). Raises when none ran: an infrastructure failure must not read as 0%."""
    executed = [v for v in values if not math.isnan(v)]
    if not executed:
        raise RuntimeError(
            f"code execution failed for all {len(values)} problems (sandbox errors, see the warnings "
            "above): no pass@k can be computed; check fsgen.sandbox.isolation() on this machine"
        )
    if len(executed) < len(values):
        log.warning("pass@k over %d of %d problems: %d could not be executed (reported as execution_error)",
                    len(executed), len(values), len(values) - len(executed))
    return sum(executed) / len(executed)
