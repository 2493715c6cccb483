"""Speculative decoding's pure functions against slow references written out here: greedy
verification, lossless rejection sampling (hand-made cases on both sides of the acceptance
boundary, and the output distribution of many seeded rounds equal to the large model's),
inverse-CDF sampling and tempering. No models: the mutation-testing selection of the pure
functions of `fsgen/decoding/speculative.py` (docs/testing.md)."""

from __future__ import annotations

import math

import pytest
import torch

from fsgen.decoding.speculative import (
    _fill_bonus,
    _Row,
    _s1_fields,
    greedy_accept,
    rejection_accept,
    sample_inverse_cdf,
    tempered_probs,
)

torch.set_num_threads(1)


def inverse_cdf_reference(weights: list[float], u: float) -> int:
    """The smallest index whose running total exceeds u·total."""
    total, running = sum(weights), 0.0
    for i, w in enumerate(weights):
        running += w
        if running > u * total:
            return i
    return len(weights) - 1


def greedy_reference(drafts: list[int], target: list[list[float]]) -> tuple[int, int]:
    """Accept drafts while each equals System 2's argmax there; then System 2's argmax after them."""
    argmax = [max(range(len(row)), key=row.__getitem__) for row in target]
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == argmax[accepted]:
        accepted += 1
    return accepted, argmax[accepted]


def test_greedy_accept_equals_the_reference():
    generator = torch.Generator().manual_seed(3)
    batch, k, vocab = 64, 3, 5
    target = torch.log_softmax(torch.randn(batch, k + 1, vocab, generator=generator), -1)
    argmax = target.argmax(-1)
    # drafts agree with System 2 at a random prefix length (0..k), then differ
    agree_for = torch.randint(0, k + 1, (batch,), generator=generator)
    drafts = torch.where(torch.arange(k) < agree_for[:, None], argmax[:, :k], (argmax[:, :k] + 1) % vocab)
    drafts[0, 1] = argmax[0, 1]  # agreement after a disagreement does not count
    drafts[0, 0] = (argmax[0, 0] + 2) % vocab
    accepted, next_token = greedy_accept(drafts, target)
    expected = [greedy_reference(d, t) for d, t in zip(drafts.tolist(), target.tolist())]
    assert list(zip(accepted.tolist(), next_token.tolist())) == expected
    assert {a for a, _ in expected} == set(range(k + 1))  # every outcome, the bonus token (k) included


def rejection_case(p_rows, q_rows, drafts, accept_u, residual_u):
    """Tensors [1, ...] of one row."""
    return (torch.tensor([drafts]), torch.tensor([q_rows]), torch.tensor([p_rows]), torch.tensor([accept_u]),
            torch.tensor([residual_u]))


Q = [[0.6, 0.2, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]  # System 1 at the two draft positions
P = [[0.3, 0.4, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.05, 0.05, 0.1, 0.8]]  # System 2 at them and after


@pytest.mark.parametrize("u0, accepted", [(0.49, 1), (0.5, 0)])
def test_acceptance_is_u_below_p_over_q(u0, accepted):
    """Draft 0 has p/q = 0.3/0.6 = 0.5 exactly: u = 0.49 accepts, u = 0.5 rejects (u < p/q)."""
    got, _ = rejection_accept(*rejection_case(P, Q, [0, 0], [u0, 0.99], 0.0))  # draft 1: p/q = 0.4
    assert got.tolist() == [accepted]


def test_rejection_samples_the_normalised_residual():
    # draft 0 (p/q = 0.5) rejected: residual max(0, p − q) = [0, 0.2, 0.1, 0] → token 1 or 2
    for u, token in [(0.0, 1), (0.6, 1), (0.7, 2), (0.99, 2)]:
        accepted, nxt = rejection_accept(*rejection_case(P, Q, [0, 3], [0.9, 0.0], u))
        assert (accepted.item(), nxt.item()) == (0, token), u
        residual = [max(0.0, p - q) for p, q in zip(P[0], Q[0])]
        assert nxt.item() == inverse_cdf_reference(residual, u)
    # draft 0 accepted (u = 0.1), draft 1 = token 3 with p/q = 0.4/0.25 > 1: accepted; the bonus from P[2]
    accepted, nxt = rejection_accept(*rejection_case(P, Q, [0, 3], [0.1, 0.999], 0.5))
    assert (accepted.item(), nxt.item()) == (2, inverse_cdf_reference(P[2], 0.5)) == (2, 3)
    # draft 1 = token 0 with p/q = 0.1/0.25 = 0.4 rejected at u = 0.41: residual [0, 0, 0.05, 0.15]
    accepted, nxt = rejection_accept(*rejection_case(P, Q, [0, 0], [0.1, 0.41], 0.3))
    assert (accepted.item(), nxt.item()) == (1, 3)
    accepted, nxt = rejection_accept(*rejection_case(P, Q, [0, 0], [0.1, 0.41], 0.2))
    assert (accepted.item(), nxt.item()) == (1, 2)


def test_rejection_without_residual_mass_samples_the_target():
    """p == q leaves no residual; a rejection there (only at u = 1) falls back to p."""
    same = [[0.1, 0.2, 0.3, 0.4]] * 2
    accepted, nxt = rejection_accept(*rejection_case(same, same[:1], [2], [1.0], 0.25))
    assert (accepted.item(), nxt.item()) == (0, inverse_cdf_reference(same[0], 0.25)) == (0, 1)


def test_rows_fall_back_to_the_target_on_their_own():
    """The fallback is per row: a row without residual mass beside one with it."""
    same = [[0.1, 0.2, 0.3, 0.4]] * 2
    drafts, q, p, accept_u, residual_u = (torch.cat(parts) for parts in zip(
        rejection_case(same, same[:1], [2], [1.0], 0.25), rejection_case(P[1:], Q[:1], [0], [0.9], 0.25)))
    accepted, nxt = rejection_accept(drafts, q, p, accept_u, residual_u)
    residual = [max(0.0, a - b) for a, b in zip(P[1], Q[0])]  # [0, 0, 0.2, 0.3]
    assert accepted.tolist() == [0, 0]
    assert nxt.tolist() == [inverse_cdf_reference(same[0], 0.25), inverse_cdf_reference(residual, 0.25)] == [1, 2]


def test_output_follows_the_large_model_distribution():
    """Leviathan et al.'s guarantee, by simulation: drafts from q, the first emitted token (the
    accepted draft, else the residual sample) is distributed as p, and the second as p after the
    first (here the same p at every position)."""
    generator = torch.Generator().manual_seed(0)
    rows, k = 200_000, 2
    q = torch.tensor([0.5, 0.3, 0.15, 0.05])
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    drafts = torch.multinomial(q, rows * k, replacement=True, generator=generator).view(rows, k)
    accepted, nxt = rejection_accept(drafts, q.expand(rows, k, 4), p.expand(rows, k + 1, 4),
                                     torch.rand(rows, k, generator=generator), torch.rand(rows, generator=generator))
    first = torch.where(accepted > 0, drafts[:, 0], nxt)
    second = torch.where(accepted > 1, drafts[:, 1], nxt)[accepted >= 1]
    for emitted in (first, second):
        frequency = torch.bincount(emitted, minlength=4).double() / len(emitted)
        torch.testing.assert_close(frequency, p.double(), atol=6e-3, rtol=0)
    # acceptance rate of a draft: Σ min(p, q) = 0.1 + 0.2 + 0.15 + 0.05
    assert (accepted >= 1).double().mean().item() == pytest.approx(0.5, abs=6e-3)


def test_inverse_cdf_equals_the_reference():
    generator = torch.Generator().manual_seed(1)
    weights = torch.rand(50, 6, generator=generator) * (torch.rand(50, 6, generator=generator) > 0.3)
    weights[:, 2] += 0.01  # every row has mass
    u = torch.rand(50, generator=generator)
    got = sample_inverse_cdf(weights, u).tolist()
    assert got == [inverse_cdf_reference(w, x) for w, x in zip(weights.tolist(), u.tolist())]


def test_inverse_cdf_edges():
    probs = torch.tensor([[0.0, 2.0, 0.0, 2.0]]).repeat(4, 1)  # unnormalised
    assert sample_inverse_cdf(probs, torch.tensor([0.0, 0.5, 0.5 - 1e-6, 1.0])).tolist() == [1, 3, 1, 3]
    assert sample_inverse_cdf(torch.tensor([[0.3, 0.7]]), torch.tensor([1.0])).tolist() == [1]  # never past V - 1


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.5])
def test_tempered_probs_are_softmax_of_logits_over_t(temperature):
    logprobs = torch.log_softmax(torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, -3.0]]), -1)
    expected = []
    for row in logprobs.tolist():
        weights = [math.exp(x / temperature) for x in row]
        expected.append([w / sum(weights) for w in weights])
    torch.testing.assert_close(tempered_probs(logprobs, temperature), torch.tensor(expected))
    # [B, k, V] as verify_round passes the draft positions: over the vocabulary of each position
    stacked = tempered_probs(torch.stack([logprobs, logprobs.flip(0)], dim=1), temperature)  # [2, 2, 4]
    torch.testing.assert_close(stacked[:, 0], torch.tensor(expected))
    torch.testing.assert_close(stacked[:, 1], torch.tensor(expected[::-1]))


def test_s1_fields_and_bonus_record():
    logprobs = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    fields = _s1_fields(logprobs, top_k=2)
    assert [f["s1_token_id"] for f in fields] == [1, 0]
    assert [f["s1_top1_prob"] for f in fields] == pytest.approx([0.6, 0.5])
    assert [f["s1_top2_prob"] for f in fields] == pytest.approx([0.3, 0.3])
    entropy = -sum(p * math.log(p) for p in (0.1, 0.6, 0.3))
    assert fields[0]["s1_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert fields[0]["s1_topk_ids"] == [1, 2] and fields[1]["s1_topk_probs"] == pytest.approx([0.5, 0.3])
    assert "s1_topk_ids" not in _s1_fields(logprobs, top_k=0)[0]
    row = _Row(0, None, [], [], records=[{"token_id": 4}, {"token_id": 0}], bonus_record=1)
    _fill_bonus(row, fields[1])
    assert row.records[1]["s1_token_id"] == 0 and row.records[1]["intervened"] is False
    assert row.bonus_record is None and "s1_token_id" not in row.records[0]
    row = _Row(0, None, [], [], records=[{"token_id": 4}], bonus_record=0)
    _fill_bonus(row, fields[0])
    assert row.records[0]["intervened"] is True
