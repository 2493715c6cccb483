"""Aggregate tables built from the per-job `stats.json` records (see `fsgen.analysis.job.analyze_job`).

Every table has a `status` column saying what could not be computed (fsgen.analysis.status); the
table names and their report categories are in the registry `fsgen.analysis.outputs`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from fsgen import atomic
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
from fsgen.analysis.definitions import MISSING_DEFINITION, PROXY_FREQUENCIES, authors_definition
from fsgen.analysis.requests import costs_table
from fsgen.analysis.sampling import sampled, sampling_table
from fsgen.analysis.stats import pair_mask
from fsgen.analysis.status import OK, accuracy_status, explain_empty, job_status, wide_status
from fsgen.analysis.uncertainty import SIGNALS

PAIR = ["large", "small"]
ID = ["benchmark", "variant", "method", "router", "large", "small"]


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
        row["temperature"] = _num((rec.get("decode") or {}).get("temperature"))
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
    extra = [c for c in (*SPEC_FREQUENCIES, *PROXY_FREQUENCIES) if c not in df.columns]
    df = df.reindex(columns=[*df.columns, *extra])
    df["ratio"] = df["large_params"].astype(float) / df["small_params"].astype(float)
    return df.sort_values(["benchmark", "variant", "small_params", "large_params"], ignore_index=True)


# the jobs-table column that says why a wide table's value is missing
WIDE_REASON = {"accuracy": "accuracy_status"}


def wide_table(jobs: pd.DataFrame, value: str = "freq_pooled") -> pd.DataFrame:
    """Paper-shaped: one block per variant, rows = pairs (large, small), columns = benchmarks.

    Every benchmark with a pair job is a column (also when all its values are NaN, e.g. accuracy
    on MT-Bench); `status` names the empty cells: "<benchmark>: not run" or the job's reason.
    """
    jobs = jobs[pair_mask(jobs)] if len(jobs) else jobs
    if jobs.empty:
        return explain_empty(pd.DataFrame(columns=["variant", *PAIR]), "no pair jobs")
    benchmarks = sorted(jobs["benchmark"].unique())
    keys = ["variant", "large", "small", "large_params", "small_params"]
    reason = WIDE_REASON.get(value, "status")
    jobs = jobs.assign(_reason=jobs[reason] if reason in jobs.columns else "no value")
    grouped = jobs.groupby([*keys, "benchmark"], sort=True)
    cells = grouped[value].first().unstack("benchmark").reindex(columns=benchmarks)  # [rows, benchmarks]
    present = grouped.size().unstack("benchmark").reindex(index=cells.index, columns=benchmarks).notna()
    reasons = grouped["_reason"].first().unstack("benchmark").reindex(index=cells.index, columns=benchmarks)
    wide = cells.assign(status=wide_status(cells, present, reasons)).reset_index()
    wide.columns.name = None
    wide = wide.sort_values(["variant", "small_params", "large_params"], ignore_index=True)
    return wide.drop(columns=["large_params", "small_params"])


def _model_key(name) -> str:
    """Compare model names by their last path component, case-insensitively."""
    return str(name).rstrip("/").split("/")[-1].lower()


def reference_comparison(jobs: pd.DataFrame, reference: pd.DataFrame, benchmark_map: dict | None = None) -> pd.DataFrame:
    """Our frequency under the FS-GEN authors' definition beside the published one, per (method,
    benchmark, pair), outer join; `definition` names the definition of each row
    (`fsgen.analysis.definitions.authors_definition`: proxy against the base small model,
    speculative corrections only, the others as fsgen counts them).

    Our runs join when their method is the reference's method, their router is `always` and
    they decode greedily (temperature 0 or unset: the paper's setting); `our_variant` names the
    run. Model names join on their last path component (case-insensitive); `benchmark_map` maps
    our benchmark names to the reference's. difference = ours − paper.
    """
    benchmark_map = benchmark_map or {}
    ref = reference.assign(_l=reference["large_model"].map(_model_key), _s=reference["small_model"].map(_model_key))
    ref = ref.rename(columns={"collaboration_frequency": "freq_paper"})
    greedy = ~sampled(jobs["temperature"]) if "temperature" in jobs.columns else True
    ours = jobs[(jobs["router"].fillna("always") == "always") & jobs["method"].isin(reference["method"].unique())
                & greedy]
    column = ours["method"].map(lambda m: authors_definition(m)[0])
    ours = pd.DataFrame({
        "method": ours["method"], "benchmark": ours["benchmark"].map(lambda b: benchmark_map.get(b, b)),
        "our_variant": ours["variant"], "our_large": ours["large"], "our_small": ours["small"],
        "_l": ours["large"].map(_model_key), "_s": ours["small"].map(_model_key),
        **{f"freq_ours{end}": _pick(ours, column, end) for end in ("", "_low", "_high")},
    })
    merged = ours.merge(ref, on=["method", "benchmark", "_l", "_s"], how="outer")
    merged["definition"] = merged["method"].map(lambda m: authors_definition(m)[1])
    merged["difference"] = merged["freq_ours"] - merged["freq_paper"]
    merged["matched"] = merged["freq_ours"].notna() & merged["freq_paper"].notna()
    missing = merged["method"].map(lambda m: MISSING_DEFINITION.get(m, "our frequency missing"))
    merged["status"] = np.select(
        [merged["matched"], merged["our_variant"].isna(), merged["freq_paper"].isna() & merged["freq_ours"].notna()],
        [OK, "no run of ours for this reference row", "not in the reference"], missing)
    merged["large_model"] = merged["large_model"].fillna(merged["our_large"])
    merged["small_model"] = merged["small_model"].fillna(merged["our_small"])
    cols = ["method", "benchmark", "large_model", "small_model", "large_params_b", "small_params_b",
            "our_variant", "definition", "freq_ours", "freq_ours_low", "freq_ours_high", "freq_paper", "difference",
            "matched", "status"]
    merged = merged[cols].sort_values(["method", "benchmark", "small_params_b", "large_params_b"], ignore_index=True)
    return explain_empty(merged, "neither our runs nor the reference have a method both name")


def _pick(jobs: pd.DataFrame, column: pd.Series, end: str) -> pd.Series:
    """Per row, the value of the column `column` names (+ `end`: "", "_low", "_high")."""
    values = [jobs.at[i, f"{c}{end}"] if f"{c}{end}" in jobs.columns else math.nan for i, c in column.items()]
    return pd.Series(values, index=jobs.index, dtype=float)


def build_tables(records: list[dict], reference: pd.DataFrame | None = None,
                 benchmark_map: dict | None = None) -> dict[str, pd.DataFrame]:
    """Every aggregate table of rule `aggregate` by name (`outputs.tables("aggregate")`)."""
    jobs = jobs_table(records)
    spec, accepted = speculative_tables(records)  # greedy runs: the prediction from the oracle assumes greedy
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
        "costs": costs_table(records),
        "sampling": sampling_table(records),
    }
    if reference is not None:
        tables["paper_comparison"] = reference_comparison(jobs, reference, benchmark_map)
    expected = outputs.tables("aggregate", reference=reference is not None)
    if set(tables) != set(expected):  # one home for the names: fsgen.analysis.outputs
        raise RuntimeError(f"build_tables and the outputs registry disagree on {sorted(set(tables) ^ set(expected))}")
    return tables


def write_table(df: pd.DataFrame, path) -> None:
    """A table as CSV (no index), atomically."""
    atomic.write_text(path, df.to_csv(index=False))


def read_tables(paths: dict) -> dict[str, pd.DataFrame]:
    """{name: DataFrame} from {name: CSV path} (an empty file reads as an empty table)."""
    out = {}
    for name, path in paths.items():
        try:
            out[name] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            out[name] = pd.DataFrame()
    return out


def rule_inputs(inputs) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None]:
    """(tables, reference) of an analysis rule's named inputs (`snakemake.input`): every input
    named as a registry table (`outputs.TABLES`) read as a table, and `reference` (config
    `reference`: the published frequencies, optional) as a CSV. Other inputs (code, stats) are
    not read."""
    named = dict(inputs.items())
    reference = pd.read_csv(named["reference"]) if named.get("reference") else None
    return read_tables({k: v for k, v in named.items() if k in outputs.TABLES}), reference
