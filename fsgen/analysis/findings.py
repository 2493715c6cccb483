"""The run's headline numbers, in sentences: the first section of summary.md and the report's landing page.

Each finding is computed from the run's tables (never typed in), with the figures and report
categories that show it. `findings_markdown` renders them for summary.md, `findings_rst` for
`results/findings.rst`, which the Snakefile's report description (workflow/report/workflow.rst)
includes: Snakemake defines a link target for every report file by its file name and for every
category by its name, so `scaling_law.png`_ opens that figure in the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fsgen.analysis.figbase import always_jobs, pair_label
from fsgen.analysis.sampling import sampled
from fsgen.analysis.scaling_forms import AICC_CLEAR
from fsgen.analysis.status import OK, data_rows as table

UNDER = 0.2  # the paper's "collaboration below 20%" threshold


@dataclass
class Finding:
    topic: str  # a few words (bold in the rst)
    text: str  # the sentence(s); names in `backquotes`
    figures: tuple[str, ...] = ()  # registry figure names that show it
    category: str | None = None  # the report category with its tables


def _f(x, digits=3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


def greedy_always(tables) -> pd.DataFrame:
    """Pair jobs with router always that decode greedily (the paper's setting)."""
    jobs = always_jobs(tables)
    return jobs[~sampled(jobs["temperature"])] if len(jobs) and "temperature" in jobs else jobs


def frequency_findings(tables) -> list[Finding]:
    jobs = greedy_always(tables)
    freq = jobs.dropna(subset=["freq_pooled"]) if len(jobs) else jobs
    if freq.empty:
        return [Finding("Collaboration frequency", "no pair job with router always has a frequency.",
                        ("collaboration",), "Collaboration")]
    low, high = freq.loc[freq["freq_pooled"].idxmin()], freq.loc[freq["freq_pooled"].idxmax()]

    def where(row):
        return f"`{row['variant']}`, {pair_label(row['large'], row['small'])}, `{row['benchmark']}`"

    under = int((freq["freq_pooled"] < UNDER).sum())
    text = (f"over {len(freq)} greedy pair jobs with router always, the share of tokens System 2 changed ranges "
            f"from {_f(low['freq_pooled'])} ({where(low)}) to {_f(high['freq_pooled'])} ({where(high)}); "
            f"{under} of {len(freq)} jobs ({_pct(under / len(freq))}) are below {UNDER:.0%}.")
    return [Finding("Collaboration frequency", text, ("collaboration",), "Collaboration")]


def router_finding(tables) -> Finding:
    """The lowest System 2 call rate at which a routed run matches the large model alone."""
    online, jobs = table(tables, "router_online"), table(tables, "jobs")
    routed = online[~online["router"].isin(["always", "never"])] if len(online) else online
    if routed.empty or jobs.empty:
        return Finding("Best router", "no run with a router other than always in this grid.", ("router_online",),
                       "Routers")
    large = jobs.drop_duplicates(["benchmark", "large", "small"]).set_index(["benchmark", "large", "small"])
    routed = routed.join(large["large_accuracy"], on=["benchmark", "large", "small"])
    parts = []
    for bench, g in routed.groupby("benchmark", sort=True):
        reach = g[g["accuracy"] >= g["large_accuracy"]]
        if g["accuracy"].isna().all():
            parts.append(f"on `{bench}` the routed runs have no accuracy")
        elif len(reach):
            best = reach.loc[reach["s2_call_rate"].idxmin()]
            parts.append(f"on `{bench}`, `{best['variant']}` on {pair_label(best['large'], best['small'])} matches "
                         f"the large model alone (accuracy {_f(best['accuracy'])} vs {_f(best['large_accuracy'])}) "
                         f"consulting System 2 at {_pct(best['s2_call_rate'])} of tokens")
        else:
            gap = (g["large_accuracy"] - g["accuracy"]).dropna()
            closest = g.loc[gap.idxmin()] if len(gap) else g.iloc[0]
            parts.append(f"on `{bench}` no routed run reaches the large model's accuracy (closest: `{closest['variant']}` "
                         f"on {pair_label(closest['large'], closest['small'])}, {_f(closest['accuracy'])} vs "
                         f"{_f(closest['large_accuracy'])} at a call rate of {_pct(closest['s2_call_rate'])})")
    return Finding("Best router at the large model's accuracy", "; ".join(parts) + ".", ("router_online",), "Routers")


def scaling_findings(tables) -> list[Finding]:
    fits = table(tables, "fits")
    paper_like = set(greedy_always(tables).get("variant", pd.Series(dtype=str)))  # routed, sampled: summary.md
    ours = fits[(fits["source"] == "ours") & fits["variant"].isin(paper_like)] if len(fits) else fits
    fitted = ours.dropna(subset=["r2"]) if len(ours) else ours
    if fitted.empty:
        why = "; ".join(dict.fromkeys(ours["status"].astype(str))) if len(ours) else "no pair job"
        text = f"b − a·r^(−α) could not be fitted ({why})."
    else:
        where = fitted["at_bound"] if "at_bound" in fitted else fitted["status"]
        bound = int(where.fillna("").astype(str).str.contains("alpha").sum())
        text = (f"b − a·r^(−α) fitted for {len(fitted)} variant × benchmark groups (greedy, router always), "
                f"R² {_f(fitted['r2'].min(), 2)} to {_f(fitted['r2'].max(), 2)}; α at its 0.05 bound (exponent not "
                f"identified) in {bound} of them.")
    return [Finding("Scaling law", text, ("scaling_law", "scaling_small_size"), "Scaling law"),
            form_finding(tables, paper_like)]


def form_finding(tables, variants: set) -> Finding:
    """Which form the data support, grouped over the greedy `always` variants (one sentence per
    variant and benchmark: summary.md and the scaling_verdicts table)."""
    forms = table(tables, "scaling_forms")
    ours = forms[(forms["source"] == "ours") & forms["variant"].isin(variants)] if len(forms) else forms
    if ours.empty:
        return Finding("Which form", f"forms not compared: {_status(tables, 'scaling_forms')}.", ("scaling_law",),
                       "Scaling law")
    verdicts: dict[str, list[str]] = {}
    power_best = bound = 0
    for (variant, bench), g in ours.groupby(["variant", "benchmark"], sort=True):
        scored = g[np.isfinite(g["aicc"].astype(float))].sort_values("aicc")
        power = g[g["form"] == "power"]
        bound += int(len(power) and "alpha" in str(power["at_bound"].iloc[0]).split(","))
        if scored.empty:
            verdict = "too few pairs to compare the forms by AICc"
        elif len(scored) == 1 or scored["aicc"].iloc[1] - scored["aicc"].iloc[0] >= AICC_CLEAR:
            verdict = f"the data support {scored['formula'].iloc[0]}"
            power_best += scored["form"].iloc[0] == "power"
        else:
            verdict = f"the data do not separate {scored['formula'].iloc[0]} from {scored['formula'].iloc[1]}"
        verdicts.setdefault(verdict, []).append(f"`{variant}`/`{bench}`")
    n = sum(len(v) for v in verdicts.values())
    text = "; ".join(f"{verdict} for {', '.join(names)}" for verdict, names in verdicts.items())
    text += (f" (AICc, ΔAICc ≥ {AICC_CLEAR:g}). The FS-GEN law b − a·r^(−α) is the supported form in {power_best} "
             f"of {n}, its exponent at the 0.05 bound in {bound}; one sentence per variant: summary.md.")
    return Finding("Which form", text, ("scaling_law",), "Scaling law")


def gap_finding(tables) -> Finding:
    gaps = table(tables, "gap_recovery")
    gaps = gaps[gaps["cost_model"] == "s2_share"] if len(gaps) else gaps
    if gaps.empty:
        return Finding("90% of the gap", "no pair with a frontier (needs per-request outcomes of every setting).",
                       ("frontier",), "Cost")
    parts = []
    for row in gaps.sort_values(["benchmark", "large", "small"]).itertuples():
        where = f"{pair_label(row.large, row.small)} (`{row.benchmark}`)"
        if row.status == OK:
            parts.append(f"{where} {_f(row.cost, 2)} [{_f(row.low, 2)}, {_f(row.high, 2)}]")
        else:
            parts.append(f"{where} {row.status}")
    text = ("System 2 share of tokens needed to recover 90% of the small→large accuracy gap on the accuracy–cost "
            f"frontier (95% interval): {'; '.join(parts)}.")
    return Finding("90% of the gap", text, ("frontier",), "Cost")


def critical_finding(tables) -> Finding:
    crit = table(tables, "critical")
    ok = crit[crit["status"] == OK] if len(crit) else crit
    if ok.empty:
        why = "; ".join(dict.fromkeys(crit["status"].astype(str))) if len(crit) else _status(tables, "critical")
        return Finding("Which interventions matter", f"no critical share: {why}.", ("critical",),
                       "Critical interventions")
    text = (f"of the sampled interventions, {_pct(ok['share'].min())} to {_pct(ok['share'].max())} change the "
            f"answer's outcome when System 1's token is kept (per pair, {len(ok)} oracle jobs, "
            f"{int(ok['n'].sum())} continuations).")
    routers = table(tables, "critical_routers")
    if len(routers):
        at = routers[(routers["router"] == "entropy") & np.isclose(routers["grid"], UNDER)]
        means = at.groupby("target")["recall"].mean()
        if {"critical", "intervention"} <= set(means.index):
            text += (f" Sending the {UNDER:.0%} most uncertain tokens (entropy) catches {_pct(means['critical'])} of "
                     f"critical interventions vs {_pct(means['intervention'])} of all interventions (mean over pairs).")
    return Finding("Which interventions matter", text, ("critical",), "Critical interventions")


def sampling_finding(tables) -> Finding:
    rows = table(tables, "sampling")
    if rows.empty:
        return Finding("Under sampling", f"{_status(tables, 'sampling')}.", ("speculative",), "Speculative")
    rows = rows.dropna(subset=["rejection_share"])
    with_interval = rows.dropna(subset=["rejection_low", "rejection_high", "greedy_mismatch_share"])
    outside = ((with_interval["greedy_mismatch_share"] < with_interval["rejection_low"])
               | (with_interval["greedy_mismatch_share"] > with_interval["rejection_high"])).sum()
    temps = ", ".join(f"{t:g}" for t in sorted(rows["temperature"].unique()))
    text = (f"at temperature {temps}, System 2 rejects {_f(rows['rejection_share'].min())} to "
            f"{_f(rows['rejection_share'].max())} of the judged drafts ({len(rows)} pair × setting, "
            f"{int(rows['n_seeds'].max())} seeds at most), against a greedy mismatch share of "
            f"{_f(rows['greedy_mismatch_share'].min())} to {_f(rows['greedy_mismatch_share'].max())}; the 95% "
            f"interval across seeds excludes the greedy share for {outside} of {len(with_interval)}.")
    return Finding("Under sampling", text, ("speculative",), "Speculative")


def proxy_gap_finding(tables) -> Finding:
    rows = table(tables, "proxy_gap")
    ok = rows[rows["status"] == OK].dropna(subset=["share"]) if len(rows) else rows
    if ok.empty:
        return Finding("Proxy tuning", f"no gap share: {_status(tables, 'proxy_gap')}.", (), "Proxy tuning")
    gap = ok.loc[ok["gap"].abs().groupby([ok["benchmark"], ok["large"], ok["small"]]).idxmax()]  # the widest gap
    parts = [f"{pair_label(r.large, r.small)} on `{r.metric}` (`{r.benchmark}`): {_pct(r.share)} "
             f"[{_pct(r.share_low)}, {_pct(r.share_high)}]" for r in gap.itertuples()]
    text = ("share of the gap to the large model tuned directly that proxy tuning closes, on each pair's metric "
            f"with the widest gap (95% interval): {'; '.join(parts)}.")
    return Finding("Proxy tuning", text, (), "Proxy tuning")


def _status(tables, name) -> str:
    df = tables.get(name)
    if df is not None and "status" in df.columns and len(df):
        return str(df["status"].iloc[0])
    return "not computed"


def findings(tables: dict) -> list[Finding]:
    """Every headline finding of the run, in reading order."""
    return [*frequency_findings(tables), router_finding(tables), *scaling_findings(tables), gap_finding(tables),
            critical_finding(tables), proxy_gap_finding(tables), sampling_finding(tables)]


# ------------------------------------------------------------------ rendering


def findings_markdown(items: list[Finding]) -> list[str]:
    lines = []
    for item in items:
        figures = ", ".join(f"figures/{name}.png" for name in item.figures)
        lines.append(f"- **{item.topic}**: {item.text}" + (f" ({figures})" if figures else ""))
    return lines


def rst_text(text: str) -> str:
    """Our sentence as reStructuredText: `names` as inline literals, the rest escaped."""
    parts = re.split(r"`([^`]*)`", text)
    escaped = [re.sub(r"([\\*_|<>\[\]])", r"\\\1", p) if i % 2 == 0 else f"``{p}``" for i, p in enumerate(parts)]
    return "".join(escaped)


def findings_rst(items: list[Finding], intro: str = "") -> str:
    """The landing text: a section with one bullet per finding, links to its figures (by file
    name) and its report category (by name), as Snakemake's report defines them."""
    lines = ["What this run found", "--------------------", ""]
    if intro:
        lines += [rst_text(intro), ""]
    for item in items:
        links = [f"`{name} <{name}.png_>`__" for name in item.figures]
        if item.category:
            links.append(f"`{item.category} <{item.category}_>`__")
        lines.append(f"- **{rst_text(item.topic)}**: {rst_text(item.text)}" + (f" ({', '.join(links)})" if links else ""))
    return "\n".join(lines) + "\n"


def run_intro(tables: dict) -> str:
    """One sentence: what the run holds (pair jobs, benchmarks, pairs)."""
    jobs = table(tables, "jobs")
    pairs = jobs[jobs["method"] != "single"] if len(jobs) else jobs
    if pairs.empty:
        return "This run has no pair job."
    n_pairs = pairs[["large", "small"]].drop_duplicates().shape[0]
    return (f"{len(pairs)} pair jobs: {pairs['variant'].nunique()} variants on {n_pairs} pairs and "
            f"{pairs['benchmark'].nunique()} benchmark(s). Every number below is read from this run's tables.")


def write_findings(tables: dict, path) -> None:
    from fsgen import atomic

    atomic.write_text(path, findings_rst(findings(tables), run_intro(tables)))

