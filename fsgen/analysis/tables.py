"""Aggregate tables built from the per-job `stats.json` records (see `fsgen.analysis.analyze_job`).

Every table has a `status` column saying what could not be computed (fsgen.analysis.status); the
table names and their report categories are in the registry `fsgen.analysis.outputs`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from fsgen.analysis import outputs
from fsgen.analysis.detail_tables import (
    SPEC_FREQUENCIES,
    auroc_table,
    histograms_table,
    positions_table,
    router_offline_missing,
    router_offline_summary,
    router_offline_table,
    router_online_table,
    speculative_tables,
)
from fsgen.analysis.stats import pair_mask
from fsgen.analysis.status import OK, accuracy_status, explain_empty, job_status, wide_status
from fsgen.analysis.uncertainty import SIGNALS

PAIR = ["large", "small"]
ID = ["benchmark", "method", "kind", "router", "large", "small"]


def load_records(paths) -> list[dict]:
    records = []
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        if "job" not in record or "stats" not in record:
            raise ValueError(f"{path}: not a stats.json record (needs 'job' and 'stats')")
        records.append(record)
    return records


def _num(value) -> float:
    return math.nan if value is None else float(value)


def jobs_table(records: list[dict]) -> pd.DataFrame:
    """One row per job: identity, collaboration statistics, accuracy, speculative, AUROC, status.

    `auroc_<signal>` are over all generated positions, `auroc_consulted_<signal>` over the
    positions where System 2 was consulted (the one to read for routed runs; equal otherwise).
    """
    rows = []
    for rec in records:
        row = dict(rec["job"])
        row.update({k: (math.nan if v is None else v) for k, v in rec["stats"].items()})
        acc = rec.get("accuracy", {})
        row.update(accuracy=_num(acc.get("method")), small_accuracy=_num(acc.get("small")),
                   large_accuracy=_num(acc.get("large")), accuracy_metric=acc.get("metric"))
        spec = rec.get("speculative") or {}
        row.update(spec_acceptance_rate=_num(spec.get("acceptance_rate")),
                   spec_mean_accepted_length=_num(spec.get("mean_accepted_length")),
                   spec_s2_passes_per_token=_num(spec.get("s2_passes_per_token")))
        au, consulted = rec.get("auroc") or {}, rec.get("auroc_consulted") or {}
        row.update({f"auroc_{s}": _num(au.get(s)) for s in SIGNALS})
        row.update({f"auroc_consulted_{s}": _num(consulted.get(s)) for s in SIGNALS})
        row.update(accuracy_status=accuracy_status(rec), status=job_status(rec))
        rows.append(row)
    if not rows:  # keep the columns later steps select on
        return explain_empty(pd.DataFrame(columns=[
            *ID, "large_params", "small_params", "freq_pooled", "freq_pooled_low", "freq_pooled_high",
            "s2_call_rate", "accuracy", "small_accuracy", "large_accuracy", "accuracy_status"]), "no jobs")
    df = pd.DataFrame(rows)
    df = df.reindex(columns=[*df.columns, *[c for c in SPEC_FREQUENCIES if c not in df.columns]])
    df["ratio"] = df["large_params"].astype(float) / df["small_params"].astype(float)
    return df.sort_values(["benchmark", "method", "small_params", "large_params"], ignore_index=True)


# the jobs-table column that says why a wide table's value is missing
WIDE_REASON = {"accuracy": "accuracy_status"}


def wide_table(jobs: pd.DataFrame, value: str = "freq_pooled") -> pd.DataFrame:
    """Paper-shaped: one block per method, rows = pairs (large, small), columns = benchmarks.

    Every benchmark with a pair job is a column (also when all its values are NaN, e.g. accuracy
    on MT-Bench); `status` names the empty cells: "<benchmark>: not run" or the job's reason.
    """
    jobs = jobs[pair_mask(jobs)] if len(jobs) else jobs
    if jobs.empty:
        return explain_empty(pd.DataFrame(columns=["method", *PAIR]), "no pair jobs")
    benchmarks = sorted(jobs["benchmark"].unique())
    keys = ["method", "large", "small", "large_params", "small_params"]
    reason = WIDE_REASON.get(value, "status")
    jobs = jobs.assign(_reason=jobs[reason] if reason in jobs.columns else "no value")
    grouped = jobs.groupby([*keys, "benchmark"], sort=True)
    cells = grouped[value].first().unstack("benchmark").reindex(columns=benchmarks)  # [rows, benchmarks]
    present = grouped.size().unstack("benchmark").reindex(index=cells.index, columns=benchmarks).notna()
    reasons = grouped["_reason"].first().unstack("benchmark").reindex(index=cells.index, columns=benchmarks)
    wide = cells.assign(status=wide_status(cells, present, reasons)).reset_index()
    wide.columns.name = None
    wide = wide.sort_values(["method", "small_params", "large_params"], ignore_index=True)
    return wide.drop(columns=["large_params", "small_params"])


def _model_key(name) -> str:
    """Compare model names by their last path component, case-insensitively."""
    return str(name).rstrip("/").split("/")[-1].lower()


def reference_comparison(jobs: pd.DataFrame, reference: pd.DataFrame, benchmark_map: dict | None = None) -> pd.DataFrame:
    """Our pooled frequency beside the published one, per (method, benchmark, pair), outer join.

    Our runs join when their kind names the reference method and their router is `always`;
    model names join on their last path component (case-insensitive); `benchmark_map` maps our
    benchmark names to the reference's. difference = ours − paper.
    """
    benchmark_map = benchmark_map or {}
    ref = reference.assign(_l=reference["large_model"].map(_model_key), _s=reference["small_model"].map(_model_key))
    ref = ref.rename(columns={"collaboration_frequency": "freq_paper"})
    ours = jobs[(jobs["router"].fillna("always") == "always") & jobs["kind"].isin(reference["method"].unique())]
    # speculative: the authors count corrections only (fsgen.analysis.speculative)
    freq = "freq_corrections" if "freq_corrections" in ours.columns else "freq_pooled"
    spec = ours["kind"].eq("speculative")
    ours = pd.DataFrame({
        "method": ours["kind"], "benchmark": ours["benchmark"].map(lambda b: benchmark_map.get(b, b)),
        "our_method": ours["method"], "our_large": ours["large"], "our_small": ours["small"],
        "_l": ours["large"].map(_model_key), "_s": ours["small"].map(_model_key),
        **{f"freq_ours{end}": ours[f"freq_pooled{end}"].where(~spec, ours.get(f"{freq}{end}"))
           for end in ("", "_low", "_high")},
    })
    merged = ours.merge(ref, on=["method", "benchmark", "_l", "_s"], how="outer")
    merged["difference"] = merged["freq_ours"] - merged["freq_paper"]
    merged["matched"] = merged["freq_ours"].notna() & merged["freq_paper"].notna()
    merged["status"] = np.select(
        [merged["matched"], merged["our_method"].isna(), merged["freq_paper"].isna()],
        [OK, "no run of ours for this reference row", "not in the reference"], "our frequency missing")
    merged["large_model"] = merged["large_model"].fillna(merged["our_large"])
    merged["small_model"] = merged["small_model"].fillna(merged["our_small"])
    cols = ["method", "benchmark", "large_model", "small_model", "large_params_b", "small_params_b",
            "our_method", "freq_ours", "freq_ours_low", "freq_ours_high", "freq_paper", "difference", "matched",
            "status"]
    merged = merged[cols].sort_values(["method", "benchmark", "small_params_b", "large_params_b"], ignore_index=True)
    return explain_empty(merged, "neither our runs nor the reference have a method both name")


def build_tables(records: list[dict], reference: pd.DataFrame | None = None,
                 benchmark_map: dict | None = None) -> dict[str, pd.DataFrame]:
    """Every aggregate table of rule `aggregate` by name (`outputs.tables("aggregate")`)."""
    jobs = jobs_table(records)
    spec, accepted = speculative_tables(records)
    offline = router_offline_table(records)
    tables = {
        "jobs": jobs,
        "collaboration_wide": wide_table(jobs, "freq_pooled"),
        "accuracy_wide": wide_table(jobs, "accuracy"),
        "auroc": auroc_table(records),
        "positions": positions_table(records),
        "histograms": histograms_table(records),
        "speculative": spec,
        "accepted_lengths": accepted,
        "router_offline": offline,
        "router_offline_summary": router_offline_summary(offline, missing=router_offline_missing(records)),
        "router_online": router_online_table(jobs),
    }
    if reference is not None:
        tables["paper_comparison"] = reference_comparison(jobs, reference, benchmark_map)
    expected = outputs.tables("aggregate", reference=reference is not None)
    if set(tables) != set(expected):  # one home for the names: fsgen.analysis.outputs
        raise RuntimeError(f"build_tables and the outputs registry disagree on {sorted(set(tables) ^ set(expected))}")
    return tables


def read_tables(paths: dict) -> dict[str, pd.DataFrame]:
    """{name: DataFrame} from {name: CSV path} (an empty file reads as an empty table)."""
    out = {}
    for name, path in paths.items():
        try:
            out[name] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            out[name] = pd.DataFrame()
    return out
