"""The analysis conventions against the real engine on tiny models: speculative acceptance measured
on a speculative trace equals the acceptance predicted from the oracle trace of the same pair."""

from __future__ import annotations

import pytest
import torch

from fsgen.analysis import analyze_job

PROMPTS = ["Tom has 3 apples.", "def add(a, b):", "The quick brown", "Question: What is 9 times 8?", "A box holds"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    return build_tiny_family(tmp_path_factory.mktemp("family"))


@pytest.mark.parametrize("small_role,large_role", [("small", "large"), ("small", "small")])
@pytest.mark.parametrize("k", [1, 3])
def test_measured_equals_predicted_on_engine_traces(family, small_role, large_role, k):
    from fsgen.decoding.config import DecodeConfig
    from fsgen.decoding.engine import decode, load_systems

    small, large = str(family[small_role]), str(family[large_role])
    job = {"benchmark": "b", "large": large_role, "small": small_role, "large_params": 2.0, "small_params": 1.0}
    oracle = decode(load_systems(small=small, large=large, method="oracle"), PROMPTS,
                    DecodeConfig(method="oracle", max_new_tokens=24, top_k=4))
    spec = decode(load_systems(small=small, large=large, method="speculative"), PROMPTS,
                  DecodeConfig(method="speculative", k=k, max_new_tokens=24))
    assert [g["token_ids"] for g in oracle.generations] == [g["token_ids"] for g in spec.generations]
    rec_o = analyze_job(oracle.trace, {**job, "method": "oracle", "kind": "oracle", "router": "always"},
                        oracle.metadata, n_boot=50)
    rec_s = analyze_job(spec.trace, {**job, "method": "speculative", "kind": "speculative", "router": "always"},
                        spec.metadata, n_boot=50)
    predicted = next(p for p in rec_o["predicted_speculative"] if p["k"] == k)
    measured = rec_s["speculative"]
    for key in ("rounds", "acceptance_rate", "mean_accepted_length", "accepted_hist"):
        assert measured[key] == pytest.approx(predicted[key]), key
    assert rec_s["stats"]["freq_pooled"] == pytest.approx(rec_o["stats"]["freq_pooled"])
    corrections, s2_tokens = authors_counts(oracle.trace, k)
    assert rec_s["stats"]["n_corrections"] == corrections and rec_s["stats"]["n_s2_tokens"] == s2_tokens
    if small_role == large_role:  # identical models: every draft accepted
        assert measured["acceptance_rate"] == pytest.approx(1.0, abs=0.05)


def authors_counts(oracle_trace, k: int) -> tuple[int, int]:
    """(corrections, System 2 tokens) greedy speculative decoding makes, counted as the FS-GEN
    authors' loop does, token by token over the oracle trace: a draft agrees while System 1's
    argmax equals the final token; the first disagreement within K drafts is a correction
    (their `mismatch_tokens_num`), K agreements end with a bonus token, counted but not a mismatch."""
    corrections = s2_tokens = 0
    for _, request in oracle_trace.sort_values(["request_id", "position"]).groupby("request_id"):
        agree = (request["token_id"] == request["s1_token_id"]).tolist()
        pos = 0
        while pos < len(agree):
            accepted = 0
            while accepted < k and pos + accepted < len(agree) and agree[pos + accepted]:
                accepted += 1
            if pos + accepted < len(agree):  # System 2's own token was kept
                s2_tokens += 1
                corrections += accepted < k
            pos += accepted + 1
    return corrections, s2_tokens
