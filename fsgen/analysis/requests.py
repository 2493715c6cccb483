"""Per-request rows of a job: what each request cost, its intervention counts, and its outcome.

`job_stats` stores them in `stats.json` (`record["requests"]`: one list per column, 12 values and
~70 bytes per request: 10 kB for the demo's 150 requests, ~14 MB for the paper grid's ~400 jobs ×
500 requests), so the
frontier (`fsgen.analysis.cost.frontier_tables`) and the scaling law's request bootstrap
(`fsgen.analysis.scaling_forms`) are built from `stats.json` records and never re-read traces.

A job's requests are those lm-eval asked for (generations.jsonl), also the ones that generated no
token (zero cost, and usually wrong); without generations.jsonl, the trace's requests. A request's
document is `doc` = "<task>/<doc_id>" (a group task's subtasks number their documents apart).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fsgen.analysis.stats import read_jsonl
from fsgen.analysis.cost import COST_COLUMNS, cost_summary, job_costs, read_wall_seconds, request_correctness
from fsgen.analysis.stats import per_request_counts, single_model_rows
from fsgen.analysis.status import OK, explain_empty, join_reasons, token_status

REQUEST_COLUMNS = ["request_id", "doc", "correct", "interventions", *COST_COLUMNS, "flops"]
COUNT_COLUMNS = ["interventions", *COST_COLUMNS, "flops"]  # zero for a request without tokens
IDENTITY = ["benchmark", "variant", "method", "router", "large", "small", "large_params", "small_params"]


def request_outcomes(generations_path=None, scored_samples_path=None, metric: str | None = None
                     ) -> tuple[pd.DataFrame | None, str]:
    """(request_id, doc, correct) of every request lm-eval asked for, and why `correct` is NaN
    ("ok" when it is not): no generations.jsonl (None), no scored_samples.jsonl, or no
    per-document metric (a generation-only task such as MT-Bench)."""
    if not generations_path or not Path(generations_path).exists():
        return None, "no generations.jsonl"
    generations = read_jsonl(generations_path)
    frame = pd.DataFrame({"request_id": [int(g["request_id"]) for g in generations],
                          "doc": [f"{g['task']}/{g['doc_id']}" for g in generations], "correct": math.nan})
    if not scored_samples_path or not Path(scored_samples_path).exists():
        return frame, "no scored_samples.jsonl beside metrics.json"
    try:
        correct = request_correctness(generations_path, scored_samples_path, metric)
    except KeyError as error:
        return frame, f"no per-document metric ({error.args[0]})"
    return frame.assign(correct=frame["request_id"].map(correct.set_index("request_id")["correct"])), OK


def job_requests(trace: pd.DataFrame, job: dict, metadata: dict | None = None,
                 outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """REQUEST_COLUMNS, one row per request: its costs (`cost.job_costs`, flops included), its
    interventions, its document and correctness (`request_outcomes`; NaN without).

    Every request of `outcomes` is a row (costs 0 where it generated no token); a trace request
    that lm-eval did not ask for is an error (the trace and generations.jsonl disagree)."""
    costs = job_costs(trace, job, metadata)
    counts = per_request_counts(trace)[["request_id", "interventions"]] if len(trace) else \
        pd.DataFrame(columns=["request_id", "interventions"])
    rows = costs.drop(columns="prompt_counted").merge(counts, on="request_id", how="left")
    if outcomes is None:
        outcomes = pd.DataFrame({"request_id": rows["request_id"], "doc": rows["request_id"].map(str),
                                 "correct": math.nan})
    unknown = set(rows["request_id"]) - set(outcomes["request_id"])
    if unknown:
        raise ValueError(f"trace requests {sorted(unknown)[:10]} are not in generations.jsonl")
    rows = outcomes.merge(rows, on="request_id", how="left")
    rows[COUNT_COLUMNS] = rows[COUNT_COLUMNS].astype(float).fillna(0.0)
    return rows[REQUEST_COLUMNS].sort_values("request_id", ignore_index=True)


def requests_record(rows: pd.DataFrame) -> dict:
    """The `stats.json` block: one list per column (integers where they are counts)."""
    out = {"request_id": rows["request_id"].astype(int).tolist(), "doc": rows["doc"].astype(str).tolist(),
           "correct": [None if not np.isfinite(v) else float(v) for v in rows["correct"].astype(float)]}
    for column in COUNT_COLUMNS:
        values = rows[column].astype(float)
        out[column] = values.tolist() if column == "flops" else values.astype(np.int64).tolist()
    return out


def costs_record(rows: pd.DataFrame, correct_status: str = OK, wall_s: float | None = None) -> dict:
    """The job's cost figures (`cost.cost_summary` over its requests), its accuracy over the
    requests, its wall time (seconds, the decode job's Snakemake benchmark file: `wall_seconds`),
    and why any is missing."""
    summary = cost_summary(rows.assign(prompt_counted=False))
    wall = math.nan if wall_s is None else float(wall_s)
    wall_status = OK if wall_s is not None else "no benchmark file of the decode job"
    n = len(rows)
    return {**summary, "n_requests": n, "wall_s": wall,
            "wall_s_per_request": wall / n if n else math.nan,
            "request_accuracy": float(rows["correct"].mean()) if rows["correct"].notna().any() else math.nan,
            "correct_status": correct_status, "wall_status": wall_status}


def wall_seconds(path) -> float | None:
    """The decode job's wall time from its Snakemake benchmark TSV, None when there is none."""
    return read_wall_seconds(path) if path and Path(path).exists() else None


# ------------------------------------------------------------------ aggregate side: from records


def request_frame(records: list[dict]) -> pd.DataFrame:
    """Every job's requests with its identity and wall time (`wall_s`: the job's seconds on each
    of its rows), columns as `cost.frontier_tables` wants them (`doc_id` = the document).
    Records without a `requests` block (stats.json older than it) give no rows."""
    frames = []
    for rec in records:
        block = rec.get("requests")
        if not block:
            continue
        frame = pd.DataFrame(block)
        for key in IDENTITY:
            frame[key] = rec["job"].get(key)
        frame["wall_s"] = (rec.get("costs") or {}).get("wall_s")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*IDENTITY, *REQUEST_COLUMNS, "doc_id", "wall_s"])
    out = pd.concat(frames, ignore_index=True)
    out["correct"] = out["correct"].astype(float)
    out["wall_s"] = out["wall_s"].astype(float)
    return out.assign(doc_id=out["doc"], tokens=out["tokens"].astype(float))


def pair_request_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of pair jobs (the scaling law's points; single-model runs have no ratio)."""
    return frame[~single_model_rows(frame["method"])] if len(frame) else frame


COSTS_COLUMNS = ["benchmark", "variant", "method", "router", "large", "small", "n_requests", "tokens", "s2_share",
                 "s2_consultations_per_request", "s2_forward_passes_per_request", "s1_tokens_read",
                 "s2_tokens_read", "flops_per_request", "wall_s", "wall_s_per_request", "request_accuracy",
                 "prompt_counted", "status"]


def costs_table(records: list[dict]) -> pd.DataFrame:
    """One row per job: its cost figures (stats.json `costs`), with a status naming what is missing."""
    rows = []
    for rec in records:
        costs = rec.get("costs")
        ids = {k: rec["job"].get(k) for k in COSTS_COLUMNS[:6]}
        if not costs:
            rows.append({**ids, "status": "costs not computed (stats.json older than the cost block)"})
            continue
        reasons = [token_status(rec["stats"])]
        reasons += [f"wall time: {costs['wall_status']}" if costs.get("wall_status", OK) != OK else None,
                    f"correctness: {costs['correct_status']}" if costs.get("correct_status", OK) != OK else None]
        rows.append({**ids, **{k: costs.get(k) for k in COSTS_COLUMNS[6:-1]}, "status": join_reasons(reasons)})
    table = pd.DataFrame(rows, columns=COSTS_COLUMNS)
    return explain_empty(table.sort_values(["benchmark", "variant", "large", "small"], ignore_index=True), "no jobs")
