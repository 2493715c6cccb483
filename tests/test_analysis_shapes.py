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
from fsgen.harness.counterfactual import write_frame
from fsgen.harness.counterfactual_score import OUTCOME_SCHEMA
from fsgen.trace import write_trace

from test_analysis_scripts import run_script  # noqa: E402  (the rule-script runner)
from test_analysis_synthetic import oracle_rows, speculative_rows, synthetic_reference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
K = 3
N_REQUESTS = 6
METRIC_KEY = "exact_match,flexible-extract"
SECTIONS = ["## Headline findings", "## Collaboration and accuracy", "## Scaling law", "## Which law",
            "## Speculative decoding", "## Collaboration under sampling", "## Routers", "## Cost",
            "## Which interventions matter", "## Uncertainty"]
# the value a table row exists for: missing (NaN) means the row's status must say why
VALUE_COLUMNS = {
    "jobs": ["freq_pooled", "accuracy"], "auroc": ["auroc_consulted"], "positions": ["share"],
    "speculative": ["acceptance_rate"], "router_offline_summary": ["recall"], "router_online": ["accuracy"],
    "paper_comparison": ["difference"], "fits": ["r2"], "costs": ["s2_share", "wall_s"],
    "sampling": ["rejection_share", "rejection_low", "greedy_mismatch_share"], "critical": ["share"],
    "critical_bins": ["share"], "critical_routers": ["recall"], "gap_recovery": ["cost"],
    "frontier_points": ["accuracy"], "proxy_gap": ["share"],
}


@dataclass
class Shape:
    name: str
    models: dict[str, float]
    benchmarks: dict[str, str]  # name -> "accuracy" | "generation-only" (no accuracy metric) | "no metrics"
    variants: dict[str, tuple[str, str]]  # variant -> (method, router)
    skip: set = field(default_factory=set)  # (label, benchmark) not run (proxy on MT-Bench)
    traces: dict = field(default_factory=dict)  # (label, benchmark) -> "never" | "always" | "empty" | "gaps"
    reference: bool = False
    counterfactual: bool = True  # the counterfactual stage runs (counterfactual.positions > 0)

    def pairs(self):
        names = sorted(self.models, key=self.models.get)
        return [(large, small) for i, small in enumerate(names) for large in names[i + 1:]]


SHAPES = [
    Shape("paper_like", {"q-0.5B": 0.5e9, "q-1.8B": 1.8e9, "q-4B": 4e9},
          {"gsm8k": "accuracy", "mtbench": "generation-only"},
          {"oracle": ("oracle", "always"), "proxy": ("proxy", "always"), "speculative": ("speculative", "always"),
           "oracle_entropy": ("oracle", "entropy:0.9"), "spec_t1-seed0": ("speculative", "always")},
          skip={("proxy", "mtbench")}, reference=True),
    Shape("single_pair", {"s": 1e9, "l": 7e9}, {"arith": "accuracy"},
          {"oracle": ("oracle", "always"), "contrastive": ("contrastive", "always"),
           "speculative": ("speculative", "always"), "spec_t1-seed3": ("speculative", "always"),
           "spec_t1-seed4": ("speculative", "always")},
          counterfactual=False),
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
    """metrics.json, generations.jsonl and lm-eval's scored_samples.jsonl of a job (request i answers
    document i; the first round(value · N) documents are correct)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    generations = [{"request_id": i, "task": "t", "doc_id": i, "idx": 0} for i in range(N_REQUESTS)]
    (path.parent / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in generations))
    if kind == "no metrics":
        return
    metrics = {METRIC_KEY: value} if kind == "accuracy" else {"score,none": 6.5, "length,none": 180.0}
    path.write_text(json.dumps({"benchmark": "b", "n": N_REQUESTS, "metrics": metrics}))
    name, filt = METRIC_KEY.split(",") if kind == "accuracy" else ("score", "none")
    scored = [{"task": "t", "doc_id": i, "filter": filt, "metrics": [name],
               name: float(i < round(value * N_REQUESTS))} for i in range(N_REQUESTS)]
    (path.parent / "scored_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored))


def write_counterfactual(folder: Path, trace: pd.DataFrame, kind: str) -> None:
    """counterfactual.parquet of an oracle job: every intervention continued, every other one critical;
    skipped (empty, with the reason) on a task without an accuracy metric."""
    meta = {"status": "ok", "positions": 200, "seed": 0, "interventions": int(trace["intervened"].sum())}
    rows = trace[trace["intervened"].astype(bool)]
    if kind != "accuracy":
        meta, rows = {**meta, "status": "skipped", "reason": "no accuracy metric in metrics.json"}, rows.iloc[0:0]
    n_tokens = trace.groupby("request_id")["position"].size()
    frame = pd.DataFrame({
        "request_id": rows["request_id"].astype("int64"), "position": rows["position"].astype("int32"),
        "token_id": rows["token_id"].astype("int64"), "s1_token_id": rows["s1_token_id"].astype("int64"),
        "s1_top1_prob": rows["s1_top1_prob"], "s1_entropy": rows["s1_entropy"],
        "n_tokens": rows["request_id"].map(n_tokens).astype("int32"), "task": "t",
        "doc_id": rows["request_id"].astype("int64"), "idx": 0, "continued": 3, "text": "x",
        "outcome_before": 1.0, "outcome_after": np.arange(len(rows)) % 2 * 1.0})
    frame["critical"] = frame["outcome_before"] != frame["outcome_after"]
    write_frame(frame.astype({"idx": "int32", "continued": "int32"}), folder / "counterfactual.parquet", meta,
                OUTCOME_SCHEMA)


def job_trace(rng, shape: Shape, label: str, benchmark: str, oracle: pd.DataFrame) -> pd.DataFrame:
    method, router = shape.variants[label]
    how = shape.traces.get((label, benchmark))
    if "-seed" in label:  # a sampled run: each seed its own draws
        return speculative_rows(oracle_rows(rng, N_REQUESTS, 0.15), K)
    if method == "speculative":  # System 1 agreeing or not decides the rounds; rows are removed after
        before, after = (how, None) if how in ("never", "always") else (None, how)
        return shaped(speculative_rows(shaped(oracle, before), K), after)
    if router != "always":
        return oracle_rows(rng, N_REQUESTS, 0.12, float(router.split(":")[1]))
    return shaped(oracle if method == "oracle" else oracle_rows(rng, N_REQUESTS, 0.08), how)


def write_shape(shape: Shape, root: Path) -> list[tuple[dict, dict]]:
    """Traces and metrics of every job in the results layout; [(job identity, job_stats inputs)]."""
    rng = np.random.default_rng(7)
    jobs = []
    for benchmark, metric_kind in shape.benchmarks.items():
        for model, params in shape.models.items():
            folder = root / benchmark / "single" / model
            write_metrics(folder / "metrics.json", metric_kind, 0.1 + 0.05 * math.log10(params))
            # the tuned variant alone (proxy tuning's reference), better than the model by 0.4
            write_metrics(folder.with_name(tuned_name(model)) / "metrics.json", metric_kind,
                          0.5 + 0.05 * math.log10(params))
            write_trace(oracle_rows(rng, N_REQUESTS, 0.1, entropy_router=99.0), folder / "trace.parquet",
                        {"method": "single", "router": "never"})
            ident = {"benchmark": benchmark, "variant": "single", "method": "single", "router": "never",
                     "large": model, "small": model, "large_params": params, "small_params": params, "k": None}
            jobs.append((ident, {"trace": str(folder / "trace.parquet"), "metrics": str(folder / "metrics.json"),
                                 "generations": str(folder / "generations.jsonl")}))
        for large, small in shape.pairs():
            oracle = oracle_rows(rng, N_REQUESTS, 0.15)
            for label, (method, router) in shape.variants.items():
                if (label, benchmark) in shape.skip:
                    continue
                folder = root / benchmark / label / f"{large}__{small}"
                trace = job_trace(rng, shape, label, benchmark, oracle)
                temperature = 1.0 if "-seed" in label else 0.0
                write_trace(trace, folder / "trace.parquet",
                            {"method": method, "router": router, "params": {"k": K, "temperature": temperature}})
                write_metrics(folder / "metrics.json", metric_kind, 0.3 + 0.1 * (method == "oracle"))
                if label == "oracle" and shape.counterfactual:
                    write_counterfactual(folder, trace, metric_kind)
                ident = {"benchmark": benchmark, "variant": label, "method": method, "router": router, "large": large,
                         "small": small, "large_params": shape.models[large], "small_params": shape.models[small],
                         "k": K if method == "speculative" else None}
                inputs = {"trace": str(folder / "trace.parquet"), "metrics": str(folder / "metrics.json"),
                          "generations": str(folder / "generations.jsonl")}
                for role in ("small", "large"):
                    inputs[f"{role}_metrics"] = str(root / benchmark / "single" / ident[role] / "metrics.json")
                jobs.append((ident, inputs))
    return jobs


def tuned_name(model: str) -> str:
    return f"{model}-tuned"


def proxy_gap_io(stats: list[str], root: Path) -> tuple[dict, dict]:
    """Rule proxy_gap's inputs and params: every proxy job, its large model alone and tuned alone."""
    jobs = [json.loads(Path(s).read_text())["job"] for s in stats if "/proxy/" in s]
    single = [root / j["benchmark"] / "single" for j in jobs]
    inputs = {"proxy": [str(Path(s).with_name("metrics.json")) for s in stats if "/proxy/" in s],
              "large": [str(f / j["large"] / "metrics.json") for f, j in zip(single, jobs)],
              "tuned_samples": [str(f / tuned_name(j["large"]) / "metrics.json") for f, j in zip(single, jobs)]}
    return inputs, {"jobs": [{"job": j, "tuned": tuned_name(j["large"])} for j in jobs], "n_boot": 50}


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
    run_script("scaling_law", tmp, {"jobs": path["jobs"], "stats": stats, **reference},
               {n: path[n] for n in outputs.tables("scaling_law")}, {"n_boot": 50})
    run_script("frontier", tmp, {"stats": stats}, {n: path[n] for n in outputs.tables("frontier")}, {"n_boot": 50})
    oracle = [Path(s).parent for s in stats if "/oracle/" in s] if shape.counterfactual else []
    jobs = [json.loads((folder / "stats.json").read_text())["job"] for folder in oracle]
    run_script("critical", tmp, {"counterfactual": [str(f / "counterfactual.parquet") for f in oracle],
                                 "trace": [str(f / "trace.parquet") for f in oracle]},
               {n: path[n] for n in outputs.tables("critical")},
               {"jobs": jobs, "n_boot": 50, "why_none": "counterfactual stage off (counterfactual.positions: 0)"
                if not shape.counterfactual else "no oracle job with router always"})
    gap_inputs, gap_params = proxy_gap_io(stats, root)
    run_script("proxy_gap", tmp, gap_inputs, {n: path[n] for n in outputs.tables("proxy_gap")}, gap_params)
    run_script("figures", tmp, {n: path[n] for n in outputs.figure_inputs()},
               {n: str(root / o.path) for n, o in outputs.FIGURES.items()})
    run_script("summary", tmp, {n: path[n] for n in outputs.summary_inputs(shape.reference)},
               {n: str(root / o.path) for n, o in outputs.SUMMARIES.items()})
    return root


@pytest.fixture(scope="module", params=SHAPES, ids=[s.name for s in SHAPES])
def built(request, tmp_path_factory):
    shape = request.param
    root = run_analysis(shape, tmp_path_factory.mktemp(shape.name))
    tables = {n: pd.read_csv(root / o.path) for n, o in outputs.tables(reference=shape.reference).items()}
    panels = {n: read_panels(root / o.path) for n, o in outputs.FIGURES.items()}
    return shape, root, tables, panels, (root / outputs.SUMMARY.path).read_text()


def findings_text(root: Path) -> str:
    return (root / outputs.FINDINGS.path).read_text()


def test_every_declared_output_exists_and_says_what_is_missing(built):
    shape, root, tables, panels, summary = built
    for name, table in tables.items():
        assert len(table) and "status" in table.columns, name
        assert table["status"].notna().all(), name
        for column in VALUE_COLUMNS.get(name, []):
            silent = table[table[column].isna() & table["status"].eq("ok")]
            assert silent.empty, f"{shape.name}: {name}.{column} missing without a reason:\n{silent.head()}"
    for wide in ("collaboration_wide", "accuracy_wide"):
        cells = tables[wide].drop(columns=["variant", "large", "small", "status"])
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
    check(tables, panels, summary, findings_text(root))


def says_paper_like(tables, panels, summary, findings):
    """MT-Bench has no accuracy metric, proxy skipped there: the reported crash's grid."""
    acc = tables["accuracy_wide"].query("variant != 'proxy'").set_index(["variant", "large", "small"])
    assert acc["mtbench"].isna().all() and acc["gsm8k"].notna().all()
    assert acc["status"].str.contains("mtbench: no accuracy metric").all()
    proxy = tables["collaboration_wide"].query("variant == 'proxy'")
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
    # sampled speculative runs: out of the greedy tables, in the sampling table with an interval
    assert not tables["speculative"]["variant"].str.contains("seed").any()
    sampling = tables["sampling"]
    assert len(sampling) == 6 and (sampling["n_seeds"] == 1).all()
    assert sampling["status"].eq("one seed: no interval across seeds").all()
    assert not tables["paper_comparison"]["our_variant"].fillna("").str.contains("seed").any()
    proxy = tables["paper_comparison"].query("method == 'proxy' and our_variant == 'proxy'")
    assert proxy["status"].str.startswith("authors' definition not available").all()  # no s1_base_token_id
    assert tables["paper_comparison"]["definition"].notna().all()
    # counterfactual: run on gsm8k, skipped on MT-Bench (no accuracy metric)
    crit = tables["critical"].set_index("benchmark")
    assert crit.loc["gsm8k", "status"].eq("ok").all() and crit.loc["gsm8k", "share"].between(0, 1).all()
    assert crit.loc["mtbench", "status"].str.startswith("skipped: no accuracy metric").all()
    assert panels["critical"]["status"] == "partial"
    assert any(n.startswith("skipped") for n in notes(panels, "critical"))
    gaps = tables["gap_recovery"].set_index("benchmark")
    assert gaps.loc["mtbench", "status"].str.startswith("no accuracy").all()
    assert tables["costs"]["status"].str.contains("wall time: no benchmark file").all()
    assert (tables["scaling_bootstrap"]["scheme"] == "requests").any()
    assert "`frontier <frontier.png_>`__" in findings


def says_single_pair(tables, panels, summary, findings):
    """One pair: no scaling-law fit, said in the table, the figure legend and the summary."""
    fits = tables["fits"]
    assert (fits["n_pairs"] == 1).all() and fits["status"].str.contains("1 pair").all()
    assert panels["scaling_law"]["status"] == "ok"  # the single point is drawn, its legend says why no curve
    assert "not fitted" in summary
    assert tables["router_online"]["status"].tolist() == ["no run with a router other than always"]
    assert notes(panels, "router_online") == ["no run with a router other than always"]
    assert tables["jobs"]["status"].eq("ok").all()
    assert "paper_comparison" not in tables
    for name in ("critical", "critical_bins", "critical_routers"):  # counterfactual.positions: 0
        assert tables[name]["status"].tolist() == ["counterfactual stage off (counterfactual.positions: 0)"], name
    assert notes(panels, "critical") == ["counterfactual stage off (counterfactual.positions: 0)"]
    assert "counterfactual stage off" in summary and "counterfactual stage off" in findings
    sampling = tables["sampling"].iloc[0]  # two seeds: an interval; the traces differ, so it has a width
    assert (len(tables["sampling"]), sampling["n_seeds"], sampling["status"]) == (1, 2, "ok")
    assert sampling["rejection_low"] < sampling["rejection_share"] < sampling["rejection_high"]
    assert tables["scaling_verdicts"]["sentence"].str.contains("too few pairs").all()


def says_degenerate(tables, panels, summary, findings):
    """Never / always intervened, no tokens at all, requests without tokens."""
    jobs = tables["jobs"].set_index(["benchmark", "variant"])
    auroc = tables["auroc"].set_index(["benchmark", "variant"])
    assert auroc.loc[("arith", "oracle"), "status"].eq("no intervention (System 2 never changed a token)").all()
    assert auroc.loc[("arith", "contrastive"), "status"].eq("every position intervened").all()
    assert jobs.loc[("arith", "oracle"), "freq_pooled"] == 0
    assert jobs.loc[("arith", "speculative"), "freq_corrections"] == 0
    assert jobs.loc[("arith", "proxy"), "status"] == "2 of 6 requests generated no tokens"
    for variant in ("oracle", "speculative", "proxy"):
        assert jobs.loc[("other", variant), "status"].startswith("no generated tokens"), variant
        assert auroc.loc[("other", variant), "status"].str.startswith("no generated tokens").all()
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
    crit = tables["critical"].set_index("benchmark")["status"]
    assert crit.loc["arith"] == crit.loc["other"] == "no intervention to continue (System 2 never changed a token)"
    assert panels["critical"]["status"] == "no data"
    costs = tables["costs"].set_index(["benchmark", "variant"])
    assert costs.loc[("other", "oracle"), "status"].startswith("no generated tokens")
    assert costs.loc[("arith", "proxy"), "n_requests"] == N_REQUESTS  # requests without tokens still count


def says_no_oracle_no_metrics(tables, panels, summary, findings):
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
    assert tables["critical"]["status"].tolist() == ["no oracle job with router always"]
    assert tables["gap_recovery"]["status"].str.startswith("no accuracy").all()
    assert panels["frontier"]["status"] == "no data"
    assert "no run with a router other than always" in findings
