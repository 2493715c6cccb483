"""Which interventions matter: shares of critical interventions, and routers judged by them (#13).

Input: counterfactual.parquet rows (`fsgen.harness.counterfactual_score.OUTCOME_SCHEMA`), one per
sampled intervention of an oracle job: request_id, position, n_tokens, s1_top1_prob, critical
(the task's outcome changes when System 1's token is kept there), ... The sample is uniform over
the job's interventions, so a share over it estimates the share over all of them.

- `critical_share`: share of critical interventions with a 95% interval that resamples whole
  requests (a request's interventions are not independent), as the intervention frequencies do.
- `critical_by_bin`: the share per bin of relative position (position / n_tokens) or of System 1's
  confidence (its top-1 probability).
- `critical_by_pair`: the share per (benchmark, large, small) over a frame of several jobs.
- `critical_router_curves`: offline routers (`fsgen.analysis.routing`: send a position to System 2
  when System 1's uncertainty passes a threshold) evaluated on the oracle trace by recall of the
  critical interventions instead of all interventions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fsgen.analysis.routing import FAMILY_SIGNAL, on_grid, sweep_curve
from fsgen.analysis.stats import bool_column, bootstrap_frequency
from fsgen.analysis.status import OK, explain_empty
from fsgen.analysis.uncertainty import uncertainty_scores

POSITION_BINS = np.linspace(0.0, 1.0, 6)  # relative position: fifths of the answer
CONFIDENCE_BINS = np.linspace(0.0, 1.0, 6)  # System 1's top-1 probability
PAIR_KEYS = ["benchmark", "large", "small"]


def critical_share(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """{n, n_critical, share, share_low, share_high}: critical / sampled interventions, with a
    95% request-bootstrap interval (NaN for an empty frame)."""
    if not len(frame):
        return {"n": 0, "n_critical": 0, "share": math.nan, "share_low": math.nan, "share_high": math.nan}
    counts = pd.DataFrame({"request_id": frame["request_id"].to_numpy(), "n": 1,
                           "critical": bool_column(frame, "critical").astype(np.int64)})
    per_request = counts.groupby("request_id")[["critical", "n"]].sum()
    pooled, _ = bootstrap_frequency(per_request["critical"].to_numpy(), per_request["n"].to_numpy(), n_boot, seed)
    return {"n": int(per_request["n"].sum()), "n_critical": int(per_request["critical"].sum()),
            "share": pooled.value, "share_low": pooled.low, "share_high": pooled.high}


def relative_position(frame: pd.DataFrame) -> np.ndarray:
    """[N] position / n_tokens, in [0, 1): where in its answer the intervention was."""
    return frame["position"].to_numpy(dtype=np.float64) / frame["n_tokens"].to_numpy(dtype=np.float64)


def critical_by_bin(frame: pd.DataFrame, by: str = "position", edges=None) -> pd.DataFrame:
    """Per bin: bin_low, bin_high, n, n_critical, share (NaN for an empty bin).

    by: "position" (relative position, default edges POSITION_BINS) or "confidence" (System 1's
    top-1 probability, CONFIDENCE_BINS). Bins are [low, high), the last one closed.
    """
    if by == "position":
        values, edges = relative_position(frame), POSITION_BINS if edges is None else edges
    elif by == "confidence":
        values, edges = frame["s1_top1_prob"].to_numpy(dtype=np.float64), CONFIDENCE_BINS if edges is None else edges
    else:
        raise ValueError(f"critical_by_bin: unknown grouping {by!r}; expected position or confidence")
    edges = np.asarray(edges, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)  # [N]
    critical = bool_column(frame, "critical") if len(frame) else np.zeros(0, bool)
    n = np.bincount(index, minlength=len(edges) - 1)
    hits = np.bincount(index, weights=critical.astype(np.float64), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "n": n.astype(np.int64),
                         "n_critical": hits.astype(np.int64), "share": share})


def critical_by_pair(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """critical_share per (benchmark, large, small) of a frame holding several jobs' rows
    (columns PAIR_KEYS added to each job's counterfactual.parquet)."""
    missing = [k for k in PAIR_KEYS if k not in frame.columns]
    if missing:
        raise KeyError(f"critical_by_pair needs columns {missing}")
    rows = [{**dict(zip(PAIR_KEYS, key)), **critical_share(group, n_boot, seed)}
            for key, group in frame.groupby(PAIR_KEYS, sort=True)]
    return pd.DataFrame(rows, columns=PAIR_KEYS + ["n", "n_critical", "share", "share_low", "share_high"])


def critical_labels(oracle_trace: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """[N] bool over the trace's rows: the sampled interventions that are critical."""
    keys = pd.MultiIndex.from_frame(oracle_trace[["request_id", "position"]].astype(np.int64))
    chosen = frame[bool_column(frame, "critical")] if len(frame) else frame
    wanted = pd.MultiIndex.from_frame(chosen[["request_id", "position"]].astype(np.int64))
    found = wanted.isin(keys)
    if not found.all():
        raise ValueError(f"{int((~found).sum())} counterfactual rows are not positions of the oracle trace")
    return keys.isin(wanted)


def critical_router_curves(oracle_trace: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Offline router curves judged by critical interventions: router, grid, share_sent, recall,
    threshold, target ("critical" or "intervention").

    For each family of `fsgen.analysis.routing.FAMILY_SIGNAL`, a threshold sends the positions
    whose uncertainty passes it; `share_sent` is over every token of the trace, `recall` the
    share of the critical sampled interventions sent (target "critical": an unbiased estimate of
    the recall of all critical interventions, the sample being uniform) or of all interventions
    (target "intervention", the usual offline curve, for comparison). Every request is used (no
    training: the families have no learned part). `recall_at` of routing reads either target's rows.
    """
    targets = {"critical": critical_labels(oracle_trace, frame), "intervention": bool_column(oracle_trace, "intervened")}
    curves = []
    for family, signal in FAMILY_SIGNAL.items():
        scores = uncertainty_scores(oracle_trace, signal)
        for target, labels in targets.items():
            share, recall, cut = sweep_curve(scores, labels)
            native = cut if signal == "entropy" else -cut  # back to p₁ / margin units
            curves.append(on_grid(share, recall, native).assign(router=family, target=target))
    out = pd.concat(curves, ignore_index=True).rename(columns={"cut": "threshold"})
    return out[["router", "target", "grid", "share_sent", "recall", "threshold"]]


# ------------------------------------------------------------------ the tables of rule `critical`

JOB_KEYS = ["benchmark", "variant", "large", "small"]
CRITICAL_COLUMNS = [*JOB_KEYS, "interventions", "n", "n_critical", "share", "share_low", "share_high", "status"]
BIN_COLUMNS = [*JOB_KEYS, "by", "bin", "bin_low", "bin_high", "n", "n_critical", "share", "status"]
ROUTER_COLUMNS = [*JOB_KEYS, "router", "target", "grid", "share_sent", "recall", "threshold", "status"]


def counterfactual_status(meta: dict, frame: pd.DataFrame) -> str:
    """Why a job has no critical share ("ok" when it has one): its stage was skipped (a task
    without an accuracy metric), or System 2 never changed a token."""
    if meta.get("status") == "skipped":
        return f"skipped: {meta.get('reason') or 'no reason recorded'}"
    if not len(frame):
        return "no intervention to continue (System 2 never changed a token)"
    return OK


def _job_rows(item: dict, n_boot: int, seed: int) -> tuple[list, list, list]:
    """(critical row, bin rows, router rows) of one oracle job's counterfactual outcomes."""
    ids = {k: item["job"].get(k) for k in JOB_KEYS}
    frame, meta = item["frame"], item["meta"]
    status = counterfactual_status(meta, frame)
    share = critical_share(frame, n_boot, seed) if status == OK else {}
    critical = [{**ids, "interventions": meta.get("interventions"), **share, "status": status}]
    if status != OK:
        return critical, [{**ids, "status": status}], [{**ids, "status": status}]
    bins = []
    for by in ("position", "confidence"):
        table = critical_by_bin(frame, by)
        bins += [{**ids, "by": by, "bin": i, **row, "status": OK if row["n"] else "no sampled intervention in this bin"}
                 for i, row in enumerate(table.to_dict("records"))]
    curves = critical_router_curves(item["trace"], frame)
    curves["status"] = np.where(curves["recall"].notna(), OK, "no critical intervention among the sampled ones")
    return critical, bins, [{**ids, **row} for row in curves.to_dict("records")]


def critical_tables(jobs: list[dict], n_boot: int = 1000, seed: int = 0,
                    why_none: str = "no counterfactual job") -> dict[str, pd.DataFrame]:
    """{"critical", "critical_bins", "critical_routers"} of the oracle jobs' counterfactual outcomes.

    jobs: per job {"job": identity (benchmark, variant, large, small), "frame": its
    counterfactual.parquet rows, "meta": that file's metadata (status, reason, interventions),
    "trace": the oracle job's trace (for the router curves)}. `critical`: per job the critical
    share of the sampled interventions with its request-bootstrap interval; `critical_bins`: per
    bin of relative position and of System 1's top-1 probability (`by`); `critical_routers`: the
    offline router curves judged by critical interventions and by all interventions (`target`).
    A job whose stage was skipped or had nothing to continue is a status row; with no job,
    each table is one row saying `why_none` (e.g. the stage is off)."""
    parts = [[], [], []]
    for item in jobs:
        for part, rows in zip(parts, _job_rows(item, n_boot, seed)):
            part += rows
    out = {}
    for name, rows, columns in zip(("critical", "critical_bins", "critical_routers"), parts,
                                   (CRITICAL_COLUMNS, BIN_COLUMNS, ROUTER_COLUMNS)):
        out[name] = explain_empty(pd.DataFrame(rows, columns=columns), why_none)
    return out
