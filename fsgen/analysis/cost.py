"""What a job's answers cost, and the accuracy–cost frontier of each pair.

Per request of a job, from its trace (docs/analysis.md, "Cost models"):
- s2_tokens: tokens decided by System 2 (consulted positions; speculative: System 2's own
  tokens, i.e. corrections and bonus tokens; a large-alone run: every token);
- s2_consultations: runs of consecutive consulted positions (one call each); s2_forward_passes:
  System 2 forwards (consulted positions; speculative: verification rounds);
- s1_tokens_read, s2_tokens_read: tokens each side's forwards process (catch-up blocks, drafts
  that were rejected), prompt included only when prompt lengths are given (`prompt_counted`);
- flops ≈ 2·N per token read, per model (System 2's side of proxy tuning is the large model and
  the base small model, which read the same blocks); attention's quadratic term is ignored.
Per pair and cost model (s2_share, s2_calls, flops, wall_s): every job's (cost, accuracy) with
intervals, the Pareto set, the frontier band, and the cost needed to recover a fraction (90%)
of the small→large accuracy gap. Documents are resampled jointly for all jobs of a pair (they
answered the same documents), so the bands and intervals are paired.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fsgen.analysis.scaling import percentile_interval
from fsgen.analysis.scaling_forms import group_rng
from fsgen.analysis.stats import (bool_column, document_metrics, primary_metric, read_jsonl, single_model,
                                  single_model_rows)
from fsgen.decoding.methods import get_method

COST_COLUMNS = ["tokens", "s2_tokens", "s2_consultations", "s2_forward_passes", "s1_tokens_read", "s2_tokens_read"]
COST_MODELS = ("s2_share", "s2_calls", "flops", "wall_s")


# ------------------------------------------------------------------ per-request costs of one job


def cost_loop(method: str) -> str:
    """How a method's costs are counted, from the registry: "single" (one model alone), "step"
    (the step loop: oracle, contrastive, proxy) or "speculative" (draft and verify)."""
    entry = get_method(method)  # ValueError naming the known methods
    return "single" if not entry.pair else ("step" if entry.loop == "steploop" else "speculative")


def request_costs(trace: pd.DataFrame, method: str, router: str = "always", k: int | None = None,
                  prompt_lengths: dict | pd.Series | None = None) -> pd.DataFrame:
    """One row per request: request_id, tokens, s2_tokens, s2_consultations, s2_forward_passes,
    s1_tokens_read, s2_tokens_read, prompt_counted.

    method: of the registry (`cost_loop`): single (one model, recorded as System 1), a step-loop
    method (oracle, contrastive, proxy) or speculative (needs k, the drafts per round).
    prompt_lengths: request_id -> prompt tokens; without them only generated tokens (and drafts)
    are counted as read.
    """
    loop = cost_loop(method)
    if loop == "speculative" and not k:
        raise ValueError("speculative costs need k (drafts per round, from the job or trace metadata)")
    if len(trace) == 0:
        return pd.DataFrame(columns=["request_id", *COST_COLUMNS, "prompt_counted"])
    trace = trace.sort_values(["request_id", "position"])
    rid = trace["request_id"].to_numpy()
    consulted = bool_column(trace, "s2_called")  # [T]
    new_request = np.r_[True, rid[1:] != rid[:-1]]
    rows = pd.DataFrame({
        "request_id": rid, "tokens": 1, "consulted": consulted,
        "run_start": consulted & (new_request | ~np.r_[False, consulted[:-1]]),  # [T] first of a run
        "last": np.where(consulted, trace["position"].to_numpy(), -1),
        "own": consulted & ~bool_column(trace, "drafted"),
    })
    per = rows.groupby("request_id", sort=True).agg(
        tokens=("tokens", "sum"), consulted=("consulted", "sum"), runs=("run_start", "sum"),
        last=("last", "max"), own=("own", "sum"))
    out = pd.DataFrame({"tokens": per["tokens"]}, index=per.index)
    if loop == "single":  # the lone model reads every token but the last
        out = out.assign(s2_tokens=0, s2_consultations=0, s2_forward_passes=0, s2_tokens_read=0,
                         s1_tokens_read=per["tokens"] - 1)
    elif loop == "step":  # a consultation at t reads every token decided since the last one
        out = out.assign(s2_tokens=per["consulted"], s2_consultations=per["runs"],
                         s2_forward_passes=per["consulted"], s2_tokens_read=per["last"].clip(lower=0),
                         s1_tokens_read=per["tokens"] - 1)
    else:  # each round: System 2 reads its pending token + k drafts; System 1 drafts k
        k = int(k)
        rounds, full = _speculative_rounds(trace, k)
        out = out.assign(s2_tokens=per["own"], s2_consultations=per["runs"], s2_forward_passes=rounds,
                         s2_tokens_read=rounds * (k + 1) - 1, s1_tokens_read=rounds * k - 1 + full)
    out["prompt_counted"] = prompt_lengths is not None
    if prompt_lengths is not None:
        prompt = _prompt_lengths(prompt_lengths, out.index)
        out["s1_tokens_read"] += prompt
        if loop == "speculative":
            out["s2_tokens_read"] += prompt
        elif loop == "step" and router != "never":  # prefilled with the prompt but its last token
            out["s2_tokens_read"] += prompt - 1 + (per["consulted"] > 0)
    return out.reset_index()[["request_id", *COST_COLUMNS, "prompt_counted"]]


def _speculative_rounds(trace: pd.DataFrame, k: int) -> tuple[pd.Series, pd.Series]:
    """Per request: verification rounds, and rounds whose k drafts were all accepted with System
    2's bonus token kept (System 1 then reads the last draft in the next block)."""
    if "round" not in trace.columns or trace["round"].isna().any():
        raise ValueError("speculative trace needs a 'round' on every row")
    per_round = trace.groupby(["request_id", "round"]).agg(
        drafted=("drafted", "sum"), own=("drafted", lambda d: int((~d.astype(bool)).sum())))
    full = (per_round["drafted"] == k) & (per_round["own"] > 0)
    grouped = full.groupby(level="request_id")
    return grouped.size(), grouped.sum().astype(int)


def _prompt_lengths(prompt_lengths, request_ids: pd.Index) -> pd.Series:
    lengths = pd.Series(prompt_lengths, dtype=float)
    missing = request_ids.difference(lengths.index)
    if len(missing):
        raise KeyError(f"prompt_lengths lack request ids {list(missing[:10])}")
    return lengths.reindex(request_ids).astype(int)


def add_flops(costs: pd.DataFrame, method: str, large_params: float, small_params: float) -> pd.DataFrame:
    """flops = 2·N_S1·s1_tokens_read + 2·N_S2side·s2_tokens_read, the sizes of the method's System 1
    role and System 2 roles in the registry (proxy's System 2 side: the large and the base small
    model; a single-model run: large = small = its model)."""
    entry = get_method(method)
    size = {"large": large_params, "small": small_params, "small_tuned": small_params, "model": small_params}
    s1_params = size[entry.system1]
    s2_params = sum(size[role] for role in entry.system2)
    return costs.assign(flops=2.0 * (s1_params * costs["s1_tokens_read"] + s2_params * costs["s2_tokens_read"]))


def job_costs(trace: pd.DataFrame, job: dict, metadata: dict | None = None,
              prompt_lengths: dict | None = None) -> pd.DataFrame:
    """request_costs + flops for one job (job: method, router, large_params, small_params, k)."""
    metadata = metadata or {}
    k = job.get("k") or metadata.get("k") or (metadata.get("params") or {}).get("k")
    costs = request_costs(trace, job["method"], job.get("router") or "always", k, prompt_lengths)
    return add_flops(costs, job["method"], float(job["large_params"]), float(job["small_params"]))


def cost_summary(costs: pd.DataFrame) -> dict:
    """Job-level figures from per-request costs (with flops)."""
    n, tokens = len(costs), costs["tokens"].sum()
    return {
        "n_requests": n, "tokens": int(tokens),
        "s2_share": costs["s2_tokens"].sum() / tokens if tokens else math.nan,
        "s2_consultations_per_request": costs["s2_consultations"].mean() if n else math.nan,
        "s2_forward_passes_per_request": costs["s2_forward_passes"].mean() if n else math.nan,
        "s1_tokens_read": int(costs["s1_tokens_read"].sum()), "s2_tokens_read": int(costs["s2_tokens_read"].sum()),
        "flops_per_request": costs["flops"].mean() if n else math.nan,
        "prompt_counted": bool(costs["prompt_counted"].all()) if n else False,
    }


# ------------------------------------------------------------------ files: wall time, correctness


def read_wall_seconds(path) -> float:
    """Wall time of a job from its Snakemake benchmark TSV (`s` column; mean over repeats)."""
    table = pd.read_csv(path, sep="\t")
    if "s" not in table.columns or table.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (needs an 's' column and a row)")
    return float(table["s"].mean())


def decode_benchmark_path(bench_dir, job: dict) -> Path:
    """The decode job's benchmark TSV, as rules/decode.smk names it."""
    bench_dir = Path(bench_dir) / "decode" / job["benchmark"]
    if single_model(job["method"]):
        return bench_dir / "single" / f"{job['large']}.tsv"
    return bench_dir / job["variant"] / f"{job['large']}__{job['small']}.tsv"


def request_correctness(generations_path, scored_samples_path, metric: str | None = None) -> pd.DataFrame:
    """request_id, doc_id, correct: lm-eval's per-document metric (scored_samples.jsonl, one row
    per document and filter) joined to the requests of generations.jsonl by (task, doc_id).

    metric: "name,filter" (e.g. "exact_match,flexible-extract"); None picks the key that
    `primary_metric` would report for the job, so per-request correctness averages to it."""
    values = document_metrics(scored_samples_path)  # "name,filter" -> {(task, doc_id): value}
    key = metric or _primary_key(list(values))
    if key not in values:
        raise KeyError(f"{scored_samples_path}: no per-document metric {key!r} (has {sorted(values)})")
    rows = []
    for gen in read_jsonl(generations_path):
        where = (gen["task"], gen["doc_id"])
        if where not in values[key]:
            raise KeyError(f"{scored_samples_path}: no {key!r} for task {where[0]!r} doc {where[1]!r} "
                           f"(request {gen['request_id']} of {generations_path})")
        rows.append({"request_id": gen["request_id"], "doc_id": gen["doc_id"], "correct": values[key][where]})
    return pd.DataFrame(rows, columns=["request_id", "doc_id", "correct"])


def _primary_key(keys: list[str]) -> str | None:
    """The key `primary_metric` picks among `keys` (it picks a value: give each key its index)."""
    index = primary_metric({"metrics": {key: i for i, key in enumerate(keys)}})
    return keys[int(index)] if np.isfinite(index) else None


# ------------------------------------------------------------------ frontiers (pure, small arrays)


def pareto_mask(cost, accuracy) -> np.ndarray:
    """[J] bool: points no other point beats (cost ≤ and accuracy ≥, one strictly); NaN never."""
    cost, accuracy = np.asarray(cost, float), np.asarray(accuracy, float)
    ok = np.isfinite(cost) & np.isfinite(accuracy)
    c, a = cost[:, None], accuracy[:, None]  # row: the point, column: a rival
    beaten = (cost <= c) & (accuracy >= a) & ((cost < c) | (accuracy > a)) & ok[None, :]
    return ok & ~beaten.any(1)


def frontier_polyline(cost, accuracy) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto points by increasing cost (accuracy then increases strictly), duplicates once."""
    cost, accuracy = np.asarray(cost, float), np.asarray(accuracy, float)
    on = pareto_mask(cost, accuracy)
    points = np.unique(np.stack([cost[on], accuracy[on]], 1), axis=0)  # sorted by cost
    return points[:, 0], points[:, 1]


def frontier_at(cost, accuracy, grid) -> np.ndarray:
    """Accuracy on the frontier at each cost in `grid`: linear between consecutive Pareto points
    (reachable by sending a share of the requests to each of the two settings), NaN below the
    cheapest point, the best accuracy above the most expensive."""
    c, a = frontier_polyline(cost, accuracy)
    grid = np.asarray(grid, float)
    if len(c) == 0:
        return np.full_like(grid, np.nan)
    return np.where(grid < c[0], np.nan, np.interp(grid, c, a))


def cost_to_reach(cost, accuracy, target: float) -> tuple[float, list[int]]:
    """Smallest cost on the frontier polyline with accuracy ≥ target, and the indices (into
    cost) of the settings it interpolates between; (inf, []) when the frontier stays below."""
    cost, accuracy = np.asarray(cost, float), np.asarray(accuracy, float)
    c, a = frontier_polyline(cost, accuracy)
    above = np.flatnonzero(a >= target)
    if len(above) == 0:
        return math.inf, []
    j = above[0]
    if j == 0:
        share, ends = c[0], [(c[0], a[0])]
    else:
        share = c[j - 1] + (target - a[j - 1]) / (a[j] - a[j - 1]) * (c[j] - c[j - 1])
        ends = [(c[j - 1], a[j - 1]), (c[j], a[j])]
    index = [int(np.flatnonzero((cost == ce) & (accuracy == ae))[0]) for ce, ae in ends]
    return float(share), index


# ------------------------------------------------------------------ one pair's settings and replicates

SMALL_ALONE, LARGE_ALONE = "small alone", "large alone"
PAIR_NEED = ["benchmark", "variant", "method", "router", "large", "small", "request_id", "correct", *COST_COLUMNS,
             "flops"]


def pair_requests(requests: pd.DataFrame, benchmark: str, large: str, small: str) -> pd.DataFrame:
    """The per-request rows of every setting of one pair (column `setting`): its collaboration
    jobs (by variant name), the small model alone and the large model alone. A lone run of the
    large model counts as System 2 deciding (and reading) every token, read in one call."""
    bench = requests[requests["benchmark"] == benchmark]
    lone = single_model_rows(bench["method"])
    model = bench["large"]  # a lone run's model (large = small)
    collab = bench[~lone & (bench["large"] == large) & (bench["small"] == small)].assign(setting=lambda d: d["variant"])
    alone_small = bench[lone & (model == small)].assign(setting=SMALL_ALONE)
    alone_large = bench[lone & (model == large)].assign(setting=LARGE_ALONE)
    alone_large = alone_large.assign(
        s2_tokens=alone_large["tokens"], s2_consultations=(alone_large["tokens"] > 0).astype(int),
        s2_forward_passes=alone_large["tokens"], s2_tokens_read=alone_large["s1_tokens_read"], s1_tokens_read=0)
    return pd.concat([alone_small, collab, alone_large], ignore_index=True)


def doc_weights(n_docs: int, n_boot: int, rng) -> np.ndarray:
    """[1 + B, D] times each document is drawn: row 0 the full sample, then B resamples."""
    index = rng.integers(0, n_docs, size=(n_boot, n_docs))
    counts = np.bincount((np.arange(n_boot)[:, None] * n_docs + index).ravel(), minlength=n_boot * n_docs)
    return np.vstack([np.ones(n_docs), counts.reshape(n_boot, n_docs)])


def setting_replicates(rows: pd.DataFrame, weights_for) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Accuracy and every cost model per setting on the full sample and each resample of documents.

    rows: `pair_requests` output (doc_id: the document; wall_s optional, job-level seconds).
    weights_for(n_docs) -> [1 + B, D]. Returns settings [J], accuracy [1 + B, J], cost model -> [1 + B, J].
    """
    rows = rows.assign(doc_id=rows["doc_id"] if "doc_id" in rows else rows["request_id"], requests=1,
                       scored=rows["correct"].notna(), correct=rows["correct"].fillna(0.0))  # NaN: no metric
    sums = rows.groupby(["doc_id", "setting"], sort=True)[["requests", "scored", "correct", *COST_COLUMNS,
                                                            "flops"]].sum()
    settings = list(dict.fromkeys(rows["setting"]))  # small alone, collaborations, large alone
    wide = {c: sums[c].unstack("setting").reindex(columns=settings).fillna(0.0).to_numpy() for c in sums.columns}
    w = weights_for(len(wide["requests"]))  # [1 + B, D]
    per = {c: w @ m for c, m in wide.items()}  # [1 + B, J] weighted sums
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = per["correct"] / per["scored"]
        costs = {"s2_share": per["s2_tokens"] / per["tokens"], "s2_calls": per["s2_consultations"] / per["requests"],
                 "flops": per["flops"] / per["requests"]}
        wall = rows.groupby("setting")["wall_s"].first().reindex(settings).to_numpy(float) if "wall_s" in rows \
            else np.full(len(settings), np.nan)
        costs["wall_s"] = np.broadcast_to(wall / per["requests"][0], accuracy.shape)  # measured once: not resampled
    return settings, accuracy, costs


# ------------------------------------------------------------------ frontier tables


def _gap_row(settings, accuracy, cost, fraction, level) -> dict:
    """The cost to recover `fraction` of the small→large gap, full sample and resamples."""
    if SMALL_ALONE not in settings or LARGE_ALONE not in settings:
        return {"status": "no small-alone or large-alone run"}
    small_acc, large_acc = accuracy[:, settings.index(SMALL_ALONE)], accuracy[:, settings.index(LARGE_ALONE)]
    if not (np.isfinite(small_acc[0]) and np.isfinite(large_acc[0])):
        return {"status": "no accuracy: the benchmark has no per-document metric"}
    target = small_acc + fraction * (large_acc - small_acc)  # [1 + B]
    reach = np.array([cost_to_reach(cost[b], accuracy[b], target[b])[0] if large_acc[b] > small_acc[b] else np.nan
                      for b in range(len(accuracy))])
    low, high = percentile_interval(reach[1:], level)
    _, ends = cost_to_reach(cost[0], accuracy[0], target[0]) if large_acc[0] > small_acc[0] else (0, [])
    status = ("no gap: the large model is not more accurate" if not large_acc[0] > small_acc[0]
              else "not reached" if np.isinf(reach[0]) else "ok")
    return {"small_accuracy": small_acc[0], "large_accuracy": large_acc[0], "target": target[0], "cost": reach[0],
            "low": float(low), "high": float(high), "n_not_reached": int(np.isinf(reach[1:]).sum()),
            "n_no_gap": int(np.isnan(reach[1:]).sum()), "via": " → ".join(settings[i] for i in ends), "status": status}


def pair_frontier(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                  fraction: float = 0.9, grid_size: int = 50, key: tuple = ()) -> tuple[list, list, list]:
    """(point rows, band rows, gap rows) of one pair's settings (`pair_requests` output)."""
    rng = group_rng(seed, "frontier", *key)
    settings, accuracy, costs = setting_replicates(rows, lambda n_docs: doc_weights(n_docs, n_boot, rng))
    acc_low, acc_high = percentile_interval(accuracy[1:], level)
    points, bands, gaps = [], [], []
    for model, cost in costs.items():
        if not np.isfinite(cost[0]).any():
            continue
        on = np.array([pareto_mask(cost[b], accuracy[b]) for b in range(len(cost))])  # [1 + B, J]
        low, high = percentile_interval(cost[1:], level)
        points += [{"cost_model": model, "setting": s, "cost": cost[0, j], "cost_low": low[j], "cost_high": high[j],
                    "accuracy": accuracy[0, j], "accuracy_low": acc_low[j], "accuracy_high": acc_high[j],
                    "on_frontier": bool(on[0, j]), "frontier_share": float(on[1:, j].mean()) if n_boot else math.nan}
                   for j, s in enumerate(settings)]
        grid = np.linspace(np.nanmin(cost[0]), np.nanmax(cost[0]), grid_size)
        curves = np.array([frontier_at(cost[b], accuracy[b], grid) for b in range(len(cost))])  # [1 + B, G]
        band_low, band_high = percentile_interval(curves[1:], level)
        bands += [{"cost_model": model, "cost": grid[g], "accuracy": curves[0, g], "low": band_low[g],
                   "high": band_high[g]} for g in range(grid_size)]
        gaps.append({"cost_model": model, "fraction": fraction, **_gap_row(settings, accuracy, cost, fraction, level)})
    return points, bands, gaps


def frontier_tables(requests: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                    fraction: float = 0.9, grid_size: int = 50) -> dict[str, pd.DataFrame]:
    """Accuracy–cost frontiers of every pair (benchmark, large, small) with a collaboration job.

    requests: one row per request of every job (pair and single) with PAIR_NEED columns (job
    identity; request_id, doc_id, correct; the `request_costs` columns and flops; optional wall_s,
    the job's wall time on each of its rows). Returns {"frontier_points", "frontier_bands",
    "gap_recovery"}, each keyed by benchmark, large, small, cost_model."""
    missing = [c for c in PAIR_NEED if c not in requests.columns]
    if missing:
        raise KeyError(f"per-request table lacks columns {missing}")
    tables = {"frontier_points": [], "frontier_bands": [], "gap_recovery": []}
    collab = requests[~single_model_rows(requests["method"])]
    for bench, large, small in collab[["benchmark", "large", "small"]].drop_duplicates().itertuples(index=False):
        key = {"benchmark": bench, "large": large, "small": small}
        rows = pair_requests(requests, bench, large, small)
        parts = pair_frontier(rows, n_boot, seed, level, fraction, grid_size, key=tuple(key.values()))
        for name, part in zip(tables, parts):
            tables[name] += [{**key, **row} for row in part]
    columns = {"frontier_points": FRONTIER_POINT_COLUMNS, "frontier_bands": FRONTIER_BAND_COLUMNS,
               "gap_recovery": GAP_COLUMNS}
    return {name: pd.DataFrame(rows, columns=columns[name]) for name, rows in tables.items()}


KEY = ["benchmark", "large", "small", "cost_model"]
FRONTIER_POINT_COLUMNS = [*KEY, "setting", "cost", "cost_low", "cost_high", "accuracy", "accuracy_low",
                          "accuracy_high", "on_frontier", "frontier_share"]
FRONTIER_BAND_COLUMNS = [*KEY, "cost", "accuracy", "low", "high"]
GAP_COLUMNS = [*KEY, "fraction", "small_accuracy", "large_accuracy", "target", "cost", "low", "high",
               "n_not_reached", "n_no_gap", "via", "status"]
