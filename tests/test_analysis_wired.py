"""#13's analyses wired into the tables, on hand-made data with answers worked out by hand: per-request
costs and outcomes in stats.json, the costs table, the paper comparison under the authors'
definitions, the sampling table, the critical tables, the frontier statuses, the headline findings
and the report's landing text (rendered by docutils with the link targets Snakemake defines)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from fsgen.analysis import outputs
from fsgen.analysis.critical import critical_tables
from fsgen.analysis.definitions import AUTHORS_DEFINITIONS, MISSING_DEFINITION, SAME_DEFINITION
from fsgen.analysis.findings import findings, findings_rst, rst_text
from fsgen.analysis.frontier import frontier_outputs
from fsgen.analysis.job import analyze_job, write_stats
from fsgen.analysis.requests import costs_table, job_requests, request_frame, request_outcomes
from fsgen.analysis.sampling import sampling_table
from fsgen.analysis.tables import build_tables, jobs_table, reference_comparison

from test_analysis_beyond import counterfactual_rows, proxy_trace  # noqa: E402
from test_analysis_fidelity import K, REQUESTS, speculative_trace  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUTED = {"benchmark": "b", "variant": "oracle_entropy", "method": "oracle", "router": "entropy:1.0",
          "large": "L", "small": "S", "large_params": 7e9, "small_params": 1e9, "k": None}


def step_trace() -> pd.DataFrame:
    """Request 0: 4 tokens consulted at 0, 1, 3 (two runs), changed at 1, 3; request 1: 3 tokens,
    consulted and changed at 2. (Request 2 generated nothing: it is only in generations.jsonl.)"""
    consulted = [True, True, False, True, False, False, True]
    intervened = [False, True, False, True, False, False, True]
    return pd.DataFrame({"request_id": [0, 0, 0, 0, 1, 1, 1], "position": [0, 1, 2, 3, 0, 1, 2],
                         "token_id": 5, "s1_token_id": [5 + i for i in intervened], "s2_called": consulted,
                         "intervened": intervened, "drafted": False, "s1_top1_prob": np.linspace(0.3, 0.9, 7),
                         "s1_top2_prob": 0.05, "s1_entropy": np.linspace(2.0, 0.5, 7)})


def outcomes() -> pd.DataFrame:
    return pd.DataFrame({"request_id": [0, 1, 2], "doc": ["t/0", "t/1", "t/2"], "correct": [1.0, 0.0, 0.0]})


def test_per_request_costs_and_outcomes_by_hand():
    rows = job_requests(step_trace(), ROUTED, {}, outcomes()).set_index("request_id")
    assert rows["tokens"].tolist() == [4, 3, 0] and rows["interventions"].tolist() == [2, 1, 0]
    assert rows["s2_tokens"].tolist() == [3, 1, 0] and rows["s2_consultations"].tolist() == [2, 1, 0]
    # System 2 reads every token before its last consultation (positions 3 and 2), System 1 all but the last
    assert rows["s2_tokens_read"].tolist() == [3, 2, 0] and rows["s1_tokens_read"].tolist() == [3, 2, 0]
    assert rows["flops"].tolist() == pytest.approx([2 * (1e9 * 3 + 7e9 * 3), 2 * (1e9 * 2 + 7e9 * 2), 0.0])
    assert rows["correct"].tolist() == [1.0, 0.0, 0.0] and rows["doc"].tolist() == ["t/0", "t/1", "t/2"]
    with pytest.raises(ValueError, match="not in generations"):
        job_requests(step_trace(), ROUTED, {}, outcomes().iloc[:1])


def test_record_carries_requests_and_costs_to_the_tables(tmp_path):
    written = analyze_job(step_trace(), ROUTED, {"params": {"temperature": 0.0}}, n_boot=50,
                          outcomes=(outcomes(), "ok"), wall_s=12.0)
    write_stats(written, tmp_path / "stats.json")
    record = json.loads((tmp_path / "stats.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert record["requests"]["tokens"] == [4, 3, 0] and record["requests"]["correct"] == [1.0, 0.0, 0.0]
    costs = record["costs"]
    assert costs["s2_share"] == pytest.approx(4 / 7) and costs["s2_consultations_per_request"] == pytest.approx(1.0)
    assert costs["wall_s_per_request"] == pytest.approx(4.0) and costs["request_accuracy"] == pytest.approx(1 / 3)
    frame = request_frame([record])
    assert len(frame) == 3 and (frame["wall_s"] == 12.0).all() and (frame["variant"] == "oracle_entropy").all()
    assert frame["doc_id"].tolist() == ["t/0", "t/1", "t/2"]
    table = costs_table([record, {**record, "costs": {**costs, "wall_s": math.nan, "wall_status": "no benchmark file"}}])
    assert table["status"].tolist() == ["ok", "wall time: no benchmark file"]
    assert table["s2_share"].tolist() == pytest.approx([4 / 7, 4 / 7])
    assert jobs_table([record])["temperature"].tolist() == [0.0]


def test_request_outcomes_say_why_correctness_is_missing(tmp_path):
    gens = [{"request_id": i, "task": "mt", "doc_id": 10 + i} for i in range(2)]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    assert request_outcomes(tmp_path / "nope.jsonl") == (None, "no generations.jsonl")
    frame, status = request_outcomes(tmp_path / "g.jsonl", tmp_path / "scored.jsonl")
    assert status.startswith("no scored_samples") and frame["doc"].tolist() == ["mt/10", "mt/11"]
    scored = [{"task": "mt", "doc_id": 10 + i, "filter": "none", "metrics": ["score"], "score": 7.0} for i in range(2)]
    (tmp_path / "scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored))
    frame, status = request_outcomes(tmp_path / "g.jsonl", tmp_path / "scored.jsonl")
    assert status.startswith("no per-document metric") and frame["correct"].isna().all()
    scored = [{**r, "metrics": ["exact_match"], "exact_match": float(i)} for i, r in enumerate(scored)]
    (tmp_path / "scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored))
    frame, status = request_outcomes(tmp_path / "g.jsonl", tmp_path / "scored.jsonl")
    assert status == "ok" and frame["correct"].tolist() == [0.0, 1.0]


# ---- the paper comparison under the authors' definitions --------------------------------------------


def test_proxy_record_has_both_definitions():
    job = {**ROUTED, "variant": "proxy", "method": "proxy", "router": "always"}
    trace = proxy_trace().assign(drafted=False, s1_top1_prob=np.linspace(0.3, 0.9, 7), s1_top2_prob=0.05,
                                 s1_entropy=np.linspace(2.0, 0.5, 7))
    jobs = jobs_table([analyze_job(trace, job, {}, n_boot=50)])
    assert jobs["freq_proxy_tuned"].iloc[0] == pytest.approx(3 / 7) == jobs["freq_pooled"].iloc[0]
    assert jobs["freq_proxy_base"].iloc[0] == pytest.approx(2 / 7)


def comparison_jobs() -> pd.DataFrame:
    rows = [("oracle", "oracle", "A", 0.0, {"freq_pooled": 0.10}),
            ("proxy", "proxy", "A", 0.0, {"freq_pooled": 0.30, "freq_proxy_base": 0.20}),
            ("proxy", "proxy", "B", 0.0, {"freq_pooled": 0.31}),  # decoded before the base argmax was recorded
            ("speculative", "speculative", "A", 0.0, {"freq_pooled": 0.15, "freq_corrections": 0.12}),
            ("spec_t1-seed0", "speculative", "A", 1.0, {"freq_pooled": 0.40, "freq_corrections": 0.35})]
    out = []
    for variant, method, small, temperature, freqs in rows:
        row = {"benchmark": "gsm8k", "variant": variant, "method": method, "router": "always", "large": "org/L",
               "small": small, "temperature": temperature}
        for name in ("freq_pooled", "freq_proxy_base", "freq_corrections"):
            value = freqs.get(name, math.nan)
            row.update({name: value, f"{name}_low": value - 0.01, f"{name}_high": value + 0.01})
        out.append(row)
    return pd.DataFrame(out)


def test_paper_comparison_uses_the_authors_definitions():
    reference = pd.DataFrame([{"method": m, "benchmark": "gsm8k", "large_model": "L", "small_model": s,
                               "large_params_b": 7, "small_params_b": 1 if s == "A" else 2,
                               "collaboration_frequency": 0.05}
                              for m, s in [("oracle", "A"), ("proxy", "A"), ("proxy", "B"), ("speculative", "A")]])
    table = reference_comparison(comparison_jobs(), reference).set_index(["method", "small_model"])
    assert table.loc[("oracle", "A"), "freq_ours"] == pytest.approx(0.10)
    assert table.loc[("proxy", "A"), "freq_ours"] == pytest.approx(0.20)  # base, not the tuned 0.30
    assert table.loc[("proxy", "A"), "freq_ours_low"] == pytest.approx(0.19)
    assert table.loc[("speculative", "A"), "freq_ours"] == pytest.approx(0.12)  # corrections only
    assert table.loc[("speculative", "A"), "our_variant"] == "speculative"  # the sampled run is not the paper's
    assert table.loc[("proxy", "A"), "definition"] == AUTHORS_DEFINITIONS["proxy"][1]
    assert table.loc[("oracle", "A"), "definition"] == SAME_DEFINITION[1]
    assert table.loc[("proxy", "B"), "status"] == MISSING_DEFINITION["proxy"]
    assert math.isnan(table.loc[("proxy", "B"), "freq_ours"]) and not table.loc[("proxy", "B"), "matched"]
    assert table.loc[("proxy", "A"), "difference"] == pytest.approx(0.15)


# ---- collaboration under sampling ---------------------------------------------------------------------


def sampling_record(variant, small, temperature, judged, rejected) -> dict:
    return {"job": {"benchmark": "b", "variant": variant, "large": "L", "small": small},
            "decode": {"temperature": temperature}, "sampling": {"judged": judged, "rejected": rejected}}


def test_sampling_table_interval_across_seeds():
    records = [sampling_record("t1-seed0", "A", 1.0, 100, 20), sampling_record("t1-seed1", "A", 1.0, 50, 15),
               sampling_record("greedy", "A", 0.0, 80, 8), sampling_record("t1-seed0", "B", 1.0, 40, 10),
               {"job": {"benchmark": "b", "variant": "oracle", "large": "L", "small": "A"}}]
    table = sampling_table(records).set_index("small")
    half = scipy_stats.t.ppf(0.975, 1) * np.std([0.2, 0.3], ddof=1) / math.sqrt(2)
    a = table.loc["A"]
    assert (a["setting"], a["n_seeds"], a["status"]) == ("t1", 2, "ok")
    assert a["rejection_share"] == pytest.approx(0.25) and a["greedy_mismatch_share"] == pytest.approx(0.1)
    assert (a["rejection_low"], a["rejection_high"]) == pytest.approx((0.25 - half, 0.25 + half))
    assert table.loc["B", "status"] == "one seed: no interval across seeds; no greedy speculative run of this pair"
    empty = sampling_table(records[2:3])
    assert len(empty) == 1 and empty["status"].iloc[0].startswith("no sampled speculative run")


def test_sampled_speculative_runs_leave_the_greedy_tables():
    job = {**ROUTED, "variant": "speculative", "method": "speculative", "router": "always", "k": K}
    trace = speculative_trace(REQUESTS)
    greedy = analyze_job(trace, job, {"params": {"temperature": 0.0}}, n_boot=20)
    sampled = analyze_job(trace, {**job, "variant": "spec-seed1"}, {"params": {"temperature": 1.0}}, n_boot=20)
    assert sampled["sampling"]["rejected"] == 5  # the corrections of REQUESTS
    tables = build_tables([greedy, sampled])
    assert set(tables["speculative"]["variant"]) == {"speculative"}
    assert set(tables["sampling"]["setting"]) == {"spec"}


# ---- which interventions matter -----------------------------------------------------------------------


def counterfactual_job(rows: pd.DataFrame) -> dict:
    """An oracle trace holding the counterfactual rows' positions (and a few kept tokens)."""
    n_tokens = rows.groupby("request_id")["n_tokens"].first()
    trace = pd.DataFrame([{"request_id": r, "position": p} for r, n in n_tokens.items() for p in range(n)])
    keys = set(zip(rows["request_id"], rows["position"]))
    trace["intervened"] = [(r, p) in keys for r, p in zip(trace["request_id"], trace["position"])]
    p1 = np.linspace(0.05, 0.95, len(trace))
    trace = trace.assign(s1_top1_prob=p1, s1_top2_prob=(1 - p1) / 2, s1_entropy=2 - 2 * p1)
    return {"job": {"benchmark": "b", "variant": "oracle", "large": "L", "small": "S"}, "frame": rows,
            "meta": {"status": "ok", "interventions": len(rows)}, "trace": trace}


def test_critical_tables_by_hand():
    ok = counterfactual_job(counterfactual_rows())
    skipped = {"job": {**ok["job"], "benchmark": "mt"}, "frame": counterfactual_rows().iloc[0:0],
               "meta": {"status": "skipped", "reason": "no accuracy metric"}, "trace": None}
    tables = critical_tables([ok, skipped], n_boot=100)
    crit = tables["critical"].set_index("benchmark")
    assert (crit.loc["b", "n"], crit.loc["b", "n_critical"], crit.loc["b", "share"]) == (6, 3, pytest.approx(0.5))
    assert crit.loc["mt", "status"] == "skipped: no accuracy metric" and math.isnan(crit.loc["mt", "share"])
    bins = tables["critical_bins"].query("benchmark == 'b'")
    position = bins[bins["by"] == "position"]  # relative positions 0, .5, .9, .25, .75, .4
    assert position["n"].tolist() == [1, 1, 2, 1, 1] and position["n_critical"].tolist() == [1, 1, 0, 1, 0]
    assert position.loc[position["n"] > 0, "status"].eq("ok").all()
    routers = tables["critical_routers"]
    assert set(routers.query("benchmark == 'b'")["target"]) == {"critical", "intervention"}
    assert routers.query("benchmark == 'mt'")["status"].tolist() == ["skipped: no accuracy metric"]
    off = critical_tables([], why_none="counterfactual stage off (counterfactual.positions: 0)")
    for table in off.values():
        assert table["status"].tolist() == ["counterfactual stage off (counterfactual.positions: 0)"]


# ---- frontier statuses ---------------------------------------------------------------------------------


def frontier_requests(benchmark: str, metric: bool) -> pd.DataFrame:
    rows = []
    for variant, method, large, small, share, acc in [("single", "single", "S", "S", 0, 0.2),
                                                      ("single", "single", "L", "L", 0, 0.8),
                                                      ("oracle", "oracle", "L", "S", 0.5, 0.6)]:
        for doc in range(10):
            tokens = 10
            rows.append({"benchmark": benchmark, "variant": variant, "method": method, "router": "always",
                         "large": large, "small": small, "request_id": doc, "doc_id": f"t/{doc}",
                         "correct": float(doc < acc * 10) if metric else math.nan, "tokens": tokens,
                         "s2_tokens": share * tokens, "s2_consultations": 1 if share else 0,
                         "s2_forward_passes": share * tokens, "s1_tokens_read": tokens - 1,
                         "s2_tokens_read": tokens - 1 if share else 0, "flops": 1.0, "wall_s": math.nan})
    return pd.DataFrame(rows)


def test_frontier_rows_say_why_a_value_is_missing():
    requests = pd.concat([frontier_requests("arith", True), frontier_requests("mtbench", False)], ignore_index=True)
    tables = frontier_outputs(requests, n_boot=50)
    points = tables["frontier_points"]
    assert points.query("benchmark == 'arith'")["status"].eq("ok").all()
    assert points.query("benchmark == 'mtbench'")["status"].str.startswith("no accuracy").all()
    gap = tables["gap_recovery"].query("benchmark == 'arith' and cost_model == 's2_share'").iloc[0]
    # target 0.2 + 0.9·0.6 = 0.74 between oracle (0.5, 0.6) and large alone (1, 0.8): 0.5 + 0.14/0.2·0.5
    assert gap["cost"] == pytest.approx(0.85) and gap["status"] == "ok"
    assert frontier_outputs(requests.iloc[0:0], n_boot=10)["gap_recovery"]["status"].iloc[0].startswith("no pair")


# ---- headline findings and the report's landing text ---------------------------------------------------


def finding_tables() -> dict:
    jobs = pd.DataFrame([
        {"benchmark": "b", "variant": v, "method": m, "router": r, "large": "L", "small": s, "temperature": 0.0,
         "freq_pooled": f, "large_accuracy": 0.8, "accuracy": 0.5}
        for v, m, r, s, f in [("oracle", "oracle", "always", "S", 0.12), ("oracle", "oracle", "always", "M", 0.31),
                              ("proxy", "proxy", "always", "S", 0.08), ("oracle_e", "oracle", "entropy:1", "S", 0.05)]])
    online = pd.DataFrame([
        {"benchmark": "b", "large": "L", "small": "S", "method": "oracle", "variant": v, "router": r,
         "s2_call_rate": c, "accuracy": a, "status": "ok"}
        for v, r, c, a in [("oracle_e1", "entropy:1", 0.4, 0.81), ("oracle_e2", "entropy:2", 0.2, 0.79),
                           ("oracle_e3", "entropy:0.5", 0.6, 0.85), ("never", "never", 0.0, 0.3)]])
    gaps = pd.DataFrame([{"benchmark": "b", "large": "L", "small": "S", "cost_model": "s2_share", "cost": 0.42,
                          "low": 0.3, "high": 0.55, "status": "ok"}])
    formula = {"power": "b − a·r^(−α)", "log_ratio": "c + d·ln r", "log_small": "c + d·ln N_small"}
    forms = pd.DataFrame([
        {"source": "ours", "variant": v, "benchmark": "b", "form": f, "formula": formula[f], "aicc": a,
         "at_bound": "alpha" if f == "power" and v == "oracle" else ""}
        for v, f, a in [("oracle", "power", 10.0), ("oracle", "log_small", 5.0), ("oracle", "log_ratio", 8.0),
                        ("proxy", "power", 9.0), ("proxy", "log_ratio", 5.0), ("proxy", "log_small", 6.0),
                        ("oracle_e", "log_small", 1.0)]])  # routed: not on the landing page
    sampling = pd.DataFrame([
        {"benchmark": "b", "large": "L", "small": s, "setting": "t1", "temperature": 1.0, "n_seeds": 3,
         "rejection_share": r, "rejection_low": lo, "rejection_high": hi, "greedy_mismatch_share": g, "status": "ok"}
        for s, r, lo, hi, g in [("S", 0.2, 0.15, 0.25, 0.1), ("M", 0.3, 0.1, 0.5, 0.3)]])
    return {"jobs": jobs, "router_online": online, "gap_recovery": gaps, "scaling_forms": forms,
            "sampling": sampling}


def test_findings_from_the_tables():
    items = {f.topic: f for f in findings(finding_tables())}
    freq = items["Collaboration frequency"].text
    assert "from 0.080 (`proxy`" in freq and "to 0.310 (`oracle`, L / M" in freq
    assert "2 of 3 jobs (67%) are below 20%" in freq  # the routed job is not counted
    router = items["Best router at the large model's accuracy"].text
    assert "`oracle_e1`" in router and "at 40% of tokens" in router  # 0.2 does not reach 0.8; 0.4 is the cheapest
    assert "L / S (`b`) 0.42 [0.30, 0.55]" in items["90% of the gap"].text
    assert items["Which interventions matter"].text.startswith("no critical share")
    form = items["Which form"].text
    assert form.startswith("the data support c + d·ln N_small for `oracle`/`b`; the data do not separate "
                           "c + d·ln r from c + d·ln N_small for `proxy`/`b`")
    assert "supported form in 0 of 2, its exponent at the 0.05 bound in 1" in form and "oracle_e" not in form
    sampling = items["Under sampling"].text
    assert "rejects 0.200 to 0.300 of the judged drafts" in sampling and "greedy share for 1 of 2" in sampling


def report_targets() -> str:
    """The link targets Snakemake's report defines: every report file by name, every category."""
    names = {Path(o.path).name for o in outputs.report_outputs()}
    categories = {o.category for o in outputs.report_outputs()} | {"Examples"}
    lines = [f".. _{n}: javascript:app.showResultInfo('{n}')" for n in sorted(names)]
    lines += [f".. _{c}: javascript:app.showCategory('{c}')" for c in sorted(categories)]
    lines += [".. _Workflow: javascript:show_panel('workflow')"]
    return "\n\n" + "\n".join(lines) + "\n"


def test_landing_page_renders_with_every_link_resolved(tmp_path, monkeypatch):
    from docutils.core import publish_parts

    text = findings_rst(findings(finding_tables()), "4 pair jobs.")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "findings.rst").write_text(text)
    monkeypatch.chdir(tmp_path)  # the report runs in the workflow's working directory
    source = (REPO / "workflow" / "report" / "workflow.rst").read_text() + report_targets()
    html = publish_parts(source, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})[
        "html_body"]  # halt_level 2: an unresolved link or a markup error raises
    assert "What this run found" in html and "0.42 [0.30, 0.55]" in html
    assert "javascript:app.showResultInfo('frontier.png')" in html
    assert "javascript:app.showCategory('Cost')" in html
    assert rst_text("a_b *c* `x_y`") == r"a\_b \*c\* ``x_y``"
