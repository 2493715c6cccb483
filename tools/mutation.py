"""Mutation testing of the modules that decide results, one module at a time (docs/testing.md).

    pip install -e '.[test,mutation]'
    python tools/mutation.py                 # every module in SCOPE
    python tools/mutation.py methods stats   # some of them
    python tools/mutation.py --stored        # the table from mutants/'s stored results, running nothing
    python tools/mutation.py --equivalent    # EQUIVALENT as a markdown list (docs/testing.md)

mutmut (configured in pyproject.toml's [tool.mutmut]: the files, the fast test selection) makes
one-line changes ("mutants") to the functions named in SCOPE and runs, for each, the selected
tests that call the mutated function, with one worker. A mutant the tests do not notice
"survives": a blind spot, unless the change is equivalent (the same behaviour; EQUIVALENT says
why). Prints per module the mutants, how many were killed, the score (killed + timeouts over the
non-equivalent mutants) and the wall time, then every unexplained survivor with its diff; exits
1 when a module scores below TARGET. `mutmut show NAME` shows one mutant, `mutmut browse` all.
"""

from __future__ import annotations

import fnmatch
import math
import os
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.9
# module -> mutant name patterns (mutmut names a mutant <module>.x_<function>__mutmut_<n>, a method
# <module>.xǁ<Class>ǁ<method>__mutmut_<n>). Out of scope: the speculative loop and the model
# loading (they need models: tests/test_speculative.py and the engine tests cover them), the
# resume cache's file handling (tests/test_resume.py).
SCOPE = {
    "methods": ["fsgen.decoding.methods.*"],
    "speculative": [f"fsgen.decoding.speculative.x_{f}__*" for f in
                    ("sample_inverse_cdf", "greedy_accept", "rejection_accept", "tempered_probs", "_s1_fields",
                     "_fill_bonus")],
    "routers": ["fsgen.decoding.routers.*"],
    "distributions": ["fsgen.decoding.distributions.*"],
    "stats": ["fsgen.analysis.stats.*"],
    "scaling": ["fsgen.analysis.scaling.*"],
    "trace": ["fsgen.trace.*"],
    "resume_key": ["fsgen.decoding.resumable.x_decode_request_key__*", "fsgen.decoding.resumable.x_decode_job_parts__*",
                   "fsgen.decoding.resumable.x_decode_job_key__*", "fsgen.resume.x_job_key__*",
                   "fsgen.resume.x_request_key__*"],
    "tokenizers": ["fsgen.fingerprint.x_looks_local__*"] + [f"fsgen.decoding.models.x_{f}__*" for f in
                   ("load_tokenizer", "tokenization_spec", "tokenization_fingerprint",
                    "tokenization_difference", "presentation_differences", "check_shared_tokenizer",
                    "tokenizer_eos_ids", "shared_vocab_size")],
}
# surviving mutants that behave like the original, and why (docs/testing.md lists them too)
_DIM = "dim=+1 is dim=-1 on the [B, V] tensors this function takes"
_CPU = "a device argument: the same on CPU (tests/test_engine_cuda.py runs the GPU path)"
_LBFGS = "LogisticRegression's default lbfgs solver does not use random_state"
_STDERR = ("lm-eval names a standard error '<metric>_stderr,<filter>', whose metric part is never in ACCURACY_METRICS: "
           "the key is skipped without the 'stderr' test")
_LOCALE = ("open's default encoding is the locale's, UTF-8 on this machine (and in Python's UTF-8 mode); the explicit "
           "encoding matters under another locale, which a test cannot set for one call in the same process")
_GOLDEN = ("the golden-section search with a wider bracket or the other side on ties: the same minimum within the "
           "solver's precision (over 5000 random data sets the parameters move < 1e-4 relative, only where α ≈ 20 and "
           "the law is flat, where the original itself is 2e-5 from an independent solver)")
_FLOAT = ("no dtype=float: the same numbers for int and float input (the arithmetic that follows promotes to "
          "float); differs only for input that is not numbers (str, None), which no caller passes")
_AXIS = "axis +1 is axis -1 on the 2-D arrays this function takes"
_SHIFT = ("yc enters Sxy = Σxc·yc, where Σxc = 0 makes y + ȳ the same, and Syy, a constant per data set added to every "
          "α's SSE: the same argmin (this SSE is only compared)")
_NAN_ROWS = ("NaN SSEs come only from a data set whose ratios are all equal (NaN at every α): whichever α is picked, "
             "the row ends NaN (its SSE is recomputed from the residuals)")
_EDGE_IS_FREE = ("at a_free == lower (b_free == lower) exactly, the optimum on that edge is the free optimum: the same "
                 "a, b and SSE")
_DIVIDE = ("a division by zero here is always 0/0 (Sxx = 0 makes Sxy = 0; Sxx + n·x̄² = 0 makes its numerator 0): "
           "'invalid', never 'divide'")
_JSON_ONLY = ("json.dumps's default= is never called: tokenization_spec holds only JSON values (parsed from the "
              "backend's JSON, or a str -> int vocabulary)")
EQUIVALENT: dict[str, str] = {
    "fsgen.decoding.methods.x_contrastive_scores__mutmut_33": 'float("-INF") is float("-inf")',
    "fsgen.decoding.speculative.x_rejection_accept__mutmut_30": _CPU,
    "fsgen.decoding.speculative.x_rejection_accept__mutmut_32": _CPU,
    "fsgen.decoding.speculative.x_rejection_accept__mutmut_40": "a second zero slot after the k drafts is never "
                                                                "indexed (accepted ≤ k)",
    "fsgen.decoding.speculative.x_rejection_accept__mutmut_51": _DIM,
    "fsgen.decoding.speculative.x_sample_inverse_cdf__mutmut_3": _DIM,
    "fsgen.decoding.speculative.x_sample_inverse_cdf__mutmut_10": _DIM,
    "fsgen.decoding.speculative.x_sample_inverse_cdf__mutmut_21": _DIM,
    "fsgen.decoding.speculative.x_sample_inverse_cdf__mutmut_25": _DIM,
    "fsgen.decoding.routers.xǁLearnedRouterǁconsult__mutmut_10": _CPU,
    "fsgen.decoding.routers.x_train_learned_router__mutmut_2": _LBFGS,
    "fsgen.decoding.routers.x_train_learned_router__mutmut_25": _LBFGS,
    "fsgen.decoding.routers.x_train_learned_router__mutmut_27": _LBFGS,
    "fsgen.decoding.routers.x_train_learned_router__mutmut_26": "max_iter is a bound: lbfgs converges on top-k "
                                                                "probabilities in far fewer than 100 iterations",
    "fsgen.decoding.routers.x_train_learned_router__mutmut_28": (
        "max_iter 1001 instead of 1000: a bound never reached"),
    "fsgen.decoding.distributions.x_summarize__mutmut_13": "topk's default dim is -1",
    "fsgen.decoding.distributions.x_summarize__mutmut_14": _DIM,
    "fsgen.decoding.distributions.x_summarize__mutmut_44": _DIM,
    "fsgen.trace.x_arrow_schema__mutmut_11": "pa.field's nullable defaults to True (None reads as the default)",
    "fsgen.trace.x_arrow_schema__mutmut_14": "pa.field's nullable defaults to True",
    "fsgen.trace.x_records_to_frame__mutmut_8": "a request_id column of None is overwritten two lines below",
    "fsgen.trace.x_records_to_frame__mutmut_9": "a request_id column of None is overwritten two lines below",
    "fsgen.decoding.models.x_tokenization_fingerprint__mutmut_4": _JSON_ONLY,
    "fsgen.analysis.stats.x_bootstrap_frequency__mutmut_5": _FLOAT,
    "fsgen.analysis.stats.x_bootstrap_frequency__mutmut_7": _FLOAT,
    "fsgen.analysis.stats.x_bootstrap_frequency__mutmut_10": _FLOAT,
    "fsgen.analysis.stats.x_bootstrap_frequency__mutmut_12": _FLOAT,
    "fsgen.analysis.stats.x_bootstrap_frequency__mutmut_36": "rng.integers(n) draws from [0, n) exactly as rng.integers(0, n)",
    "fsgen.analysis.stats.x_per_request_counts__mutmut_32": "groupby sorts by default",
    "fsgen.analysis.stats.x_primary_metric__mutmut_16": _STDERR,
    "fsgen.analysis.stats.x_primary_metric__mutmut_17": _STDERR,
    "fsgen.analysis.stats.x_read_jsonl__mutmut_2": _LOCALE,
    "fsgen.analysis.stats.x_read_jsonl__mutmut_4": _LOCALE,
    "fsgen.analysis.stats.x_read_jsonl__mutmut_6": "codec names are case-insensitive: UTF-8 is utf-8",
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_76": _GOLDEN,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_84": _GOLDEN,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_121": _GOLDEN,
    "fsgen.analysis.scaling.x_r_squared__mutmut_3": _FLOAT,
    "fsgen.analysis.scaling.x_r_squared__mutmut_5": _FLOAT,
    "fsgen.analysis.scaling.x_r_squared__mutmut_7": _FLOAT,
    "fsgen.analysis.scaling.x_r_squared__mutmut_9": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law__mutmut_3": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law__mutmut_5": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law__mutmut_7": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law__mutmut_9": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_4": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_6": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_18": _FLOAT,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_20": _FLOAT,
    "fsgen.analysis.scaling.x_fit_small_size__mutmut_5": _FLOAT,
    "fsgen.analysis.scaling.x_fit_small_size__mutmut_7": _FLOAT,
    "fsgen.analysis.scaling.x_law_at_limits__mutmut_4": _FLOAT,
    "fsgen.analysis.scaling.x_law_at_limits__mutmut_6": _FLOAT,
    "fsgen.analysis.scaling.x_percentile_interval__mutmut_15": _FLOAT,
    "fsgen.analysis.scaling.x_percentile_interval__mutmut_17": _FLOAT,
    "fsgen.analysis.scaling.x_fit_table__mutmut_59": _FLOAT,
    "fsgen.analysis.scaling.x_fit_table__mutmut_62": _FLOAT,
    "fsgen.analysis.scaling.x_jobs_points__mutmut_29": _FLOAT,
    "fsgen.analysis.scaling.x_jobs_points__mutmut_34": _FLOAT,
    "fsgen.analysis.scaling.x_jobs_points__mutmut_39": _FLOAT,
    "fsgen.analysis.scaling.x_reference_points__mutmut_39": _FLOAT,
    "fsgen.analysis.scaling.x_reference_points__mutmut_46": _FLOAT,
    "fsgen.analysis.scaling.x_reference_points__mutmut_52": _FLOAT,
    "fsgen.analysis.scaling.x__profile_grid__mutmut_7": _AXIS,
    "fsgen.analysis.scaling.x__profile_grid__mutmut_10": _AXIS,
    "fsgen.analysis.scaling.x__profile_grid__mutmut_29": _AXIS,
    "fsgen.analysis.scaling.x__profile_grid__mutmut_33": _AXIS,
    "fsgen.analysis.scaling.x__profile_grid__mutmut_37": _AXIS,
    "fsgen.analysis.scaling.x__profile_grid__mutmut_14": _SHIFT,
    "fsgen.analysis.scaling.x__bounded_line__mutmut_15": _DIVIDE,
    "fsgen.analysis.scaling.x__bounded_line__mutmut_17": _DIVIDE,
    "fsgen.analysis.scaling.x__bounded_line__mutmut_66": _EDGE_IS_FREE,
    "fsgen.analysis.scaling.x__bounded_line__mutmut_67": _EDGE_IS_FREE,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_68": _NAN_ROWS,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_106": _NAN_ROWS,
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_157": _NAN_ROWS,
    "fsgen.analysis.scaling.x_fit_power_law__mutmut_26": (
        "maxfev 20001 instead of 20000: a cap; differs only for a fit needing exactly 20001 evaluations"),
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_7": (
        "the per-data-set path for shared ratios: the same profile (the shared path is a speed-up)"),
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_8": (
        "the per-data-set path for shared ratios: the same profile (the shared path is a speed-up)"),
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_39": (
        "blocks of at least 2 α instead of 1: only the memory bound changes (blocks of 1 need over 1e6 values"
        " a data set)"),
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_169": (
        "take_along_axis's default axis is -1, which is 1 on these [B, 2] arrays"),
    "fsgen.analysis.scaling.x_fit_power_law_profile__mutmut_185": "None assigned into a float array is NaN",
    "fsgen.analysis.scaling.x_fit_small_size__mutmut_18": "np.full_like(float array, None) fills NaN",
    "fsgen.analysis.scaling.x_fit_table__mutmut_23": "groupby sorts by default",
    "fsgen.analysis.scaling.x_fit_table__mutmut_106": "the columns of ScalingFit(n).row() do not depend on n",
    "fsgen.analysis.scaling.x_fit_table__mutmut_107": "the columns of ScalingFit(n).row() do not depend on n",
    "fsgen.analysis.scaling.x_law_at_limits__mutmut_9": (
        "< and <= differ only at x − 0.05 == 1e-3, which no float64 x gives (the nearest give 0.99999…e-3 and"
        " 1.00000…09e-3)"),
    "fsgen.analysis.scaling.x_percentile_interval__mutmut_56": "take_along_axis's default axis is -1",
    "fsgen.analysis.scaling.x_percentile_interval__mutmut_66": "take_along_axis's default axis is -1",
    "fsgen.analysis.scaling.x_percentile_interval__mutmut_85": (
        "weight == 0 means floor(pos) == ceil(pos): the same element, so low == high already holds"),
    "fsgen.analysis.scaling.x_percentile_interval__mutmut_97": (
        "with no valid replicate every value is NaN, so the interpolated bound is NaN either way"),
    "fsgen.decoding.models.x_tokenization_fingerprint__mutmut_7": _JSON_ONLY,
}
DETECTED = ("killed", "timeout", "caught by type check")


def run_module(patterns: list[str], log: Path) -> float:
    """Run mutmut on the mutants matching `patterns` with one worker; the wall time in seconds."""
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        done = subprocess.run(["mutmut", "run", "--max-children", "1", *patterns], stdout=out,
                              stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mutmut failed (exit {done.returncode}); see {log}")
    return time.monotonic() - start


def results() -> dict[str, str]:
    """mutant name -> status of every mutant mutmut has run (`mutmut results --all true`)."""
    done = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True)
    pairs = (line.strip().rsplit(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    return {name: status for name, status in pairs}


def summary(statuses: dict[str, str], seconds: float) -> dict:
    counted = {name: s for name, s in statuses.items() if name not in EQUIVALENT}
    detected = sum(s in DETECTED for s in counted.values())
    return {"mutants": len(statuses), "killed": detected, "equivalent": len(statuses) - len(counted),
            "survived": sum(s == "survived" for s in counted.values()),
            "other": sum(s not in DETECTED and s != "survived" for s in counted.values()),
            "score": detected / len(counted) if counted else float("nan"), "seconds": seconds}


def equivalent_markdown() -> str:
    """EQUIVALENT as a markdown list, by module then mutant (the list in docs/testing.md)."""
    lines = []
    for module, patterns in SCOPE.items():
        names = sorted((m for m in EQUIVALENT if any(fnmatch.fnmatchcase(m, p) for p in patterns)),
                       key=lambda m: (m.rpartition("_")[0], int(m.rpartition("_")[2])))  # mutant 3 before 10
        if names:
            lines.append(f"\n**{module}**\n")
            lines += [f"- `{m}`: {EQUIVALENT[m]}" for m in names]
    return "\n".join(lines).lstrip("\n")


def main(args: list[str]) -> int:
    if args == ["--equivalent"]:
        print(equivalent_markdown())
        return 0
    stored = "--stored" in args
    names = [a for a in args if a != "--stored"]
    unknown = sorted(set(names) - set(SCOPE))
    if unknown:
        raise SystemExit(f"unknown module(s) {unknown}; expected some of {', '.join(SCOPE)}")
    Path("mutants").mkdir(exist_ok=True)
    rows, unexplained = {}, []
    for name in names or list(SCOPE):
        seconds = math.nan if stored else run_module(SCOPE[name], Path("mutants") / f"{name}.log")
        mine = {m: s for m, s in results().items() if any(fnmatch.fnmatchcase(m, p) for p in SCOPE[name])}
        rows[name] = summary(mine, seconds)
        unexplained += [m for m, s in sorted(mine.items()) if s not in DETECTED and m not in EQUIVALENT]
    print("| module | mutants | killed | equivalent | survived | no tests/other | score | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        wall = "not run" if stored else f"{r['seconds'] / 60:.1f} min"
        print(f"| {name} | {r['mutants']} | {r['killed']} | {r['equivalent']} | {r['survived']} | {r['other']} | "
              f"{r['score']:.1%} | {wall} |")
    for mutant in unexplained:
        diff = subprocess.run(["mutmut", "show", mutant], capture_output=True, text=True).stdout
        print(f"\n{mutant}\n" + "\n".join(line for line in diff.splitlines()
                                          if line[:1] in "+-" and line[:3] not in ("+++", "---")))
    return int(any(r["score"] < TARGET for r in rows.values()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
