"""What could not be computed, said in the tables: the `status` column and its reasons.

Every aggregate table has a `status` column: "ok", or short reasons joined by "; " (e.g.
"no generated tokens", "accuracy: no accuracy metric in metrics.json (generation-only task)").
A table that would have no rows gets one row that says why (every other column empty), so an
output never silently drops what a configuration did not produce.
"""

from __future__ import annotations

import math

import pandas as pd

from fsgen.analysis.stats import SINGLE_KINDS
from fsgen.analysis.uncertainty import auroc_status

OK = "ok"


def join_reasons(reasons) -> str:
    """'ok' when no reason, else the reasons joined by '; '."""
    reasons = [r for r in reasons if r]
    return "; ".join(reasons) if reasons else OK


def explain_empty(df: pd.DataFrame, why: str) -> pd.DataFrame:
    """`df` with a `status` column ("ok" where unset); a table with no rows gets one row saying why."""
    if df.empty:
        row = {c: math.nan for c in df.columns} | {"status": why}
        return pd.DataFrame([row], columns=[*[c for c in df.columns if c != "status"], "status"])
    if "status" not in df.columns:
        return df.assign(status=OK)
    return df.assign(status=df["status"].fillna(OK))


def fit_status(fits: pd.DataFrame) -> pd.DataFrame:
    """Scaling fits whose R² is undefined though their status is "ok" say why (constant frequencies)."""
    if fits.empty or not {"status", "r2"} <= set(fits.columns):
        return fits
    fits = fits.copy()
    undefined = fits["status"].eq(OK) & fits["r2"].isna()
    fits.loc[undefined, "status"] = "R² undefined: every pair has the same frequency"
    return fits


def data_rows(tables: dict, name: str) -> pd.DataFrame:
    """A table by name without its status-only rows (no benchmark or method); empty when absent."""
    df = tables.get(name)
    if df is None or df.empty or set(df.columns) <= {"status"}:
        return pd.DataFrame()
    keys = [c for c in ("benchmark", "method") if c in df.columns]
    return df.dropna(subset=keys, how="any") if keys else df


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def token_status(stats: dict) -> str | None:
    """A job without tokens, or with requests that generated none (needs metrics.json's "n")."""
    n_tokens, n_samples, n_requests = stats.get("n_tokens") or 0, stats.get("n_samples") or 0, stats.get("n_requests")
    if n_tokens == 0:
        return f"no generated tokens ({n_requests} requests)" if _finite(n_requests) else "no generated tokens"
    if _finite(n_requests) and n_requests > n_samples:
        return f"{int(n_requests - n_samples)} of {int(n_requests)} requests generated no tokens"
    return None


def accuracy_status(record: dict) -> str:
    """Why the job's accuracy is NaN ("ok" when it is a number)."""
    acc = record.get("accuracy") or {}
    if _finite(acc.get("method")):
        return OK
    return acc.get("status") or ("no metrics.json" if not acc else "no accuracy metric")


def job_status(record: dict) -> str:
    """Everything the jobs-table row of this record lacks, in a few words."""
    job, stats = record["job"], record["stats"]
    reasons = [token_status(stats)]
    accuracy = accuracy_status(record)
    if accuracy != OK:
        reasons.append(f"accuracy: {accuracy}")
    if job.get("kind") not in SINGLE_KINDS and stats.get("n_tokens"):
        au = record.get("auroc_consulted")
        status = auroc_status(au, stats.get("n_tokens")) if au is not None else "not computed (older stats.json)"
        if status != OK:
            reasons.append(f"AUROC: {status}")
    spec = record.get("speculative")
    if spec is not None and not spec.get("rounds"):
        reasons.append("speculative: no rounds")
    return join_reasons(reasons)


def wide_status(cells: pd.DataFrame, present: pd.DataFrame, reasons: pd.DataFrame) -> pd.Series:
    """Per row of a wide table: which benchmark cells are empty and why.

    cells: [rows, benchmarks] values; present: same shape, bool, a job exists for the cell;
    reasons: same shape, the job's reason for a NaN value.
    """
    out = []
    for i in range(len(cells)):
        parts = []
        for bench in cells.columns:
            if not present.iloc[i][bench]:
                parts.append(f"{bench}: not run")
            elif pd.isna(cells.iloc[i][bench]):
                parts.append(f"{bench}: {reasons.iloc[i][bench]}")
        out.append(join_reasons(parts))
    return pd.Series(out, index=cells.index, dtype=object)
