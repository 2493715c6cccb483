"""results/summary.md: a short plain-text digest to read in a terminal.

Every section is always present; a section without data says why (from the tables' `status`
columns), so the digest builds for any grid and never drops a topic silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fsgen.analysis import atomic_write_text
from fsgen.analysis.stats import SINGLE_KINDS, pair_mask
from fsgen.analysis.status import data_rows as table


def _f(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _table(df: pd.DataFrame) -> str:
    """A plain Markdown table (no optional dependency such as tabulate)."""
    if df.empty:
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_f(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _why(tables: dict, name: str, default: str) -> str:
    """The status of a table's status-only row (why it has no data), else `default`."""
    df = tables.get(name)
    if df is not None and "status" in df.columns and len(df):
        found = [s for s in dict.fromkeys(df["status"].dropna().astype(str)) if s != "ok"]
        if found:
            return "; ".join(found[:3])
    return default


def headline(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per method × benchmark: pairs, frequency range and mean, accuracy vs baselines, call rate."""
    pair_jobs = jobs[pair_mask(jobs)]
    rows = []
    for (method, bench), g in pair_jobs.groupby(["method", "benchmark"], sort=True):
        rows.append({"method": method, "benchmark": bench, "pairs": len(g),
                     "freq mean": g["freq_pooled"].mean(), "freq min": g["freq_pooled"].min(),
                     "freq max": g["freq_pooled"].max(), "S2 call rate": g["s2_call_rate"].mean(),
                     "acc": g["accuracy"].mean(), "acc small": g["small_accuracy"].mean(),
                     "acc large": g["large_accuracy"].mean()})
    return pd.DataFrame(rows)


def _missing_notes(pair_jobs: pd.DataFrame) -> list[str]:
    """One line per distinct reason a pair job lacks something (from the jobs table's status)."""
    if "status" not in pair_jobs.columns:
        return []
    bad = pair_jobs[pair_jobs["status"].fillna("ok") != "ok"]
    notes = []
    for status, g in bad.groupby("status", sort=True):
        notes.append(f"- {len(g)} job(s) ({', '.join(sorted(set(g['benchmark'])))}): {status}")
    return notes


def collaboration_section(tables: dict) -> list[str]:
    jobs = table(tables, "jobs")
    pair_jobs = jobs[pair_mask(jobs)] if len(jobs) else jobs
    n_bench = pair_jobs["benchmark"].nunique() if len(pair_jobs) else 0
    n_pairs = pair_jobs[["large", "small"]].drop_duplicates().shape[0] if len(pair_jobs) else 0
    out = [f"{len(pair_jobs)} pair jobs, {n_bench} benchmark(s), {n_pairs} pair(s). Frequencies are pooled "
           "(interventions / generated tokens); accuracies are means over pairs.", "", "## Collaboration and accuracy", ""]
    if pair_jobs.empty:
        return out + [f"No pair job: {_why(tables, 'jobs', 'none configured')}.", ""]
    always = pair_jobs[pair_jobs["router"].fillna("always") == "always"]
    share_below = (always["freq_pooled"].dropna() < 0.2).mean() if always["freq_pooled"].notna().any() else math.nan
    out.append(f"Jobs (router always) with frequency below 20%: {_f(100 * share_below, 0)}%.\n")
    out.append(_table(headline(jobs)))
    notes = _missing_notes(pair_jobs)
    if notes:
        out += ["What could not be computed (jobs table, column `status`):", *notes, ""]
    return out


def scaling_section(fits: pd.DataFrame | None) -> list[str]:
    out = ["## Scaling law", "",
           "f(r) = b − a·r^(−α), r = large/small params; alternative f = c + d·ln N_small (N in billions).", ""]
    fits = table({"fits": fits}, "fits")
    if fits.empty:
        return out + ["No fit: no pair job with a collaboration frequency.", ""]
    columns = ["source", "method", "benchmark", "n_pairs", "a", "alpha", "b", "r2", "alt_d", "alt_r2", "status"]
    view = fits[[c for c in columns if c in fits.columns]]
    out.append(_table(view.rename(columns={"alt_d": "d (ln N_small)", "alt_r2": "alt r2"})))
    both = fits.dropna(subset=["r2", "alt_r2"])
    if len(both):
        wins = (both["alt_r2"] > both["r2"]).groupby([both["source"], both["method"]]).agg(["sum", "size"])
        lines = [f"- {src} {m}: N_small alone fits better in {int(r['sum'])} of {int(r['size'])} benchmark(s)"
                 for (src, m), r in wins.iterrows()]
        out += ["Which predictor fits better (higher R²):", *lines, ""]
    else:
        out += ["No benchmark has both fits (see `status`), so the predictors are not compared.", ""]
    return out


def comparison_section(tables: dict) -> list[str]:
    comp = table(tables, "paper_comparison")
    if comp.empty:
        return []  # no reference configured: nothing to compare with
    out = ["## Comparison with the published FS-GEN frequencies", ""]
    matched = comp[comp["matched"].astype(bool)]
    if len(matched):
        agg = matched.groupby(["method", "benchmark"]).agg(
            pairs=("difference", "size"), mean_diff=("difference", "mean"),
            mean_abs_diff=("difference", lambda d: d.abs().mean())).reset_index()
        out.append(_table(agg.rename(columns={"mean_diff": "mean ours−paper", "mean_abs_diff": "mean abs(ours−paper)"})))
    else:
        out.append("No pair matches the reference by model names (the comparison is via the fitted laws above).\n")
    return out


def speculative_section(tables: dict) -> list[str]:
    out = ["## Speculative decoding", ""]
    spec = table(tables, "speculative")
    meas = spec[spec["source"] == "measured"] if len(spec) else spec
    if meas.empty:
        return out + [f"No measured speculative run: {_why(tables, 'speculative', 'no speculative method configured')}.", ""]
    pred = spec[spec["source"] == "predicted"][["benchmark", "large", "small", "k", "acceptance_rate"]]
    joined = meas.merge(pred, on=["benchmark", "large", "small", "k"], how="left", suffixes=("", "_predicted"))
    for bench, g in joined.groupby("benchmark"):
        ks = ",".join(f"{k:g}" for k in sorted(g["k"].dropna().unique()))
        line = (f"- {bench}: acceptance {_f(g['acceptance_rate'].mean())} measured vs "
                f"{_f(g['acceptance_rate_predicted'].mean())} predicted from oracle traces; "
                f"{_f(g['mean_accepted_length'].mean(), 2)} tokens per System 2 pass (K={ks})")
        if "freq_corrections" in g.columns:
            line += (f"; frequency {_f(g['freq_corrections'].mean())} counting corrections only (the FS-GEN "
                     f"authors' definition), {_f(g['freq_s2_tokens'].mean())} counting every System 2 token")
        out.append(line)
    return out + [""]


def router_section(tables: dict) -> list[str]:
    out = ["## Routers (offline, oracle traces, held-out requests)", ""]
    summ = table(tables, "router_offline_summary").dropna(subset=["share_sent_max"])
    if summ.empty:
        return out + [f"No offline router sweep: {_why(tables, 'router_offline_summary', 'no oracle job')}.", ""]
    agg = summ.groupby(["benchmark", "router", "share_sent_max"])["recall"].mean().unstack("share_sent_max")
    agg.columns = [f"recall @≤{int(100 * c)}% sent" for c in agg.columns]
    return out + [_table(agg.reset_index())]


def uncertainty_section(tables: dict) -> list[str]:
    out = ["## Uncertainty", ""]
    au = table(tables, "auroc")
    if len(au) and "kind" in au.columns:
        au = au[~au["kind"].isin(SINGLE_KINDS)]
    value = "auroc_consulted" if "auroc_consulted" in au.columns else "auroc"
    if au.empty or au[value].isna().all():
        return out + [f"No AUROC: {_why(tables, 'auroc', 'no pair job with interventions')}.", ""]
    where = ("positions where System 2 was consulted (a router's skipped positions are non-interventions by "
             "construction)") if value == "auroc_consulted" else "all generated positions"
    out += [f"Mean AUROC over pairs (predicting an intervention from System 1's signal), on {where}:", ""]
    return out + [_table(au.groupby(["method", "benchmark", "signal"])[value].mean().unstack("signal").reset_index())]


def build_summary(tables: dict, fits: pd.DataFrame | None) -> str:
    out = ["# fsgen summary", ""]
    out += collaboration_section(tables)
    out += scaling_section(fits)
    out += comparison_section(tables)
    out += speculative_section(tables)
    out += router_section(tables)
    out += uncertainty_section(tables)
    return "\n".join(out).rstrip() + "\n"


def write_summary(tables: dict, fits: pd.DataFrame | None, path) -> Path:
    atomic_write_text(build_summary(tables, fits), path)
    return Path(path)
