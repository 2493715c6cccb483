"""Cost models and accuracy–cost frontiers (fsgen.analysis.cost) on hand-made traces and jobs
with answers worked out by hand, and the step loop's own forwards counted on the tiny family."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from fsgen.analysis.cost import (
    LARGE_ALONE,
    SMALL_ALONE,
    cost_summary,
    cost_to_reach,
    decode_benchmark_path,
    doc_weights,
    frontier_at,
    frontier_tables,
    job_costs,
    pair_requests,
    pareto_mask,
    read_wall_seconds,
    request_correctness,
    request_costs,
)
from fsgen.analysis.scaling_forms import group_rng

torch.set_num_threads(1)


def step_trace(consulted: list[list[int]]) -> pd.DataFrame:
    """One request per list of 0/1 flags (1 = System 2 consulted at that position)."""
    rows = [{"request_id": rid, "position": pos, "s2_called": bool(flag), "intervened": False, "drafted": False,
             "round": None} for rid, flags in enumerate(consulted) for pos, flag in enumerate(flags)]
    return pd.DataFrame(rows)


def spec_trace(rounds: list[list[tuple[int, bool]]]) -> pd.DataFrame:
    """Per request, per round (accepted drafts, System 2's token kept)."""
    rows = []
    for rid, request in enumerate(rounds):
        position = 0
        for r, (accepted, own) in enumerate(request):
            for j in range(accepted + int(own)):
                rows.append({"request_id": rid, "position": position, "s2_called": True, "intervened": False,
                             "drafted": j < accepted, "round": r})
                position += 1
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ per-request costs


def test_step_loop_costs_by_hand():
    # request 0: consulted at 0, 1 and 4 -> two runs (0-1, 4); request 1: never consulted
    trace = step_trace([[1, 1, 0, 0, 1, 0], [0, 0, 0, 0]])
    costs = request_costs(trace, "oracle", router="entropy:1.0").set_index("request_id")
    # request 0: System 2 reads token 0 at position 1's consultation, tokens 1..3 at position 4's: 4
    assert costs.loc[0, ["tokens", "s2_tokens", "s2_consultations", "s2_forward_passes"]].tolist() == [6, 3, 2, 3]
    assert costs.loc[0, ["s1_tokens_read", "s2_tokens_read"]].tolist() == [5, 4]
    assert costs.loc[1, ["s2_tokens", "s2_consultations", "s2_tokens_read", "s1_tokens_read"]].tolist() == [0, 0, 0, 3]
    assert not costs["prompt_counted"].any()
    # with prompts of 7 and 3 tokens: System 1 reads them whole; System 2 is prefilled with all but
    # the last, which it reads at its first consultation (request 1 never consults: 2)
    costs = request_costs(trace, "oracle", "entropy:1.0", prompt_lengths={0: 7, 1: 3}).set_index("request_id")
    assert costs.loc[0, ["s1_tokens_read", "s2_tokens_read"]].tolist() == [12, 11]
    assert costs.loc[1, ["s1_tokens_read", "s2_tokens_read"]].tolist() == [6, 2]
    assert costs["prompt_counted"].all()
    with pytest.raises(KeyError, match="request ids"):
        request_costs(trace, "oracle", prompt_lengths={0: 7})


def test_speculative_costs_by_hand():
    # k = 3. Round 0: 3 drafts accepted + bonus; round 1: 1 accepted + correction; round 2: 0 + correction.
    # System 2 reads [pending] + 3 drafts per round: 3 (the first pending is the prompt's) + 4 + 4 = 11.
    # System 1: round 0 forwards [prompt's last], d1, d2 -> 2 generated; round 1 [d3, bonus], e1, e2 -> 4;
    # round 2 [correction], f1, f2 -> 3; total 9.
    trace = spec_trace([[(3, True), (1, True), (0, True)], [(2, True), (1, False)]])
    costs = request_costs(trace, "speculative", k=3).set_index("request_id")
    assert costs.loc[0].drop("prompt_counted").tolist() == [7, 3, 1, 3, 9, 11]
    # request 1: round 0 2 accepted + correction; round 1 cut by a stop after 1 accepted draft (no S2 token):
    # System 2 reads 3 + 4 = 7; System 1 reads 2 + (1 + 2) = 5
    assert costs.loc[1, ["tokens", "s2_tokens", "s2_forward_passes", "s1_tokens_read", "s2_tokens_read"]].tolist() \
        == [4, 1, 2, 5, 7]
    with_prompt = request_costs(trace, "speculative", k=3, prompt_lengths={0: 5, 1: 2}).set_index("request_id")
    assert with_prompt.loc[0, ["s1_tokens_read", "s2_tokens_read"]].tolist() == [14, 16]
    with pytest.raises(ValueError, match="k"):
        request_costs(trace, "speculative")


def test_flops_per_model_by_hand():
    trace = step_trace([[1, 0, 1]])  # System 1 reads 2 tokens, System 2 reads 2 (tokens 0 and 1)
    job = {"method": "proxy", "router": "always", "large_params": 7e9, "small_params": 1.5e9}
    costs = job_costs(trace, job)
    # proxy: System 2's side is the large model and the base small model, reading the same blocks
    assert costs["flops"].iloc[0] == pytest.approx(2 * (1.5e9 * 2 + (7e9 + 1.5e9) * 2))
    contrastive = job_costs(trace, {**job, "method": "contrastive"})
    assert contrastive["flops"].iloc[0] == pytest.approx(2 * (1.5e9 * 2 + 7e9 * 2))
    large_alone = job_costs(trace, {**job, "method": "single", "small_params": 7e9})
    assert large_alone["flops"].iloc[0] == pytest.approx(2 * 7e9 * 2)
    summary = cost_summary(contrastive)
    assert summary["s2_share"] == pytest.approx(2 / 3) and summary["s2_consultations_per_request"] == 2


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    from fsgen.decoding.engine import load_systems
    from fsgen.testing import build_tiny_family

    family = build_tiny_family(tmp_path_factory.mktemp("family"))
    return load_systems("proxy", small=str(family["small"]), large=str(family["large"]), small_tuned=str(family["small_tuned"]))


@pytest.mark.parametrize("method,router,k", [("oracle", "entropy:4.2", 1), ("proxy", "always", 1),
                                              ("speculative", "always", 1)])
def test_tokens_read_equal_the_forwards_of_a_real_run(systems, monkeypatch, method, router, k):
    """Counted from the trace = tokens the models' forwards actually processed (batched run;
    speculative with k = 1, where no round drafts fewer than k)."""
    from fsgen.decoding.config import DecodeConfig
    from fsgen.decoding.engine import decode, prepare_prompt
    from fsgen.decoding.kvcache import CachedModel

    read = Counter()
    forward = CachedModel.forward

    def counting(self, tokens, valid, last_only=False):
        read[id(self.model)] += int(valid.sum())
        return forward(self, tokens, valid, last_only)

    monkeypatch.setattr(CachedModel, "forward", counting)
    prompts = ["Tom has 3 apples.", "def add(a, b):", "Q", "The quick brown fox jumps over"]
    config = DecodeConfig(method=method, router=router, k=k, max_new_tokens=9, batch_size=3, progress=False)
    result = decode(systems, prompts, config)
    lengths = {i: len(prepare_prompt(systems.tokenizer, p, i, 9, None)) for i, p in enumerate(prompts)}
    costs = request_costs(result.trace, method, router, k, prompt_lengths=lengths)
    s1, s2 = (systems.small_tuned, systems.large) if method == "proxy" else (systems.small, systems.large)
    assert costs["s1_tokens_read"].sum() == read[id(s1)]
    assert costs["s2_tokens_read"].sum() == read[id(s2)]
    if method == "proxy":
        assert read[id(systems.small)] == read[id(systems.large)]
    if method == "oracle":
        assert 0 < costs["s2_tokens"].sum() < costs["tokens"].sum()  # the router skipped some positions


# ------------------------------------------------------------------ files


def test_request_correctness_and_wall_time(tmp_path):
    gens = [{"request_id": 0, "task": "t", "doc_id": 4}, {"request_id": 1, "task": "t", "doc_id": 9}]
    scored = [{"task": "t", "doc_id": d, "filter": f, "metrics": ["exact_match"], "exact_match": v}
              for d, f, v in [(4, "strict-match", 0.0), (4, "flexible-extract", 1.0),
                              (9, "strict-match", 1.0), (9, "flexible-extract", 1.0)]]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gens))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored))
    strict = request_correctness(tmp_path / "g.jsonl", tmp_path / "s.jsonl", "exact_match,strict-match")
    assert strict[["request_id", "doc_id", "correct"]].values.tolist() == [[0, 4, 0.0], [1, 9, 1.0]]
    default = request_correctness(tmp_path / "g.jsonl", tmp_path / "s.jsonl")  # flexible-extract comes first
    assert default["correct"].tolist() == [1.0, 1.0]
    with pytest.raises(KeyError, match="acc,none"):
        request_correctness(tmp_path / "g.jsonl", tmp_path / "s.jsonl", "acc,none")
    (tmp_path / "b.tsv").write_text("s\th:m:s\tmax_rss\n13.5\t0:00:13\t544\n14.5\t0:00:14\t544\n")
    assert read_wall_seconds(tmp_path / "b.tsv") == pytest.approx(14.0)
    (tmp_path / "bad.tsv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="bad.tsv"):
        read_wall_seconds(tmp_path / "bad.tsv")
    job = {"benchmark": "gsm8k", "variant": "oracle", "method": "oracle", "large": "L", "small": "S"}
    assert decode_benchmark_path("results/benchmarks", job).as_posix() == "results/benchmarks/decode/gsm8k/oracle/L__S.tsv"
    single = {**job, "variant": "single", "method": "single", "small": "L"}
    assert decode_benchmark_path("results/benchmarks", single).as_posix().endswith("decode/gsm8k/single/L.tsv")


# ------------------------------------------------------------------ frontiers


def slow_pareto(cost, acc):
    keep = []
    for i in range(len(cost)):
        beaten = any(cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j] < cost[i] or acc[j] > acc[i])
                     for j in range(len(cost)))
        keep.append(not beaten)
    return keep


def test_pareto_mask_against_slow_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cost, acc = rng.integers(0, 5, 9).astype(float), rng.integers(0, 5, 9).astype(float)  # many ties
        assert pareto_mask(cost, acc).tolist() == slow_pareto(cost, acc)
    assert pareto_mask([1.0, np.nan], [0.5, 0.9]).tolist() == [True, False]


def test_cost_to_reach_on_a_hand_made_frontier():
    cost = [0.0, 0.3, 0.5, 1.0, 1.0, 1.0]
    acc = [0.4, 0.6, 0.55, 0.8, 0.7, 0.8]
    # frontier (0, .4) -> (.3, .6) -> (1, .8); 90% of the gap .4 -> .8 is .76, reached at .3 + (.16/.2)·.7
    share, via = cost_to_reach(cost, acc, 0.76)
    assert share == pytest.approx(0.86) and via == [1, 3]
    assert cost_to_reach(cost, acc, 0.5)[0] == pytest.approx(0.15)
    assert cost_to_reach(cost, acc, 0.3) == (0.0, [0])  # the cheapest point already reaches it
    assert cost_to_reach(cost, acc, 0.9) == (math.inf, [])
    np.testing.assert_allclose(frontier_at(cost, acc, [-0.1, 0.15, 0.65, 2.0]), [np.nan, 0.5, 0.7, 0.8])


def pair_table(n_docs=40, seed=0):
    """Per-request rows of one pair (L, S) on one benchmark: two lone runs, four collaborations.

    Setting: (S2 share of tokens, accuracy). small alone (0, .4); router A (.3, .6); router B
    (.5, .55, dominated by A); oracle (1, .8); contrastive (1, .7, dominated); large alone (1, .8)."""
    rng = np.random.default_rng(seed)
    specs = [("single", "single", "never", "S", "S", 0.0, 0.4), ("oracle-a", "oracle", "entropy:1", "L", "S", 0.3, 0.6),
             ("oracle-b", "oracle", "entropy:2", "L", "S", 0.5, 0.55), ("oracle", "oracle", "always", "L", "S", 1.0, 0.8),
             ("contrastive", "contrastive", "always", "L", "S", 1.0, 0.7),
             ("single", "single", "never", "L", "L", 0.0, 0.8)]
    rows = []
    for variant, method, router, large, small, share, acc in specs:
        correct = np.zeros(n_docs)
        correct[rng.permutation(n_docs)[: round(acc * n_docs)]] = 1.0
        for doc in range(n_docs):
            rows.append({"benchmark": "b", "variant": variant, "method": method, "router": router, "large": large,
                         "small": small, "request_id": doc, "doc_id": doc, "correct": correct[doc], "tokens": 10,
                         "s2_tokens": round(10 * share), "s2_consultations": 2 if 0 < share < 1 else int(share),
                         "s2_forward_passes": round(10 * share), "s1_tokens_read": 9,
                         "s2_tokens_read": round(9 * share), "flops": 100.0 + 1000 * share,
                         "wall_s": {"L": 20.0, "S": 4.0}[large] if method == "single" else 12.0})
    return pd.DataFrame(rows)


def test_pair_requests_puts_lone_runs_in_system_2_terms():
    rows = pair_requests(pair_table(), "b", "L", "S")
    assert rows["setting"].drop_duplicates().tolist() == [SMALL_ALONE, "oracle-a", "oracle-b", "oracle", "contrastive",
                                                          LARGE_ALONE]
    large = rows[rows["setting"] == LARGE_ALONE]
    assert (large["s2_tokens"] == large["tokens"]).all() and (large["s2_consultations"] == 1).all()
    assert (large["s1_tokens_read"] == 0).all() and (large["s2_tokens_read"] == 9).all()


def test_frontier_and_gap_on_hand_made_jobs():
    requests = pair_table()
    tables = frontier_tables(requests, n_boot=200, seed=3)
    points = tables["frontier_points"]
    share = points[points["cost_model"] == "s2_share"].set_index("setting")
    assert share.loc[[SMALL_ALONE, "oracle-a", "oracle", LARGE_ALONE], "on_frontier"].all()
    assert not share.loc[["oracle-b", "contrastive"], "on_frontier"].any()
    np.testing.assert_allclose(share["cost"], [0, 0.3, 0.5, 1, 1, 1])
    np.testing.assert_allclose(share["accuracy"], [0.4, 0.6, 0.55, 0.8, 0.7, 0.8])
    gap = tables["gap_recovery"].set_index("cost_model")
    assert gap.loc["s2_share", "cost"] == pytest.approx(0.86) and gap.loc["s2_share", "status"] == "ok"
    assert gap.loc["s2_share", "via"] == "oracle-a → oracle"
    assert gap.loc["s2_share", "low"] <= 0.86 <= gap.loc["s2_share", "high"]
    # wall time per request is measured once (not resampled): small 4/40, routed 12/40, large 20/40
    wall = points[points["cost_model"] == "wall_s"].set_index("setting")
    assert wall.loc[SMALL_ALONE, "cost"] == pytest.approx(0.1) and wall.loc[LARGE_ALONE, "cost_low"] == pytest.approx(0.5)
    # the accuracy interval of one setting, rebuilt from the same document draws
    weights = doc_weights(40, 200, group_rng(3, "frontier", "b", "L", "S"))[1:]
    correct = requests[requests["variant"] == "oracle-a"].sort_values("doc_id")["correct"].to_numpy()
    low, high = np.percentile(weights @ correct / weights.sum(1), [2.5, 97.5])
    assert (share.loc["oracle-a", "accuracy_low"], share.loc["oracle-a", "accuracy_high"]) == pytest.approx((low, high))
    bands = tables["frontier_bands"]
    band = bands[bands["cost_model"] == "s2_share"]
    assert band["cost"].min() == 0 and band["cost"].max() == 1 and (band["low"] <= band["high"]).all()
    again = frontier_tables(requests, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(tables["gap_recovery"], again["gap_recovery"])


def test_gap_statuses():
    requests = pair_table()
    no_gap = requests.assign(correct=np.where(requests["large"] == requests["small"], 1.0, requests["correct"]))
    no_gap.loc[(no_gap["method"] == "single") & (no_gap["small"] == "S"), "correct"] = 1.0
    gap = frontier_tables(no_gap, n_boot=20)["gap_recovery"]
    assert gap["status"].str.startswith("no gap").all() and gap["cost"].isna().all()
    missing = frontier_tables(requests[~((requests["method"] == "single") & (requests["large"] == "L"))], n_boot=20)
    assert (missing["gap_recovery"]["status"] == "no small-alone or large-alone run").all()
    unscored = frontier_tables(requests.assign(correct=np.nan), n_boot=20)["gap_recovery"]
    assert unscored["status"].str.startswith("no accuracy").all()
    with pytest.raises(KeyError, match="flops"):
        frontier_tables(requests.drop(columns="flops"))
