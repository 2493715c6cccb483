"""Local pass@k for code benchmarks (MBPP), offline: each candidate runs in `fsgen.sandbox`.

lm-eval's mbpp metric needs `evaluate.load("code_eval")`, which fetches its script from the hub;
this one does the same job without it. It executes model-written code, so it runs only inside
`allow_code_execution()` (the score runner enters it when the benchmark's config opts in with
`allow_code_execution: true`); anywhere else it raises CodeExecutionRefused, so a task YAML
evaluated by hand (lm_eval CLI) cannot execute code behind the config's back.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from math import comb

ENV_FLAG = "FSGEN_ALLOW_CODE_EXECUTION"  # "1" inside allow_code_execution()
TIMEOUT_S = 10.0  # per candidate program (all of a problem's asserts)
MEMORY_MB = 512


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
    """Run one program in the sandbox (refused outside allow_code_execution())."""
    if not code_execution_allowed():
        raise CodeExecutionRefused(
            "code execution is not enabled: set allow_code_execution: true for this benchmark in "
            "the config (fsgen's score runner then runs candidates in fsgen.sandbox)"
        )
    from fsgen import sandbox  # imported here so tests can stand in for it

    timeout_s = float(os.environ.get(f"{ENV_FLAG}_TIMEOUT_S", TIMEOUT_S))
    memory_mb = int(os.environ.get(f"{ENV_FLAG}_MEMORY_MB", MEMORY_MB))
    return sandbox.run_python(program, timeout_s=timeout_s, memory_mb=memory_mb)


def score_mbpp(doc: dict, candidates: list[str], k: int = 1) -> float:
    """pass@k of `candidates` (model responses) on one MBPP problem."""
    passed = sum(bool(run_candidate(mbpp_program(c, doc)).passed) for c in candidates)
    return pass_at_k(len(candidates), passed, k)
