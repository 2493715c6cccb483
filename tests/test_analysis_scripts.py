"""The thin rule scripts, run as Snakemake would (a `snakemake` object with named input/output/params,
in this process with fsgen.pipeline.rulescript.run_script, as the `run:` rules do)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from snakemake.iocontainers import Namedlist

from fsgen.analysis.figures import read_panels
from fsgen.pipeline.rulescript import run_script as run_in_process

from test_analysis_synthetic import METRIC, analyze_study, make_study, synthetic_reference  # noqa: F401

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TABLES = ["jobs", "collaboration_wide", "accuracy_wide", "auroc", "positions", "histograms", "speculative",
          "accepted_lengths", "router_offline", "router_offline_summary", "router_online", "paper_comparison"]


def run_script(name: str, tmp: Path, input: dict, output: dict, params: dict | None = None) -> None:
    log = tmp / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    smk = SimpleNamespace(input=Namedlist(fromdict=input), output=Namedlist(fromdict=output),
                          params=Namedlist(fromdict=params or {}), log=Namedlist([str(log)]))
    run_in_process(SCRIPTS / f"{name}.py", smk)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripts")
    root = tmp / "results"
    jobs = make_study(root, n_requests=12, seed=1)
    stats = []
    for job in jobs:
        folder = job.pop("folder")
        inputs = {"trace": str(folder / "trace.parquet"), "metrics": str(folder / "metrics.json")}
        if job["method"] != "single":
            for role in ("small", "large"):
                inputs[f"{role}_metrics"] = str(root / job["benchmark"] / "single" / job[role] / "metrics.json")
        out = folder / "stats.json"
        run_script("job_stats", tmp, inputs, {"stats": str(out)}, {"job": job, "metric": METRIC, "n_boot": 100})
        stats.append(str(out))
    reference = tmp / "reference.csv"
    synthetic_reference().to_csv(reference, index=False)
    tables = {name: str(root / "tables" / f"{name}.csv") for name in TABLES}
    run_script("aggregate", tmp, {"stats": stats, "reference": str(reference)}, tables)
    fits = {"fits": str(root / "tables" / "scaling_law.csv"), "residuals": str(root / "tables" / "scaling_residuals.csv")}
    run_script("scaling_law", tmp, {"jobs": tables["jobs"], "reference": str(reference)}, fits)
    return tmp, root, tables, fits


def test_job_stats_and_aggregate(pipeline):
    _, root, tables, _ = pipeline
    jobs = pd.read_csv(tables["jobs"])
    assert len(jobs) == 2 * (6 * 5 + 4)
    single = jobs[jobs["method"] == "single"]
    assert (single["freq_pooled"] == 0).all() and single["accuracy"].notna().all()
    pairs = jobs[jobs["method"] != "single"]
    assert pairs["small_accuracy"].notna().all() and pairs["large_accuracy"].notna().all()
    comparison = pd.read_csv(tables["paper_comparison"])
    assert comparison["matched"].sum() == 2 * 6 * 2  # oracle + contrastive, 2 benchmarks, 6 pairs
    wide = pd.read_csv(tables["collaboration_wide"])
    assert set(wide["variant"]) == {"oracle", "contrastive", "speculative", "oracle_entropy_0.5", "oracle_entropy_0.9"}


def test_aggregate_refuses_unknown_output(pipeline, tmp_path):
    tmp, root, _, _ = pipeline
    stats = [str(p) for p in root.rglob("stats.json")]
    with pytest.raises(KeyError, match="paper_comparison needs input.reference"):
        run_script("aggregate", tmp_path, {"stats": stats}, {"paper_comparison": str(tmp_path / "x.csv")})


def test_scaling_law_table(pipeline):
    _, _, _, fits = pipeline
    table = pd.read_csv(fits["fits"])
    for col in ["source", "variant", "benchmark", "a", "alpha", "b", "r2", "n_pairs", "alt_c", "alt_d", "alt_r2", "status"]:
        assert col in table.columns
    assert set(table["source"]) == {"ours", "paper"}
    paper = table[table["source"] == "paper"]
    assert paper["r2"].between(0, 1).all()


def test_figures_and_summary(pipeline):
    tmp, root, tables, fits = pipeline
    inputs = {k: v for k, v in tables.items() if k in ("jobs", "auroc", "positions", "histograms", "speculative",
                                                       "accepted_lengths", "router_offline", "router_online")}
    figs = {name: str(root / "figures" / f"{name}.png") for name in ("scaling_law", "router_online", "speculative")}
    run_script("figures", tmp, {**inputs, **fits}, figs)
    for path in figs.values():
        assert read_panels(path)["status"] == "ok" and Path(path).with_suffix(".pdf").exists()
    summary = root / "summary.md"
    run_script("summary", tmp, {k: tables[k] for k in ("jobs", "speculative", "auroc", "router_offline_summary",
                                                       "paper_comparison")} | {"fits": fits["fits"]},
               {"summary": str(summary)})
    text = summary.read_text()
    assert "## Scaling law" in text and "## Comparison with the published FS-GEN frequencies" in text
    assert "nan" not in text.lower().replace("n/a", "")


def test_scaling_law_rule_with_per_request_counts(pipeline, tmp_path):
    """stats.json's per-request counts give the requests bootstrap; pooled, they are the jobs'
    frequencies, so its point estimates equal the pairs scheme's."""
    tmp, root, tables, _ = pipeline
    stats = sorted(str(p) for p in root.rglob("stats.json"))
    out = {name: str(tmp_path / f"{name}.csv") for name in ("scaling_forms", "scaling_bootstrap", "scaling_verdicts",
                                                             "scaling_bands")}
    run_script("scaling_law", tmp, {"jobs": tables["jobs"], "stats": stats}, out, {"n_boot": 40})
    boot = pd.read_csv(out["scaling_bootstrap"])
    keys = ["variant", "benchmark", "form", "parameter"]
    by_scheme = boot.pivot_table(index=keys, columns="scheme", values="estimate")
    assert len(by_scheme) and by_scheme["requests"].notna().all()
    pd.testing.assert_series_equal(by_scheme["requests"], by_scheme["pairs"], check_names=False, rtol=1e-9)
    bands = pd.read_csv(out["scaling_bands"])
    assert set(bands["scheme"]) == {"pairs", "requests"} and (bands["low"] <= bands["high"]).all()
    verdicts = pd.read_csv(out["scaling_verdicts"])
    assert set(verdicts["source"]) == {"ours"} and verdicts["sentence"].str.len().gt(20).all()
