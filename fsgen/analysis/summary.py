"""results/summary.md: a short plain-text digest to read in a terminal."""

from __future__ import annotations

import math

import pandas as pd

from fsgen.analysis import atomic_write_text
from fsgen.analysis.stats import pair_mask


def _f(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _table(df: pd.DataFrame) -> str:
    """A plain Markdown table (no optional dependency such as tabulate)."""
    if df.empty:
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_f(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


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


def build_summary(tables: dict, fits: pd.DataFrame | None) -> str:
    jobs = tables["jobs"]
    out = ["# fsgen summary", ""]
    pair_jobs = jobs[pair_mask(jobs)] if len(jobs) else jobs
    out.append(f"{len(pair_jobs)} pair jobs, {pair_jobs['benchmark'].nunique() if len(jobs) else 0} benchmark(s), "
               f"{pair_jobs[['large', 'small']].drop_duplicates().shape[0] if len(jobs) else 0} pair(s). "
               "Frequencies are pooled (interventions / generated tokens); accuracies are means over pairs.")
    out += ["", "## Collaboration and accuracy", ""]
    if len(jobs):
        always = pair_jobs[pair_jobs["router"].fillna("always") == "always"]
        share_below = (always["freq_pooled"] < 0.2).mean() if len(always) else math.nan
        out.append(f"Jobs (router always) with frequency below 20%: {_f(100 * share_below, 0)}%.\n")
        out.append(_table(headline(jobs)))
    if fits is not None and len(fits):
        out += ["## Scaling law", "",
                "f(r) = b − a·r^(−α), r = large/small params; alternative f = c + d·ln N_small (N in billions).", ""]
        view = fits[["source", "method", "benchmark", "n_pairs", "a", "alpha", "b", "r2", "alt_d", "alt_r2", "status"]]
        out.append(_table(view.rename(columns={"alt_d": "d (ln N_small)", "alt_r2": "alt r2"})))
        both = fits.dropna(subset=["r2", "alt_r2"])
        if len(both):
            wins = (both["alt_r2"] > both["r2"]).groupby([both["source"], both["method"]]).agg(["sum", "size"])
            lines = [f"- {src} {m}: N_small alone fits better in {int(r['sum'])} of {int(r['size'])} benchmark(s)"
                     for (src, m), r in wins.iterrows()]
            out += ["Which predictor fits better (higher R²):", *lines, ""]
    comp = tables.get("paper_comparison")
    if comp is not None and len(comp):
        matched = comp[comp["matched"]]
        out += ["## Comparison with the published FS-GEN frequencies", ""]
        if len(matched):
            agg = matched.groupby(["method", "benchmark"]).agg(
                pairs=("difference", "size"), mean_diff=("difference", "mean"),
                mean_abs_diff=("difference", lambda d: d.abs().mean())).reset_index()
            out.append(_table(agg.rename(columns={"mean_diff": "mean ours−paper", "mean_abs_diff": "mean abs(ours−paper)"})))
        else:
            out.append("No pair matches the reference by model names (the comparison is via the fitted laws above).\n")
    spec = tables.get("speculative")
    if spec is not None and len(spec[spec["source"] == "measured"]):
        meas = spec[spec["source"] == "measured"]
        pred = spec[spec["source"] == "predicted"][["benchmark", "large", "small", "k", "acceptance_rate"]]
        joined = meas.merge(pred, on=["benchmark", "large", "small", "k"], how="left", suffixes=("", "_predicted"))
        out += ["## Speculative decoding", ""]
        for bench, g in joined.groupby("benchmark"):
            out.append(f"- {bench}: acceptance {_f(g['acceptance_rate'].mean())} measured vs "
                       f"{_f(g['acceptance_rate_predicted'].mean())} predicted from oracle traces; "
                       f"{_f(g['mean_accepted_length'].mean(), 2)} tokens per System 2 pass (K={','.join(map(str, sorted(g['k'].unique())))})")
        out.append("")
    summ = tables.get("router_offline_summary")
    if summ is not None and len(summ):
        out += ["## Routers (offline, oracle traces, held-out requests)", ""]
        agg = summ.groupby(["benchmark", "router", "share_sent_max"])["recall"].mean().unstack("share_sent_max")
        agg.columns = [f"recall @≤{int(100 * c)}% sent" for c in agg.columns]
        out.append(_table(agg.reset_index()))
    au = tables.get("auroc")
    if au is not None and len(au):
        out += ["## Uncertainty", "", "Mean AUROC over pairs (predicting an intervention from System 1's signal):", ""]
        out.append(_table(au.groupby(["method", "benchmark", "signal"])["auroc"].mean().unstack("signal").reset_index()))
    return "\n".join(out).rstrip() + "\n"


def write_summary(tables: dict, fits: pd.DataFrame | None, path):
    from pathlib import Path

    atomic_write_text(build_summary(tables, fits), path)
    return Path(path)
