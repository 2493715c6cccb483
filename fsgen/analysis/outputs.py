"""The one registry of the analysis outputs: every aggregate table, figure and the summary.

Each entry says which rule writes it, where (relative to `results/`), its report category and
caption (`workflow/report/<caption>.rst`), and for figures and the summary which tables they are
drawn from. `fsgen.analysis.tables`, `fsgen.analysis.figures`, the rule scripts and
`rules/common.smk` read it, so a new output is added here once.

Names are the keys the rules and scripts use (`snakemake.input.<name>` / `snakemake.output.<name>`).
Tables and figures have separate name spaces (the `auroc` table feeds the `auroc` figure); the
scaling-law tables are named `fits` and `residuals` (files `scaling_law.csv`,
`scaling_residuals.csv`), as the `scaling_law` rule has always called them.

Rules: `aggregate` (from stats.json), `scaling_law` (jobs table + stats.json's per-request
counts), `frontier` (stats.json's per-request costs and outcomes), `critical` (the oracle jobs'
counterfactual outcomes and traces), `proxy_gap` (proxy jobs' and the tuned large models' scored
samples), `figures`, `summary` (summary.md and `findings`, the
report's landing text: the Snakefile's `report:` description includes it).
"""

from __future__ import annotations

from dataclasses import dataclass

REPORT_DIR = "workflow/report"  # captions, relative to the repository root


@dataclass(frozen=True)
class Output:
    name: str  # key in the rule's input/output and the scripts
    path: str  # relative to results/
    kind: str  # "table", "figure" or "summary"
    rule: str  # the rule that writes it: aggregate, scaling_law, figures, summary
    category: str | None  # report category; None: figure data, not in the report
    caption: str | None  # stem of workflow/report/<caption>.rst (None when not in the report)
    needs: tuple[str, ...] = ()  # table names it is drawn from (figures, summary)
    optional_needs: tuple[str, ...] = ()  # tables used when present (e.g. only with a reference)
    only_with_reference: bool = False  # exists only when config `reference` is set


def _table(name, category, rule="aggregate", file=None, reference=False) -> Output:
    file = file or name
    return Output(name, f"tables/{file}.csv", "table", rule, category,
                  f"table_{file}" if category else None, only_with_reference=reference)


def _figure(name, category, needs) -> Output:
    return Output(name, f"figures/{name}.png", "figure", "figures", category, f"fig_{name}", tuple(needs))


TABLES: dict[str, Output] = {o.name: o for o in (
    _table("jobs", "Collaboration"),
    _table("collaboration_wide", "Collaboration"),
    _table("accuracy_wide", "Accuracy"),
    _table("paper_comparison", "Collaboration", reference=True),
    _table("auroc", "Uncertainty"),
    _table("positions", "Uncertainty"),
    _table("speculative", "Speculative"),
    _table("router_offline_summary", "Routers"),
    _table("router_online", "Routers"),
    _table("histograms", None),  # figure data
    _table("accepted_lengths", None),
    _table("router_offline", None),
    _table("costs", "Cost"),
    _table("sampling", "Speculative"),
    _table("fits", "Scaling law", rule="scaling_law", file="scaling_law"),
    _table("residuals", "Scaling law", rule="scaling_law", file="scaling_residuals"),
    _table("scaling_forms", "Scaling law", rule="scaling_law"),
    _table("scaling_bootstrap", "Scaling law", rule="scaling_law"),
    _table("scaling_verdicts", "Scaling law", rule="scaling_law"),
    _table("scaling_bands", None, rule="scaling_law"),  # figure data
    _table("frontier_points", "Cost", rule="frontier"),
    _table("gap_recovery", "Cost", rule="frontier"),
    _table("frontier_bands", None, rule="frontier"),
    _table("critical", "Critical interventions", rule="critical"),
    _table("critical_bins", "Critical interventions", rule="critical"),
    _table("critical_routers", None, rule="critical"),
    _table("proxy_gap", "Proxy tuning", rule="proxy_gap"),
)}

FIGURES: dict[str, Output] = {o.name: o for o in (
    _figure("accuracy", "Accuracy", ["jobs"]),
    _figure("collaboration", "Collaboration", ["jobs"]),
    _figure("scaling_law", "Scaling law", ["jobs", "fits", "residuals", "scaling_bands"]),
    _figure("scaling_small_size", "Scaling law", ["jobs", "fits", "residuals", "scaling_bands"]),
    _figure("uncertainty_distributions", "Uncertainty", ["jobs", "histograms"]),
    _figure("auroc", "Uncertainty", ["jobs", "auroc"]),
    _figure("positions", "Uncertainty", ["jobs", "positions"]),
    _figure("router_offline", "Routers", ["router_offline"]),
    _figure("router_online", "Routers", ["router_online"]),
    _figure("speculative", "Speculative", ["speculative", "accepted_lengths"]),
    _figure("frontier", "Cost", ["frontier_points", "frontier_bands", "gap_recovery"]),
    _figure("critical", "Critical interventions", ["critical", "critical_bins", "critical_routers"]),
)}

SUMMARY_NEEDS = ("jobs", "speculative", "auroc", "router_offline_summary", "router_online", "fits",
                 "scaling_forms", "scaling_verdicts", "gap_recovery", "critical", "critical_routers", "sampling",
                 "proxy_gap")
SUMMARY = Output("summary", "summary.md", "summary", "summary", "Collaboration", "summary",
                 needs=SUMMARY_NEEDS, optional_needs=("paper_comparison",))
# the report's landing text (reStructuredText): the headline numbers with links to the figures;
# workflow/report/workflow.rst (the Snakefile's `report:`) includes it, so it is not an item itself
FINDINGS = Output("findings", "findings.rst", "summary", "summary", None, None,
                  needs=SUMMARY_NEEDS, optional_needs=("paper_comparison",))
SUMMARIES: dict[str, Output] = {o.name: o for o in (SUMMARY, FINDINGS)}


def tables(rule: str | None = None, reference: bool = True) -> dict[str, Output]:
    """Tables by name, optionally of one rule; without a reference the reference-only ones are left out."""
    return {n: o for n, o in TABLES.items()
            if (rule is None or o.rule == rule) and (reference or not o.only_with_reference)}


def figure_inputs(names=None) -> tuple[str, ...]:
    """Table names the given figures (default: all) are drawn from, in registry order."""
    needed = {t for n in (names or FIGURES) for t in FIGURES[n].needs}
    return tuple(n for n in TABLES if n in needed)


def summary_inputs(reference: bool = True) -> tuple[str, ...]:
    return SUMMARY.needs + (SUMMARY.optional_needs if reference else ())


def report_outputs(reference: bool = True) -> list[Output]:
    """Every output that appears in the report (has a category), tables, figures, summary."""
    return [o for o in (*tables(reference=reference).values(), *FIGURES.values(), *SUMMARIES.values()) if o.category]


def all_outputs(reference: bool = True) -> list[Output]:
    """Every table, figure and summary output (the analysis stage's targets)."""
    return [*tables(reference=reference).values(), *FIGURES.values(), *SUMMARIES.values()]


def caption_path(output: Output, root=".") -> str:
    """Path of the output's caption file, below `root` (the repository root)."""
    if output.caption is None:
        raise ValueError(f"{output.kind} {output.name!r} is not in the report: no caption")
    return f"{root}/{REPORT_DIR}/{output.caption}.rst"


def check_names(names, known: dict[str, Output], what: str, hint: str = "") -> None:
    """Raise KeyError naming any unknown output/input name (scripts call it on snakemake's names)."""
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise KeyError(f"{what}: unknown name(s) {unknown}; known: {sorted(known)}{hint}")
