"""The log-likelihood VALUES of contrastive and proxy (what lm-eval's multiple-choice scoring
compares) against plain full forwards of each model written out here, not `engine.method_logprobs`
(the function `FsgenLM` calls), at parameters where a swapped or misweighted rule shows: β = 0.3,
proxy α = 0.7, and the standard formula with β = 1.7."""

from __future__ import annotations

import math

import pytest
import torch
from lm_eval.api.instance import Instance

from fsgen.decoding import engine
from fsgen.harness.lm import FsgenLM
from fsgen.testing import build_tiny_family

pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)

# (context, continuation): choices of one question share the context, as in multiple choice
PAIRS = [("Tom has 3 apples. He buys", " 4 more."), ("Tom has 3 apples. He buys", " the fox."),
         ("The quick brown fox", " jumps over"), ("def add(a, b):", " return a + b")]
SETTINGS = [
    ("contrastive", {"alpha": 1e-6, "beta": 0.3, "formula": "blend"}),
    ("contrastive", {"alpha": 1e-6, "beta": 1.7, "formula": "standard"}),
    ("proxy", {"alpha": 0.7}),
]


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    family = build_tiny_family(tmp_path_factory.mktemp("family"))
    return engine.load_systems("proxy", small=str(family["small"]), large=str(family["large"]),
                               small_tuned=str(family["small_tuned"]))


def plain_logprobs(model, ids: list[int], vocab: int) -> torch.Tensor:
    """[T, V] float64 log-softmax of one unpadded full forward, cut to the shared vocabulary."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :, :vocab].double()
    return torch.log_softmax(logits, dim=-1)


def reference_rows(systems, method: str, settings: dict, ids: list[int]) -> torch.Tensor:
    """[T, V] the method's next-token log-probs, from the definitions (docs/engine.md)."""
    vocab = systems.vocab_size
    large = plain_logprobs(systems.large, ids, vocab)
    if method == "proxy":  # l + α(s_tuned − s_base), renormalised
        tuned, base = plain_logprobs(systems.small_tuned, ids, vocab), plain_logprobs(systems.small, ids, vocab)
        scores = large + settings["alpha"] * (tuned - base)
    else:  # contrastive over the large model's plausible tokens, renormalised
        small, beta = plain_logprobs(systems.small, ids, vocab), settings["beta"]
        scores = (1 - beta) * small + beta * large if settings["formula"] == "blend" else \
            (1 + beta) * large - beta * small
        implausible = large < math.log(settings["alpha"]) + large.max(dim=-1, keepdim=True).values
        scores = scores.masked_fill(implausible, float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def encode(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split for a non-empty context without trailing spaces: the continuation's tokens
    are those of the whole string past the context's."""
    context_ids = list(tokenizer(context).input_ids)
    return context_ids, list(tokenizer(context + continuation).input_ids)[len(context_ids):]


@pytest.mark.parametrize("method, settings", SETTINGS, ids=["blend-0.3", "standard-1.7", "proxy-0.7"])
def test_loglikelihood_values_equal_plain_forwards(systems, method, settings):
    lm = FsgenLM(method=method, systems=systems, batch_size=3, **settings)
    requests = [Instance("loglikelihood", {}, pair, 0, ("t", i, 1)) for i, pair in enumerate(PAIRS)]
    got = lm.loglikelihood(requests)
    finite = 0
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got):
        ctx, cont = encode(systems.tokenizer, context, continuation)
        rows = reference_rows(systems, method, settings, ctx + cont)[len(ctx) - 1: -1]  # [len(cont), V]
        picked = rows.gather(-1, torch.tensor(cont)[:, None]).squeeze(-1)
        reference = float(picked.sum())
        if math.isinf(reference):
            assert logprob == reference
        else:
            finite += 1
            assert logprob == pytest.approx(reference, abs=1e-3), (context, continuation)
        assert greedy == bool((rows.argmax(-1) == torch.tensor(cont)).all())
    assert finite >= 3  # the values were compared, not only -inf


def test_choices_are_ranked_as_the_plain_reference_ranks_them(systems):
    """Multiple choice compares these values: contrastive β = 0.3 equals the reference, which
    differs from the swapped blend's (β = 0.7) and from the one without the plausibility cut (the
    cut removes tokens from the normalisation at α = 1e-6 here)."""
    settings = {"alpha": 1e-6, "beta": 0.3, "formula": "blend"}
    lm = FsgenLM(method="contrastive", systems=systems, batch_size=2, **settings)
    values = [v for v, _ in lm.loglikelihood([Instance("loglikelihood", {}, p, 0, ("t", i, 1))
                                              for i, p in enumerate(PAIRS)])]

    def reference(beta, alpha=settings["alpha"]):
        out = []
        for context, continuation in PAIRS:
            ctx, cont = encode(systems.tokenizer, context, continuation)
            changed = {**settings, "beta": beta, "alpha": alpha}
            rows = reference_rows(systems, "contrastive", changed, ctx + cont)[len(ctx) - 1: -1]
            out.append(float(rows.gather(-1, torch.tensor(cont)[:, None]).sum()))
        return out

    assert values == pytest.approx(reference(0.3), abs=1e-3)
    assert reference(0.3) != pytest.approx(reference(0.7), abs=1e-2)
    assert reference(0.3) != pytest.approx(reference(0.3, alpha=1e-30), abs=1e-3)
