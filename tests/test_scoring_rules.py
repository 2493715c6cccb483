"""The scoring rules and the method registry against formulas written out element by element here,
at parameter values where a swapped or misweighted formula gives other numbers (β = 0.3, not 0.5;
proxy α = 0.7, not 1; a plausibility α with a token exactly on the cut).

Fast (no models): this file is also the mutation-testing selection of `fsgen/decoding/methods.py`
(docs/testing.md)."""

from __future__ import annotations

import math

import pytest
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.methods import (
    METHODS,
    Method,
    contrastive_scores,
    get_method,
    method_specific_params,
    pair_methods,
    plausible_mask,
    proxy_scores,
    register_method,
)

NEG_INF = float("-inf")
# [B=2, V=4]; large row 0 has its max at 0 and a token exactly on the cut of α = CUT (log CUT = -1.5,
# exact in float32 and float64)
CUT = math.exp(-1.5)
LARGE = torch.tensor([[0.0, -1.5, -2.25, -3.0],
                      [-2.0, -0.2, -0.9, -4.0]])
SMALL = torch.tensor([[-0.4, -0.7, -2.0, -1.1],
                      [-1.0, -1.0, -0.3, -0.6]])
SMALL_TUNED = torch.tensor([[-1.2, -0.1, -0.8, -2.2],
                            [-0.5, -1.9, -1.4, -0.2]])


def plausible_reference(l: list[float], alpha: float) -> list[bool]:
    """Li et al.'s plausibility: p_l(v) ≥ α·max p_l, i.e. log p_l(v) ≥ log α + max log p_l."""
    top = max(l)
    return [value >= math.log(alpha) + top for value in l]


def contrastive_reference(l: torch.Tensor, s: torch.Tensor, alpha: float, beta: float, formula: str) -> torch.Tensor:
    rows = []
    for l_row, s_row in zip(l.tolist(), s.tolist()):
        keep = plausible_reference(l_row, alpha)
        row = []
        for lv, sv, ok in zip(l_row, s_row, keep):
            score = (1 - beta) * sv + beta * lv if formula == "blend" else (1 + beta) * lv - beta * sv
            row.append(score if ok else NEG_INF)
        rows.append(row)
    return torch.tensor(rows)


def proxy_reference(l, tuned, base, alpha) -> torch.Tensor:
    return torch.tensor([[lv + alpha * (tv - bv) for lv, tv, bv in zip(*rows)]
                         for rows in zip(l.tolist(), tuned.tolist(), base.tolist())])


def log_softmax_reference(scores: torch.Tensor) -> torch.Tensor:
    """log(exp(x) / Σ exp(x)) row by row in float64, -inf kept."""
    out = []
    for row in scores.double().tolist():
        finite = [x for x in row if x != NEG_INF]
        top = max(finite)
        log_total = top + math.log(sum(math.exp(x - top) for x in finite))
        out.append([x - log_total if x != NEG_INF else NEG_INF for x in row])
    return torch.tensor(out)


def test_plausible_mask_keeps_the_token_on_the_cut():
    got = plausible_mask(LARGE, CUT)
    assert got.tolist() == [plausible_reference(row, CUT) for row in LARGE.tolist()]
    assert got[0].tolist() == [True, True, False, False]  # exactly log α below the max is kept (≥, not >)
    assert plausible_mask(LARGE, 0.1)[0].tolist() == [True, True, True, False]
    # the cut is relative to the row's own max (shifted by -1 exactly: the same tokens)
    assert plausible_mask(LARGE - 1.0, CUT)[0].tolist() == [True, True, False, False]


def test_rules_apply_over_the_last_dimension_of_any_shape():
    """[B, T, V] as method_logprobs passes them (teacher-forced positions): each position alone."""
    l3, s3 = torch.stack([LARGE, LARGE.flip(0)], dim=1), torch.stack([SMALL, SMALL.flip(0)], dim=1)  # [2, 2, 4]
    assert plausible_mask(l3, CUT).tolist() == [[plausible_reference(r, CUT) for r in b] for b in l3.tolist()]
    got = contrastive_scores(l3, s3, alpha=CUT, beta=0.3)
    for t in range(2):
        torch.testing.assert_close(got[:, t], contrastive_reference(l3[:, t], s3[:, t], CUT, 0.3, "blend"))
    config = DecodeConfig(method="contrastive", alpha=CUT, beta=0.3)
    dist = METHODS["contrastive"].distribution(config, {"small": s3, "large": l3})
    for t in range(2):
        want = log_softmax_reference(contrastive_reference(l3[:, t], s3[:, t], CUT, 0.3, "blend"))
        torch.testing.assert_close(dist[:, t].double(), want.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("formula", ["blend", "standard"])
@pytest.mark.parametrize("alpha, beta", [(CUT, 0.3), (0.1, 0.8), (0.05, 1.7)])
def test_contrastive_scores_equal_the_written_out_formula(formula, alpha, beta):
    got = contrastive_scores(LARGE, SMALL, alpha=alpha, beta=beta, formula=formula)
    torch.testing.assert_close(got, contrastive_reference(LARGE, SMALL, alpha, beta, formula))


def test_contrastive_defaults_are_the_fs_gen_ones():
    """α = 0.1, β = 0.5, blend when the caller gives none."""
    torch.testing.assert_close(contrastive_scores(LARGE, SMALL), contrastive_reference(LARGE, SMALL, 0.1, 0.5, "blend"))


def test_blend_at_asymmetric_beta_is_not_the_swapped_blend():
    """At β = 0.3 the blend s + β(l − s) and the swapped l + β(s − l) choose other tokens."""
    got = contrastive_scores(LARGE, SMALL, alpha=0.05, beta=0.3)
    swapped = contrastive_reference(LARGE, SMALL, 0.05, 0.7, "blend")  # l + 0.3(s − l) = 0.7 l + 0.3 s
    assert got.argmax(-1).tolist() != swapped.argmax(-1).tolist()


def test_unknown_formula_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown contrastive formula 'Blend'"):
        contrastive_scores(LARGE, SMALL, formula="Blend")


@pytest.mark.parametrize("alpha", [0.7, 1.0, 2.5])
def test_proxy_scores_equal_the_written_out_formula(alpha):
    got = proxy_scores(LARGE, SMALL_TUNED, SMALL, alpha=alpha)
    torch.testing.assert_close(got, proxy_reference(LARGE, SMALL_TUNED, SMALL, alpha))


def test_proxy_default_alpha_is_one():
    torch.testing.assert_close(proxy_scores(LARGE, SMALL_TUNED, SMALL), proxy_reference(LARGE, SMALL_TUNED, SMALL, 1.0))


# ---------------------------------------------------------------- each method's distribution

ROLES = {"small": SMALL, "large": LARGE, "small_tuned": SMALL_TUNED, "model": SMALL_TUNED}


def expected_distribution(method: str, config: DecodeConfig) -> torch.Tensor:
    """What each method's next-token log-probs are, by its definition."""
    if method == "single":
        return ROLES["model"]
    if method in ("oracle", "speculative"):  # System 2 decides: the large model's own log-probs
        return LARGE
    if method == "contrastive":
        return log_softmax_reference(contrastive_reference(LARGE, SMALL, config.alpha, config.beta, config.formula))
    if method == "proxy":  # System 1 is the tuned small model; System 2's side is large + base small
        return log_softmax_reference(proxy_reference(LARGE, SMALL_TUNED, SMALL, config.alpha))
    raise AssertionError(method)


CONFIGS = {
    "single": {},
    "oracle": {},
    "speculative": {"k": 3},
    "contrastive": {"alpha": CUT, "beta": 0.3, "formula": "blend"},
    "proxy": {"alpha": 0.7},
}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_distribution_of_every_method(method):
    config = DecodeConfig(method=method, **CONFIGS[method])
    got = METHODS[method].distribution(config, dict(ROLES))
    want = expected_distribution(method, config)
    torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-5)


def test_standard_contrastive_distribution_and_method_defaults():
    config = DecodeConfig(method="contrastive", beta=1.7, formula="standard")
    assert config.alpha == 0.1  # the registry's default for contrastive
    got = METHODS["contrastive"].distribution(config, dict(ROLES))
    want = log_softmax_reference(contrastive_reference(LARGE, SMALL, 0.1, 1.7, "standard"))
    torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-5)
    assert DecodeConfig(method="proxy").alpha == 1.0


def test_normalised_distributions_are_distributions():
    for method in ("contrastive", "proxy"):
        config = DecodeConfig(method=method, **CONFIGS[method])
        probs = METHODS[method].distribution(config, dict(ROLES)).exp().sum(-1)
        torch.testing.assert_close(probs, torch.ones(2))


# ---------------------------------------------------------------- the registry


def test_registry_entries():
    roles = {name: m.roles for name, m in METHODS.items()}
    assert roles == {"single": ("model",), "oracle": ("small", "large"), "contrastive": ("small", "large"),
                     "proxy": ("small", "large", "small_tuned"), "speculative": ("small", "large")}
    assert {name: m.system1 for name, m in METHODS.items()} == {
        "single": "model", "oracle": "small", "contrastive": "small", "proxy": "small_tuned", "speculative": "small"}
    assert METHODS["proxy"].system2 == ("large", "small")
    assert [n for n, m in METHODS.items() if m.consults_system2] == ["oracle", "contrastive", "proxy", "speculative"]
    assert [n for n, m in METHODS.items() if m.needs_tuned_small] == ["proxy"]
    assert [n for n, m in METHODS.items() if m.normalize] == ["contrastive", "proxy"]
    assert [n for n, m in METHODS.items() if m.routed] == ["oracle", "contrastive", "proxy"]
    assert [n for n, m in METHODS.items() if m.fast_path] == ["oracle"]
    assert [n for n, m in METHODS.items() if m.loop == "speculative"] == ["speculative"]
    assert pair_methods() == ("oracle", "contrastive", "proxy", "speculative")
    assert method_specific_params() == {"alpha": ("contrastive", "proxy"), "beta": ("contrastive",),
                                        "formula": ("contrastive",), "k": ("speculative",),
                                        "temperature": ("speculative",)}


def test_get_method_names_the_known_ones():
    assert get_method("proxy") is METHODS["proxy"]
    with pytest.raises(ValueError, match="unknown method 'medusa'; expected one of single, oracle, contrastive"):
        get_method("medusa")


@pytest.mark.parametrize("method, message", [
    (Method("oracle", roles=("small", "large"), system1="small"), "'oracle' is already registered"),
    (Method("bad1", roles=("small",), system1="large"), "roles must be among its roles"),
    (Method("bad2", roles=("small", "large"), system1="small", system2=("large", "small_tuned")), "roles must be"),
    (Method("bad3", roles=("small", "large"), system1="small", loop="beam"), "unknown loop 'beam'"),
])
def test_register_refuses_inconsistent_entries(method, message):
    before = dict(METHODS)
    with pytest.raises(ValueError, match=message):
        register_method(method)
    assert METHODS == before


@pytest.mark.parametrize("loop", ["steploop", "speculative"])
def test_register_adds_a_consistent_entry(loop):
    toy = Method("toy_rule", roles=("small", "large"), system1="small", system2=("large",), loop=loop, params=("k",))
    try:
        assert register_method(toy) is toy and METHODS["toy_rule"] is toy
        assert method_specific_params()["k"] == ("speculative", "toy_rule")
        assert "toy_rule" in pair_methods()
    finally:
        del METHODS["toy_rule"]
