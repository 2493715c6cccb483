"""The analysis stage builds for any grid the config accepts, and says what it could not compute.

A matrix of grid shapes, each written as synthetic per-job traces and metrics.json files in the
results layout, run through the rule scripts exactly as the workflow runs them (job_stats per job,
aggregate, scaling_law, figures, summary; in-process, with every output the registry
`fsgen.analysis.outputs` declares). For every shape: every declared output exists; every table
has a `status` column, and a row whose value is missing says why; every figure panel without data
says why (its `.panels.json`); the summary has every section; the report has a caption for each
of its outputs. Then what each shape must say, shape by shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsgen.analysis import outputs
from fsgen.analysis.figures import read_panels
from fsgen.trace import write_trace

from test_analysis_scripts import run_script  # noqa: E402  (the rule-script runner)
from test_analysis_synthetic import oracle_rows, speculative_rows, synthetic_reference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
K = 3
N_REQUESTS = 6
METRIC_KEY = "exact_match,flexible-extract"
SECTIONS = ["## Collaboration and accuracy", "## Scaling law", "## Speculative decoding", "## Routers", "## Uncertainty"]
# the value a table row exists for: missing (NaN) means the row's status must say why
VALUE_COLUMNS = {
    "jobs": ["freq_pooled", "accuracy"], "auroc": ["auroc_consulted"], "positions": ["share"],
    "speculative": ["acceptance_rate"], "router_offline_summary": ["recall"], "router_online": ["accuracy"],
    "paper_comparison": ["difference"], "fits": ["r2"],
}


@dataclass
class Shape:
    name: str
    models: dict[str, float]
    benchmarks: dict[str, str]  # name -> "accuracy" | "generation-only" (no accuracy metric) | "no metrics"
    methods: dict[str, tuple[str, str]]  # label -> (kind, router)
    skip: set = field(default_factory=set)  # (label, benchmark) not run (proxy on MT-Bench)
    traces: dict = field(default_factory=dict)  # (label, benchmark) -> "never" | "always" | "empty" | "gaps"
    reference: bool = False

    def pairs(self):
        names = sorted(self.models, key=self.models.get)
        return [(large, small) for i, small in enumerate(names) for large in names[i + 1:]]


SHAPES = [
    Shape("paper_like", {"q-0.5B": 0.5e9, "q-1.8B": 1.8e9, "q-4B": 4e9},
          {"gsm8k": "accuracy", "mtbench": "generation-only"},
          {"oracle": ("oracle", "always"), "proxy": ("proxy", "always"), "speculative": ("speculative", "always"),
           "oracle_entropy": ("oracle", "entropy:0.9")},
          skip={("proxy", "mtbench")}, reference=True),
    Shape("single_pair", {"s": 1e9, "l": 7e9}, {"arith": "accuracy"},
          {"oracle": ("oracle", "always"), "contrastive": ("contrastive", "always"),
           "speculative": ("speculative", "always")}),
    Shape("degenerate", {"s": 1e9, "l": 7e9}, {"arith": "accuracy", "other": "accuracy"},
          {"oracle": ("oracle", "always"), "contrastive": ("contrastive", "always"), "proxy": ("proxy", "always"),
           "speculative": ("speculative", "always")},
          traces={("oracle", "arith"): "never", ("speculative", "arith"): "never",
                  ("contrastive", "arith"): "always", ("proxy", "arith"): "gaps",
                  ("oracle", "other"): "empty", ("speculative", "other"): "empty", ("proxy", "other"): "empty"}),
    Shape("no_oracle_no_metrics", {"a": 1e9, "b": 2e9, "c": 5e9}, {"arith": "no metrics"},
          {"contrastive": ("contrastive", "always")}),
]


def shaped(trace: pd.DataFrame, how: str | None) -> pd.DataFrame:
    """The trace of an unusual job: System 2 never / always intervened, no tokens, empty requests."""
    if how == "never":
        return trace.assign(intervened=False, s1_token_id=trace["token_id"])
    if how == "always":
        return trace.assign(intervened=True, s1_token_id=trace["token_id"] + 1)
    if how == "empty":
        return trace.iloc[0:0]
    if how == "gaps":  # requests 0 and 1 generated no token
        return trace[trace["request_id"] >= 2].reset_index(drop=True)
    return trace


def write_metrics(path: Path, kind: str, value: float) -> None:
    if kind == "no metrics":
        return
    metrics = {METRIC_KEY: value} if kind == "accuracy" else {"score,none": 6.5, "length,none": 180.0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "b", "n": N_REQUESTS, "metrics": metrics}))


def job_trace(rng, shape: Shape, label: str, benchmark: str, oracle: pd.DataFrame) -> pd.DataFrame:
    kind, router = shape.methods[label]
    how = shape.traces.get((label, benchmark))
    if kind == "speculative":  # System 1 agreeing or not decides the rounds; rows are removed after
        before, after = (how, None) if how in ("never", "always") else (None, how)
        return shaped(speculative_rows(shaped(oracle, before), K), after)
    if router != "always":
        return oracle_rows(rng, N_REQUESTS, 0.12, float(router.split(":")[1]))
    return shaped(oracle if kind == "oracle" else oracle_rows(rng, N_REQUESTS, 0.08), how)


def write_shape(shape: Shape, root: Path) -> list[tuple[dict, dict]]:
    """Traces and metrics of every job in the results layout; [(job identity, job_stats inputs)]."""
    rng = np.random.default_rng(7)
    jobs = []
    for benchmark, metric_kind in shape.benchmarks.items():
        for model, params in shape.models.items():
            folder = root / benchmark / "single" / model
            write_metrics(folder / "metrics.json", metric_kind, 0.1 + 0.05 * math.log10(params))
            write_trace(oracle_rows(rng, N_REQUESTS, 0.1, entropy_router=99.0), folder / "trace.parquet",
                        {"method": "large", "router": "never"})
            ident = {"benchmark": benchmark, "method": "single", "kind": "single", "router": "never",
                     "large": model, "small": model, "large_params": params, "small_params": params, "k": None}
            jobs.append((ident, {"trace": str(folder / "trace.parquet"), "metrics": str(folder / "metrics.json")}))
        for large, small in shape.pairs():
            oracle = oracle_rows(rng, N_REQUESTS, 0.15)
            for label, (kind, router) in shape.methods.items():
                if (label, benchmark) in shape.skip:
                    continue
                folder = root / benchmark / label / f"{large}__{small}"
                write_trace(job_trace(rng, shape, label, benchmark, oracle), folder / "trace.parquet",
                            {"method": kind, "router": router, "params": {"k": K}})
                write_metrics(folder / "metrics.json", metric_kind, 0.3)
                ident = {"benchmark": benchmark, "method": label, "kind": kind, "router": router, "large": large,
                         "small": small, "large_params": shape.models[large], "small_params": shape.models[small],
                         "k": K if kind == "speculative" else None}
                inputs = {"trace": str(folder / "trace.parquet"), "metrics": str(folder / "metrics.json")}
                for role in ("small", "large"):
                    inputs[f"{role}_metrics"] = str(root / benchmark / "single" / ident[role] / "metrics.json")
                jobs.append((ident, inputs))
    return jobs


def run_analysis(shape: Shape, tmp: Path) -> Path:
    """Every analysis rule script over the shape, outputs named and placed as the registry says."""
    root = tmp / "results"
    stats = []
    for ident, inputs in write_shape(shape, root):
        out = Path(inputs["trace"]).with_name("stats.json")
        run_script("job_stats", tmp, inputs, {"stats": str(out)}, {"job": ident, "n_boot": 20})
        stats.append(str(out))
    reference = {}
    if shape.reference:
        synthetic_reference().to_csv(tmp / "reference.csv", index=False)
        reference = {"reference": str(tmp / "reference.csv")}
    path = {o.name: str(root / o.path) for o in outputs.tables(reference=shape.reference).values()}
    run_script("aggregate", tmp, {"stats": stats, **reference},
               {n: path[n] for n in outputs.tables("aggregate", reference=shape.reference)})
    run_script("scaling_law", tmp, {"jobs": path["jobs"], **reference}, {n: path[n] for n in ("fits", "residuals")})
    run_script("figures", tmp, {n: path[n] for n in outputs.figure_inputs()},
               {n: str(root / o.path) for n, o in outputs.FIGURES.items()})
    run_script("summary", tmp, {n: path[n] for n in outputs.summary_inputs(shape.reference)},
               {"summary": str(root / outputs.SUMMARY.path)})
    return root


@pytest.fixture(scope="module", params=SHAPES, ids=[s.name for s in SHAPES])
def built(request, tmp_path_factory):
    shape = request.param
    root = run_analysis(shape, tmp_path_factory.mktemp(shape.name))
    tables = {n: pd.read_csv(root / o.path) for n, o in outputs.tables(reference=shape.reference).items()}
    panels = {n: read_panels(root / o.path) for n, o in outputs.FIGURES.items()}
    return shape, root, tables, panels, (root / outputs.SUMMARY.path).read_text()


def test_every_declared_output_exists_and_says_what_is_missing(built):
    shape, root, tables, panels, summary = built
    for name, table in tables.items():
        assert len(table) and "status" in table.columns, name
        assert table["status"].notna().all(), name
        for column in VALUE_COLUMNS.get(name, []):
            silent = table[table[column].isna() & table["status"].eq("ok")]
            assert silent.empty, f"{shape.name}: {name}.{column} missing without a reason:\n{silent.head()}"
    for wide in ("collaboration_wide", "accuracy_wide"):
        cells = tables[wide].drop(columns=["method", "large", "small", "status"])
        assert (cells.notna().all(axis=1) | tables[wide]["status"].ne("ok")).all(), wide
    for name, figure in panels.items():
        png = root / outputs.FIGURES[name].path
        assert png.exists() and png.with_suffix(".pdf").exists(), name
        assert figure["status"] in ("ok", "partial", "no data") and figure["panels"], name
        for panel in figure["panels"]:
            assert panel["has_data"] or panel["note"], f"{shape.name}: {name} has a blank panel {panel}"
    assert all(section in summary for section in SECTIONS), summary
    assert "nan" not in summary.lower().replace("n/a", "").replace("mean", "")
    for output in outputs.report_outputs(reference=shape.reference):
        caption = Path(outputs.caption_path(output, REPO))
        assert caption.exists() and caption.read_text().strip(), caption


def notes(panels: dict, figure: str) -> list[str]:
    return [p["note"] for p in panels[figure]["panels"] if not p["has_data"]]


def test_what_each_shape_says(built):
    shape, root, tables, panels, summary = built
    check = globals()[f"says_{shape.name}"]
    check(tables, panels, summary)


def says_paper_like(tables, panels, summary):
    """MT-Bench has no accuracy metric, proxy skipped there: the reported crash's grid."""
    acc = tables["accuracy_wide"].query("method != 'proxy'").set_index(["method", "large", "small"])
    assert acc["mtbench"].isna().all() and acc["gsm8k"].notna().all()
    assert acc["status"].str.contains("mtbench: no accuracy metric").all()
    proxy = tables["collaboration_wide"].query("method == 'proxy'")
    assert (proxy["status"] == "mtbench: not run").all() and proxy["mtbench"].isna().all()
    assert any("mtbench" in n and "no accuracy metric" in n for n in notes(panels, "accuracy"))
    assert "proxy not run on mtbench" in notes(panels, "uncertainty_distributions")
    assert panels["uncertainty_distributions"]["status"] == "partial"
    online = tables["router_online"]
    assert online.query("benchmark == 'mtbench'")["status"].str.startswith("no accuracy").all()
    fits = tables["fits"].query("source == 'ours'")
    assert (fits["n_pairs"] == 3).all() and fits["a"].notna().all()
    assert tables["paper_comparison"]["matched"].sum() == 0  # our q-* models are not the reference's
    for figure in ("collaboration", "speculative", "auroc", "scaling_law"):
        assert panels[figure]["status"] == "ok", figure


def says_single_pair(tables, panels, summary):
    """One pair: no scaling-law fit, said in the table, the figure legend and the summary."""
    fits = tables["fits"]
    assert (fits["n_pairs"] == 1).all() and fits["status"].str.contains("1 pair").all()
    assert panels["scaling_law"]["status"] == "ok"  # the single point is drawn, its legend says why no curve
    assert "not fitted" in summary
    assert tables["router_online"]["status"].tolist() == ["no run with a router other than always"]
    assert notes(panels, "router_online") == ["no run with a router other than always"]
    assert tables["jobs"]["status"].eq("ok").all()
    assert "paper_comparison" not in tables


def says_degenerate(tables, panels, summary):
    """Never / always intervened, no tokens at all, requests without tokens."""
    jobs = tables["jobs"].set_index(["benchmark", "method"])
    auroc = tables["auroc"].set_index(["benchmark", "method"])
    assert auroc.loc[("arith", "oracle"), "status"].eq("no intervention (System 2 never changed a token)").all()
    assert auroc.loc[("arith", "contrastive"), "status"].eq("every position intervened").all()
    assert jobs.loc[("arith", "oracle"), "freq_pooled"] == 0
    assert jobs.loc[("arith", "speculative"), "freq_corrections"] == 0
    assert jobs.loc[("arith", "proxy"), "status"] == "2 of 6 requests generated no tokens"
    for method in ("oracle", "speculative", "proxy"):
        assert jobs.loc[("other", method), "status"].startswith("no generated tokens"), method
        assert auroc.loc[("other", method), "status"].str.startswith("no generated tokens").all()
    spec = tables["speculative"].query("source == 'measured' and benchmark == 'other'")
    assert spec["status"].str.startswith("no rounds").all() and (spec["rounds"] == 0).all()
    summary_rows = tables["router_offline_summary"]
    assert summary_rows.query("benchmark == 'other'")["status"].str.startswith("not computed: no generated").all()
    learned = summary_rows.query("benchmark == 'arith' and router == 'learned'")
    assert learned["status"].str.startswith("not trained").all()
    assert summary_rows.query("benchmark == 'arith' and router == 'entropy'")["status"].str.startswith(
        "no intervention").all()
    assert tables["fits"]["status"].ne("ok").all()
    assert "no generated tokens" in summary
    assert set(notes(panels, "uncertainty_distributions")) == {"no generated tokens"}  # run, but empty
    assert panels["router_offline"]["status"] == "no data"  # never intervened: recall undefined


def says_no_oracle_no_metrics(tables, panels, summary):
    """Only contrastive, no metrics.json anywhere: no routers, no speculative, no accuracy."""
    assert tables["jobs"]["accuracy_status"].eq("no metrics.json").all()
    for figure in ("router_offline", "router_online", "speculative", "accuracy"):
        assert panels[figure]["status"] == "no data", figure
        assert notes(panels, figure)[0], figure
    assert tables["router_offline_summary"]["status"].str.startswith("no oracle job").all()
    assert tables["speculative"]["status"].str.startswith("no speculative job").all()
    assert "No measured speculative run: no speculative job" in summary
    assert "No offline router sweep: no oracle job" in summary
    assert panels["collaboration"]["status"] == "ok" and panels["scaling_law"]["status"] == "ok"
