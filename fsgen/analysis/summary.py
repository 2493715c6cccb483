"""results/summary.md: a short plain-text digest to read in a terminal.

Every section is always present; a section without data says why (from the tables' `status`
columns), so the digest builds for any grid and never drops a topic silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fsgen import atomic
from fsgen.analysis.findings import findings, findings_markdown, greedy_always, write_findings
from fsgen.analysis.routing import recall_at
from fsgen.analysis.stats import pair_mask, single_model_rows
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
    """Per variant × benchmark: pairs, frequency range and mean, accuracy vs baselines, call rate."""
    pair_jobs = jobs[pair_mask(jobs)]
    rows = []
    for (variant, bench), g in pair_jobs.groupby(["variant", "benchmark"], sort=True):
        rows.append({"variant": variant, "benchmark": bench, "pairs": len(g),
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
    always = greedy_always(tables)
    share_below = (always["freq_pooled"].dropna() < 0.2).mean() if always["freq_pooled"].notna().any() else math.nan
    out.append(f"Jobs (greedy, router always) with frequency below 20%: {_f(100 * share_below, 0)}%.\n")
    out.append(_table(headline(jobs)))
    out += proxy_lines(pair_jobs)
    notes = _missing_notes(pair_jobs)
    if notes:
        out += ["What could not be computed (jobs table, column `status`):", *notes, ""]
    return out


def proxy_lines(pair_jobs: pd.DataFrame) -> list[str]:
    """Proxy tuning's frequency under fsgen's definition (tuned small) and the authors' (base small)."""
    if "freq_proxy_base" not in pair_jobs.columns or not pair_jobs["method"].eq("proxy").any():
        return []
    proxy = pair_jobs[pair_jobs["method"] == "proxy"]
    if proxy["freq_proxy_base"].isna().all():
        return ["Proxy tuning under the authors' definition (against the base small model): not available, the "
                "traces have no s1_base_token_id (decoded before fsgen recorded it).", ""]
    return [f"Proxy tuning: mean frequency {_f(proxy['freq_proxy_tuned'].mean())} against the tuned small model "
            f"(fsgen's `freq_pooled`), {_f(proxy['freq_proxy_base'].mean())} against the base small model (the FS-GEN "
            "authors' definition, used in the paper comparison).", ""]


def scaling_section(fits: pd.DataFrame | None) -> list[str]:
    out = ["## Scaling law", "",
           "f(r) = b − a·r^(−α), r = large/small params; alternative f = c + d·ln N_small (N in billions).", ""]
    fits = table({"fits": fits}, "fits")
    if fits.empty:
        return out + ["No fit: no pair job with a collaboration frequency.", ""]
    columns = ["source", "variant", "benchmark", "n_pairs", "a", "alpha", "b", "r2", "alt_d", "alt_r2", "status"]
    view = fits[[c for c in columns if c in fits.columns]]
    out.append(_table(view.rename(columns={"alt_d": "d (ln N_small)", "alt_r2": "alt r2"})))
    both = fits.dropna(subset=["r2", "alt_r2"])
    if len(both):
        wins = (both["alt_r2"] > both["r2"]).groupby([both["source"], both["variant"]]).agg(["sum", "size"])
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
    out = ["## Comparison with the published FS-GEN frequencies", "",
           "Ours under the authors' definitions (column `definition`: proxy tuning against the base small model, "
           "speculative decoding corrections only), greedy runs with router always.", ""]
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
    if len(au) and "method" in au.columns:
        au = au[~single_model_rows(au["method"])]
    value = "auroc_consulted" if "auroc_consulted" in au.columns else "auroc"
    if au.empty or au[value].isna().all():
        return out + [f"No AUROC: {_why(tables, 'auroc', 'no pair job with interventions')}.", ""]
    where = ("positions where System 2 was consulted (a router's skipped positions are non-interventions by "
             "construction)") if value == "auroc_consulted" else "all generated positions"
    out += [f"Mean AUROC over pairs (predicting an intervention from System 1's signal), on {where}:", ""]
    return out + [_table(au.groupby(["variant", "benchmark", "signal"])[value].mean().unstack("signal").reset_index())]


def forms_section(tables: dict) -> list[str]:
    out = ["## Which law the frequencies follow", "",
           "Four forms compared by AICc and leave-one-pair-out error (table `scaling_verdicts`; intervals in "
           "`scaling_bootstrap`):", ""]
    verdicts = table(tables, "scaling_verdicts")
    if verdicts.empty:
        return out + [f"No comparison: {_why(tables, 'scaling_verdicts', 'no pair job')}.", ""]
    return out + [f"- {sentence}" for sentence in verdicts["sentence"]] + [""]


def table_section(tables: dict, name: str, heading: str, intro: str, empty: str, columns: list | None = None,
                  default_why: str = "") -> list[str]:
    """A summary section that is one table: heading, intro, the table (its `columns`), or, when it
    has no rows, `empty` with `{why}` (the table's status) filled in."""
    out = [heading, "", intro, ""]
    rows = table(tables, name)
    if rows.empty:
        return out + [empty.format(why=_why(tables, name, default_why)), ""]
    return out + [_table(rows[columns] if columns else rows)]


def cost_section(tables: dict) -> list[str]:
    return table_section(
        tables, "gap_recovery", "## Cost and the accuracy–cost frontier",
        "Cost of recovering 90% of the small→large accuracy gap on each pair's frontier (95% interval; "
        "`s2_share`: share of tokens System 2 decided, `s2_calls`: calls per request, `flops` and `wall_s` per "
        "request):", "No frontier: {why}.",
        ["benchmark", "large", "small", "cost_model", "cost", "low", "high", "via", "status"], "no pair job")


def critical_section(tables: dict) -> list[str]:
    out = ["## Which interventions matter", "",
           "Share of sampled interventions whose answer changes outcome when System 1's token is kept (critical), "
           "with 95% request-bootstrap intervals:", ""]
    crit = table(tables, "critical")
    if crit.empty:
        return out + [f"Not measured: {_why(tables, 'critical', 'no counterfactual job')}.", ""]
    out.append(_table(crit[["benchmark", "variant", "large", "small", "n", "share", "share_low", "share_high",
                            "status"]]))
    routers = table(tables, "critical_routers").dropna(subset=["recall"])
    if len(routers):
        rows = []
        for (bench, target), g in routers.groupby(["benchmark", "target"], sort=True):
            for share in (0.1, 0.2):
                per_pair = pd.DataFrame([recall_at(p, share) for _, p in g.groupby(["variant", "large", "small"])])
                rows.append({"benchmark": bench, "target": target, "sent ≤": share, **per_pair.mean().to_dict()})
        out += ["Offline routers (oracle traces, mean over pairs of the best recall): critical interventions vs all:",
                "", _table(pd.DataFrame(rows))]
    return out


def sampling_section(tables: dict) -> list[str]:
    return table_section(
        tables, "sampling", "## Collaboration under sampling",
        "Speculative decoding with temperature > 0: share of judged drafts System 2 rejects, mean and 95% "
        "t-interval across seeds, beside the greedy run's mismatch share:", "{why}.",
        default_why="no sampled speculative run")


def proxy_gap_section(tables: dict) -> list[str]:
    return table_section(
        tables, "proxy_gap", "## Proxy tuning against the large model tuned directly",
        "Share of the gap between the large model and its tuned variant (decoded alone) that proxy tuning "
        "closes, per metric, with a paired 95% bootstrap interval over documents:", "Not measured: {why}.",
        ["benchmark", "variant", "large", "small", "large_tuned", "metric", "large_value", "proxy_value",
         "tuned_value", "share", "share_low", "share_high", "status"], "no proxy job with a tuned large model")


def build_summary(tables: dict, fits: pd.DataFrame | None) -> str:
    out = ["# fsgen summary", "", "## Headline findings", "", *findings_markdown(findings(tables)), ""]
    out += collaboration_section(tables)
    out += scaling_section(fits)
    out += forms_section(tables)
    out += comparison_section(tables)
    out += speculative_section(tables)
    out += sampling_section(tables)
    out += router_section(tables)
    out += cost_section(tables)
    out += critical_section(tables)
    out += proxy_gap_section(tables)
    out += uncertainty_section(tables)
    return "\n".join(out).rstrip() + "\n"


def write_summary(tables: dict, fits: pd.DataFrame | None, path, findings_path=None) -> Path:
    """summary.md, and (when `findings_path` is given) the report's landing text findings.rst."""
    atomic.write_text(path, build_summary(tables, fits))
    if findings_path is not None:
        write_findings({**tables, "fits": fits if fits is not None else tables.get("fits")}, findings_path)
    return Path(path)
