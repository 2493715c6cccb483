"""Speculative decoding against slow obvious references (float32 CPU, tiny local models).

References: the large model's greedy output from full forwards without a cache; HF
`generate(assistant_model=small)`; the accepted counts the teacher-forced small model predicts;
the exact sampling distribution of the large model (chi-square, with a power check).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import Systems, decode, load_systems
from fsgen.decoding.kvcache import CachedModel, right_align
from fsgen.decoding.speculative import sample_inverse_cdf, speculative_batch
from fsgen.decoding.stopping import StopCriteria, eos_token_ids
from fsgen.testing import build_tiny_family, build_tokenizer
from fsgen.trace import to_table

pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location("bench_pairs", Path(__file__).parents[1] / "bench" / "pairs.py")
bench_pairs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_pairs)

PROMPTS = [
    "Tom has 3 apples.",
    "def add(a, b):",
    "Question: What is 9 times 8? Answer:",
    "The quick brown fox jumps over the lazy dog. A box holds 6 eggs.",
    "Ann",
    "Small models write most tokens; large models step in",
    "12 - 5 =",
    "A box holds 6 eggs. 4 boxes hold",
]


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Systems:
    """Independent tiny models; the large one has a padded vocabulary."""
    paths = build_tiny_family(tmp_path_factory.mktemp("family"))
    return load_systems(small=str(paths["small"]), large=str(paths["large"]), method="speculative")


@pytest.fixture(scope="module")
def related(tmp_path_factory) -> Systems:
    """System 1 = the first 2 of System 2's 4 layers: they agree on about half the tokens."""
    root = tmp_path_factory.mktemp("related")
    tokenizer = build_tokenizer(root / "tokenizer")
    paths = bench_pairs.build_related_pair(root, tokenizer, hidden_size=64, num_layers=4, draft_layers=2, tail_scale=0.3)
    return load_systems(small=str(paths["small"]), large=str(paths["large"]), method="speculative")


def encode(systems: Systems, prompts=PROMPTS) -> list[list[int]]:
    return [systems.tokenizer(p).input_ids for p in prompts]


def stop_for(systems: Systems, config: DecodeConfig, eos=None) -> StopCriteria:
    eos = eos_token_ids(systems.tokenizer, systems.small, systems.large) if eos is None else eos
    return StopCriteria(systems.tokenizer, eos, config.stop, config.max_new_tokens)


def run(systems, prompt_ids, config, stop=None, request_ids=None):
    request_ids = list(range(len(prompt_ids))) if request_ids is None else request_ids
    return speculative_batch(systems, prompt_ids, request_ids, config, stop or stop_for(systems, config))


@torch.no_grad()
def slow_greedy(model, prompt: list[int], stop: StopCriteria, vocab_size: int) -> list[int]:
    """The obvious reference: a full forward per token, argmax over the shared vocabulary."""
    generated: list[int] = []
    while True:
        logits = model(torch.tensor([prompt + generated])).logits[0, -1, :vocab_size]
        generated.append(int(logits.argmax()))
        keep = stop.finished_length(generated, checked=len(generated) - 1)
        if keep is not None:
            return generated[:keep]


@torch.no_grad()
def full_logprobs(model, sequence: list[int], vocab_size: int) -> torch.Tensor:
    """[T, V] log-probs of one unpadded sequence, one full forward without a cache."""
    logits = model(torch.tensor([sequence])).logits[0, :, :vocab_size].float()
    return torch.log_softmax(logits, dim=-1)


def teacher_forced(model, prompt: list[int], generated: list[int], vocab_size: int) -> torch.Tensor:
    """[N, V] log-probs the model gives each generated token's position (full forward)."""
    return full_logprobs(model, prompt + generated, vocab_size)[len(prompt) - 1 : -1]


# ---------------------------------------------------------------------------------------------
# runner: rollback across one-token blocks (used to roll back System 1's drafts)


def test_discard_last_spans_one_token_blocks(family):
    model, vocab = family.small, family.vocab_size
    prompts = encode(family, PROMPTS[:3])
    cached = CachedModel(model, vocab, len(prompts))
    cached.forward(*right_align(prompts, 0))
    drafts = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    for j in range(3):
        cached.forward(drafts[:, j : j + 1], torch.ones(3, 1, dtype=torch.bool))
    cached.discard_last(torch.tensor([3, 1, 0]))  # row 0 loses all three, row 2 none
    kept = [[], [8, 9], [11, 12, 13]]
    nxt = torch.tensor([[20], [21], [22]])
    got = cached.forward(nxt, torch.ones(3, 1, dtype=torch.bool))[:, -1]
    for row in range(3):
        want = full_logprobs(model, prompts[row] + kept[row] + [int(nxt[row])], vocab)[-1]
        torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="trailing real slots"):
        cached.discard_last(torch.tensor([2, 0, 0]))  # only one real slot since the last block


def test_inverse_cdf_never_picks_zero_mass():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).repeat(5, 1)
    u = torch.tensor([0.0, 0.25, 0.4999, 0.5, 0.9999])
    assert sample_inverse_cdf(probs, u).tolist() == [1, 1, 1, 3, 3]


# ---------------------------------------------------------------------------------------------
# greedy: lossless


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("pair", ["family", "related"])
def test_greedy_equals_large_greedy(pair, k, request):
    systems = request.getfixturevalue(pair)
    config = DecodeConfig(method="speculative", k=k, max_new_tokens=20)
    prompts = encode(systems)
    stop = stop_for(systems, config)
    for (tokens, trace), prompt in zip(run(systems, prompts, config, stop), prompts):
        assert tokens == slow_greedy(systems.large, prompt, stop, systems.vocab_size)
        assert trace["token_id"].tolist() == tokens
        assert trace["position"].tolist() == list(range(len(tokens)))


@pytest.mark.parametrize("prompts", [["A", "Tom has 3 apples."], ["A", "T"]], ids=["mixed", "all-one-token"])
def test_one_token_prompts(related, prompts):
    # one-token prompts leave nothing to prefill (their row of the prefill block is all filler)
    config = DecodeConfig(method="speculative", k=3, max_new_tokens=10)
    ids = encode(related, prompts)
    assert min(len(p) for p in ids) == 1
    stop = stop_for(related, config)
    for (tokens, _), prompt in zip(run(related, ids, config, stop), ids):
        assert tokens == slow_greedy(related.large, prompt, stop, related.vocab_size)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_equals_hf_assisted_generation(related, k):
    # HF refuses pairs of different vocabulary sizes (the padded `family`), hence `related`
    config = DecodeConfig(method="speculative", k=k, max_new_tokens=20)
    prompts = encode(related)
    ours = run(related, prompts, config)
    for (tokens, _), prompt in zip(ours, prompts):
        ids = torch.tensor([prompt])
        hf = related.large.generate(
            ids, attention_mask=torch.ones_like(ids), assistant_model=related.small, do_sample=False,
            max_new_tokens=20, pad_token_id=related.tokenizer.pad_token_id,
        )
        assert tokens == hf[0, len(prompt):].tolist()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_rounds_follow_the_oracle_and_trace_matches_full_forwards(related, k):
    config = DecodeConfig(method="speculative", k=k, max_new_tokens=24)
    prompts = encode(related)
    round_sizes = []
    for (tokens, trace), prompt in zip(run(related, prompts, config), prompts):
        s1 = teacher_forced(related.small, prompt, tokens, related.vocab_size)  # [N, V]
        s2 = teacher_forced(related.large, prompt, tokens, related.vocab_size)
        s1_argmax = s1.argmax(-1).tolist()
        assert trace["s1_token_id"].tolist() == s1_argmax  # bonus tokens included
        assert trace["intervened"].tolist() == [t != s for t, s in zip(tokens, s1_argmax)]
        assert trace["s2_called"].all()
        np.testing.assert_allclose(trace["s1_top1_prob"], s1.exp().max(-1).values, atol=1e-5)
        np.testing.assert_allclose(trace["s2_top1_prob"], s2.exp().max(-1).values, atol=1e-5)
        entropy = -(s2.exp() * s2).sum(-1)
        np.testing.assert_allclose(trace["s2_entropy"], entropy, atol=1e-4)
        # oracle prediction: from each round's start, the run of agreeing positions, capped at k
        start, round_index, predicted = 0, 0, []
        while start < len(tokens):
            accepted = 0
            while accepted < k and start + accepted < len(tokens) and s1_argmax[start + accepted] == tokens[start + accepted]:
                accepted += 1
            predicted += [(round_index, j < accepted) for j in range(min(accepted + 1, len(tokens) - start))]
            round_sizes.append(accepted)
            start, round_index = start + accepted + 1, round_index + 1
        assert list(zip(trace["round"], trace["drafted"])) == predicted
    # the comparison is not vacuous: rounds accept none, some and (k > 1) all of the drafts
    assert 0 in round_sizes and (k == 1 or any(0 < n for n in round_sizes))
    assert k in round_sizes


# ---------------------------------------------------------------------------------------------
# batching: a row does not depend on its neighbours


def assert_same_rows(batched, alone):
    (tokens_b, trace_b), (tokens_a, trace_a) = batched, alone
    assert tokens_b == tokens_a
    assert list(trace_b.columns) == list(trace_a.columns)
    for column in trace_b.columns:
        left, right = trace_b[column].tolist(), trace_a[column].tolist()
        if column.startswith("s1_topk"):
            left, right = [list(v) for v in left], [list(v) for v in right]
        if trace_b[column].dtype.kind == "f" or column == "s1_topk_probs":
            np.testing.assert_allclose(np.array(left, dtype=float), np.array(right, dtype=float), atol=1e-5)
        else:
            assert left == right, column


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_of_8_equals_each_prompt_alone(related, temperature):
    config = DecodeConfig(method="speculative", k=4, max_new_tokens=24, temperature=temperature, seed=7, top_k=3)
    prompts = encode(related)
    request_ids = [10 * i + 3 for i in range(len(prompts))]
    first = run(related, prompts, config, request_ids=request_ids)
    # make rows stop at different times: an "EOS" and a stop string taken from the outputs
    eos_token = first[2][0][5]
    stop_text = related.tokenizer.decode(first[5][0][8:10])
    config.stop = (stop_text,)
    stop = stop_for(related, config, eos={eos_token})
    batched = run(related, prompts, config, stop, request_ids)
    lengths = [len(tokens) for tokens, _ in batched]
    assert min(lengths) < config.max_new_tokens and len(set(lengths)) > 2, lengths
    for row, prompt in enumerate(prompts):
        alone = run(related, [prompt], config, stop, [request_ids[row]])[0]
        assert_same_rows(batched[row], alone)
        assert batched[row][1]["s1_topk_ids"].map(len).eq(3).all()


# ---------------------------------------------------------------------------------------------
# sampling: reproducible and lossless


def test_sampling_is_reproducible_and_seeded(related):
    config = DecodeConfig(method="speculative", k=3, max_new_tokens=16, temperature=1.0, seed=1)
    prompts = encode(related, PROMPTS[:4])
    a, b = run(related, prompts, config), run(related, prompts, config)
    assert [t for t, _ in a] == [t for t, _ in b]
    config.seed = 2
    c = run(related, prompts, config)
    assert [t for t, _ in a] != [t for t, _ in c]


@torch.no_grad()
def test_sampled_tokens_follow_the_large_model(related):
    """First and second token over 4000 seeds vs the exact distributions of System 2 at T=1.2.

    Power: the same samples must be rejected as draws from System 1's distribution, and System 1
    must be far from System 2 in total variation, so the test cannot pass by accident.
    """
    temperature, n = 1.2, 4000
    prompt = encode(related, ["Tom has 3 apples."])[0]
    config = DecodeConfig(method="speculative", k=3, max_new_tokens=2, temperature=temperature, seed=100)
    no_eos = stop_for(related, config, eos=set())  # EOS is an ordinary token here: 2 tokens per row
    results = run(related, [prompt] * n, config, no_eos, request_ids=list(range(n)))
    samples = np.array([tokens[:2] for tokens, _ in results])  # [n, 2]
    vocab = related.vocab_size

    def exact(model):  # first-token p and second-token marginal Σ_t1 p(t1) p(t2 | t1)
        first = torch.softmax(model(torch.tensor([prompt])).logits[0, -1, :vocab] / temperature, -1)
        follow = torch.tensor([prompt + [t] for t in range(vocab)])
        second = torch.softmax(model(follow).logits[:, -1, :vocab] / temperature, -1)  # [V, V]
        return first.numpy().astype(float), (first @ second).numpy().astype(float)

    def chi2_pvalue(observed_tokens, probs):
        counts = np.bincount(observed_tokens, minlength=vocab).astype(float)
        expected = probs * n
        big = expected >= 5  # lump the rare tokens into one bin
        obs = np.append(counts[big], counts[~big].sum())
        exp = np.append(expected[big], expected[~big].sum())
        return scipy_stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue

    for position, (p, q) in enumerate(zip(exact(related.large), exact(related.small))):
        observed = samples[:, position]
        assert chi2_pvalue(observed, p) > 1e-3
        assert chi2_pvalue(observed, q) < 1e-6  # would fail if we sampled System 1
        assert 0.5 * np.abs(p - q).sum() > 0.1  # System 1 is far enough from System 2 to matter
    # both branches of rejection sampling ran often: accepted drafts and resampled tokens
    drafted_first = np.mean([bool(trace["drafted"].iloc[0]) for _, trace in results])
    assert 0.1 < drafted_first < 0.9, drafted_first


# ---------------------------------------------------------------------------------------------
# through the engine


def test_decode_dispatches_speculative(related):
    config = DecodeConfig(method="speculative", k=3, max_new_tokens=12, batch_size=3)
    result = decode(related, PROMPTS, config)
    direct = run(related, encode(related), config)
    assert [g["token_ids"] for g in result.generations] == [t for t, _ in direct]
    to_table(result.trace)  # the schema holds
    assert result.trace["round"].notna().all()
