"""The claims of `fsgen/analysis/stats.py` tested as claims: the request bootstrap's 95% intervals
cover a known frequency 95% of the time in a seeded simulation, and on a sample whose bootstrap
distribution is known (a binomial) they are its 2.5th and 97.5th percentiles; per-request counts,
the collaboration statistics and the metric lookups on hand-built inputs. The mutation-testing
selection of `fsgen/analysis/stats.py` with tests/test_analysis_stats.py (docs/testing.md)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from fsgen.analysis.stats import (
    BootstrapCI,
    bool_column,
    bootstrap_frequency,
    collaboration_stats,
    document_metrics,
    metric_status,
    pair_mask,
    per_request_counts,
    primary_metric,
    read_jsonl,
    read_metrics,
    single_model,
    single_model_rows,
)

TRUE_FREQUENCY = 0.12
REPLICATES = 1000  # simulated studies; binomial SE of a 95% coverage: sqrt(0.95·0.05/1000) ≈ 0.7 points
TOLERANCE = 0.025  # ±2.5 points (3.6 SE): a 90% interval (coverage ≈ 0.89) or a 99% one (≈ 0.99) fails


def simulated_study(rng, n_requests=100, concentration=10.0):
    """Per-request (interventions, tokens): each request has its own frequency ~ Beta with mean
    TRUE_FREQUENCY (tokens of one request are not independent), lengths independent of it, so both
    the pooled and the per-sample estimands equal TRUE_FREQUENCY."""
    tokens = rng.integers(10, 60, n_requests)
    frequency = rng.beta(TRUE_FREQUENCY * concentration, (1 - TRUE_FREQUENCY) * concentration, n_requests)
    return rng.binomial(tokens, frequency), tokens


def test_bootstrap_intervals_cover_the_true_frequency_at_their_level():
    rng = np.random.default_rng(2024)
    covered = np.zeros(2)
    for replicate in range(REPLICATES):
        interventions, tokens = simulated_study(rng)
        pooled, per_sample = bootstrap_frequency(interventions, tokens, n_boot=1000, seed=replicate)
        covered += [pooled.low <= TRUE_FREQUENCY <= pooled.high, per_sample.low <= TRUE_FREQUENCY <= per_sample.high]
    coverage = covered / REPLICATES
    assert np.abs(coverage - 0.95).max() <= TOLERANCE, coverage


def test_bootstrap_percentiles_of_a_known_distribution():
    """100 one-token requests, 30 intervened: a bootstrap replicate's frequency is Binomial(100, 0.3)
    / 100, whose 2.5th and 97.5th percentiles are 0.21 and 0.39 (20 000 replicates put the
    empirical ones on them; a 90% interval would give 0.23 and 0.37)."""
    low, high = binom.ppf([0.025, 0.975], 100, 0.3) / 100
    assert (low, high) == (0.21, 0.39)
    interventions = np.array([1] * 30 + [0] * 70)
    pooled, per_sample = bootstrap_frequency(interventions, np.ones(100), n_boot=20_000, seed=5)
    assert pooled == BootstrapCI(pytest.approx(0.3), pytest.approx(low), pytest.approx(high))
    assert per_sample == BootstrapCI(pytest.approx(0.3), pytest.approx(low), pytest.approx(high))


def test_pooled_and_per_sample_differ_where_lengths_differ():
    """1 of 10 tokens and 3 of 3: pooled 4/13, per-sample mean (0.1 + 1) / 2; intervals resample
    requests (two requests: every replicate is one of the four pairs)."""
    pooled, per_sample = bootstrap_frequency(np.array([1, 3]), np.array([10, 3]), n_boot=4000, seed=1)
    assert pooled.value == pytest.approx(4 / 13) and per_sample.value == pytest.approx(0.55)
    assert (pooled.low, pooled.high) == (pytest.approx(0.1), pytest.approx(1.0))
    assert (per_sample.low, per_sample.high) == (pytest.approx(0.1), pytest.approx(1.0))


def test_bootstrap_without_tokens_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN by the rule, not by 0/0
        for interventions, tokens in (([], []), ([0, 0], [0, 0])):
            for ci in bootstrap_frequency(np.array(interventions), np.array(tokens)):
                assert math.isnan(ci.value) and math.isnan(ci.low) and math.isnan(ci.high)


def test_bootstrap_of_one_request_is_its_frequency():
    assert bootstrap_frequency([1], [1]) == (BootstrapCI(1.0, 1.0, 1.0), BootstrapCI(1.0, 1.0, 1.0))
    assert bootstrap_frequency([2], [5]) == (BootstrapCI(0.4, 0.4, 0.4), BootstrapCI(0.4, 0.4, 0.4))


def test_bootstrap_defaults_are_the_documented_ones():
    """docs/analysis.md: 1000 replicates, numpy.random.default_rng(seed), seed 0."""
    interventions, tokens = simulated_study(np.random.default_rng(5))
    assert bootstrap_frequency(interventions, tokens) == bootstrap_frequency(interventions, tokens, 1000, 0)
    assert bootstrap_frequency(interventions, tokens, 1000, 1) != bootstrap_frequency(interventions, tokens, 1000, 0)
    assert bootstrap_frequency(interventions, tokens, 1001, 0) != bootstrap_frequency(interventions, tokens, 1000, 0)


# ---------------------------------------------------------------- per-request counts and statistics


def trace(rows: list[tuple]) -> pd.DataFrame:
    """rows: (request_id, intervened, s2_called, round)."""
    return pd.DataFrame(rows, columns=["request_id", "intervened", "s2_called", "round"])


SPECULATIVE = trace([(4, False, True, 0), (4, False, True, 0), (4, True, True, 0), (4, False, True, 1),
                     (1, True, True, 0), (1, None, True, 1), (1, False, True, 1)])


def test_per_request_counts_with_rounds():
    counts = per_request_counts(SPECULATIVE)
    assert counts.to_dict("list") == {"request_id": [1, 4], "tokens": [3, 4], "interventions": [1, 1],
                                      "s2_positions": [3, 4], "rounds": [2, 2]}
    assert (counts.dtypes == np.int64).all()  # counts, written to stats.json as integers
    # a round whose only row has a null elsewhere still counts; a request without rounds has 0
    more = pd.concat([SPECULATIVE, trace([(7, None, True, 2), (9, False, True, None)])], ignore_index=True)
    assert per_request_counts(more)["rounds"].tolist() == [2, 2, 1, 0]
    plain = per_request_counts(SPECULATIVE.assign(round=None))
    assert "rounds" not in plain.columns


def test_collaboration_stats_of_a_speculative_trace():
    stats = collaboration_stats(SPECULATIVE, n_boot=200, seed=3)
    assert stats["n_samples"] == 2 and stats["n_tokens"] == 7 and stats["n_interventions"] == 2
    assert stats["freq_pooled"] == pytest.approx(2 / 7)
    assert stats["freq_per_sample"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert stats["s2_calls"] == 4 and stats["tokens_per_s2_call"] == pytest.approx(7 / 4)  # rounds, not positions
    assert stats["s2_call_rate"] == 1.0
    assert stats["interventions_per_sample"] == 1.0 and stats["tokens_per_sample"] == 3.5
    assert stats["freq_pooled_low"] <= stats["freq_pooled"] <= stats["freq_pooled_high"]
    assert stats["freq_per_sample_low"] <= stats["freq_per_sample"] <= stats["freq_per_sample_high"]
    again = collaboration_stats(SPECULATIVE, n_boot=200, seed=3)
    assert again == stats


def test_collaboration_stats_bootstrap_follows_its_seed_and_defaults():
    rng = np.random.default_rng(11)
    rows = [(r, bool(rng.random() < 0.2), True, None) for r in range(30) for _ in range(int(rng.integers(3, 12)))]
    routed = trace(rows)
    counts = per_request_counts(routed)
    for kwargs, (n_boot, seed) in (({"n_boot": 300, "seed": 7}, (300, 7)), ({}, (1000, 0))):
        stats = collaboration_stats(routed, **kwargs)
        pooled, per_sample = bootstrap_frequency(counts["interventions"], counts["tokens"], n_boot, seed)
        assert (stats["freq_pooled_low"], stats["freq_pooled_high"]) == (pooled.low, pooled.high)
        assert (stats["freq_per_sample_low"], stats["freq_per_sample_high"]) == (per_sample.low, per_sample.high)


def test_collaboration_stats_with_a_router_and_an_empty_trace():
    routed = trace([(0, True, True, None), (0, False, False, None), (0, False, False, None), (1, False, True, None)])
    stats = collaboration_stats(routed, n_boot=50)
    assert stats["s2_calls"] == 2 and stats["s2_call_rate"] == 0.5 and stats["tokens_per_s2_call"] == 2.0
    never = collaboration_stats(routed.assign(s2_called=False, intervened=False), n_boot=50)
    assert never["s2_calls"] == 0 and math.isnan(never["tokens_per_s2_call"]) and never["freq_pooled"] == 0.0
    empty = collaboration_stats(trace([]), n_boot=50)
    assert empty["n_samples"] == 0 and empty["n_tokens"] == 0
    for key in ("s2_call_rate", "tokens_per_s2_call", "interventions_per_sample", "tokens_per_sample", "freq_pooled"):
        assert math.isnan(empty[key]), key


def test_bool_column_reads_nulls_as_false_and_names_a_missing_column():
    intervened = bool_column(SPECULATIVE, "intervened")  # an object column with None
    assert intervened.dtype == bool and intervened.tolist() == [False, False, True, False, True, False, False]
    with pytest.raises(KeyError, match="trace has no column 'drafted'"):
        bool_column(SPECULATIVE, "drafted")
    nullable = bool_column(pd.DataFrame({"x": pd.array([True, None, False], dtype="boolean")}), "x")  # pd.NA
    assert nullable.dtype == bool and nullable.tolist() == [True, False, False]


# ---------------------------------------------------------------- metrics and the registry


def test_metric_lookup_order_and_status(tmp_path):
    both = {"metrics": {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.5, "acc,none": 0.75}}
    assert primary_metric(both) == 0.5  # flexible-extract before strict-match before acc
    assert primary_metric({"metrics": {"exact_match,strict-match": 0.25, "acc,none": 0.75}}) == 0.25
    assert primary_metric({"acc,none": 0.75}) == 0.75  # a bare metrics dict
    assert primary_metric({"metrics": {"acc_norm,x": 0.5, "acc,x": 0.25}}) == 0.25  # sorted: acc,x first
    assert primary_metric({"metrics": {"pass@1,none": 1}}) == 1.0
    assert math.isnan(primary_metric({"metrics": {"acc,none": True}}))  # a bool is not a score
    assert math.isnan(primary_metric({"metrics": {"acc_stderr,none": 0.1}}))
    assert math.isnan(primary_metric({"metrics": [0.5]}))
    assert math.isnan(primary_metric({}))
    assert metric_status(both) == "ok"
    assert metric_status({}) == "no metrics.json"
    assert metric_status(both, "f1,none") == "metric 'f1,none' not in metrics.json"
    assert metric_status({"metrics": {"generated,none": 3}}) == "no accuracy metric in metrics.json (generation-only task)"
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(both))
    assert read_metrics(path) == both
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object with a 'metrics' dict"):
        read_metrics(path)


def test_single_model_runs_by_the_registry():
    assert single_model("single") and not single_model("oracle") and not single_model("medusa")
    assert not single_model(None) and not single_model(["single"])  # only a name can be a method
    jobs = pd.DataFrame({"method": ["single", "oracle", "proxy", "speculative"], "large": ["a", "a", None, "a"],
                         "small": ["a", "b", "b", "b"]})
    assert single_model_rows(jobs["method"]).tolist() == [True, False, False, False]
    assert pair_mask(jobs).tolist() == [False, True, False, True]


def test_document_metrics_per_metric_filter_and_document(tmp_path):
    rows = [
        {"task": "gsm8k", "doc_id": 0, "filter": "strict-match", "metrics": ["exact_match"], "exact_match": 1.0,
         "question": "Ist 7 größer als 3?"},
        {"task": "gsm8k", "doc_id": 0, "filter": "flexible-extract", "metrics": ["exact_match"], "exact_match": 0.0},
        {"task": "gsm8k", "doc_id": 3, "filter": "strict-match", "metrics": ["exact_match"], "exact_match": True},
        {"task": "mbpp", "doc_id": 3, "metrics": ["pass@1", "acc"], "pass@1": 1, "acc": 0.25},  # no filter: "none"
        {"task": "mbpp", "doc_id": 4, "filter": "none"},  # no metrics
    ]
    path = tmp_path / "scored_samples.jsonl"
    path.write_bytes(("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n").encode("utf-8"))
    assert read_jsonl(path) == rows  # the blank line skipped, UTF-8 read as UTF-8
    values = document_metrics(path)
    assert values == {"exact_match,strict-match": {("gsm8k", 0): 1.0, ("gsm8k", 3): 1.0},
                      "exact_match,flexible-extract": {("gsm8k", 0): 0.0},
                      "pass@1,none": {("mbpp", 3): 1.0}, "acc,none": {("mbpp", 3): 0.25}}
    assert all(type(v) is float for per_doc in values.values() for v in per_doc.values())
