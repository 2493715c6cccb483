"""The method registry is the one home of a method: a toy method registered here (and nowhere
else) runs through `fsgen decode`, the lm-eval model and the pipeline's config checks, and its
tokens and log-likelihoods equal a slow reference written out in this file."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance

import fsgen.harness  # noqa: F401  (registers the `fsgen` lm-eval model: the test must not rely on an earlier one)
from fsgen.decoding import methods
from fsgen.decoding.methods import METHODS, Method, register_method
from fsgen.testing import build_tiny_family

pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)

PROMPTS = ["Tom has 3 apples.", "def add(a, b):", "Question: What is 9 times 8? Answer:"]
WEIGHT = 0.7  # asymmetric: a swapped blend (0.3 l + 0.7 s) would choose other tokens


def _weighted(config, s1, s2_side):
    """The toy rule: WEIGHT·l + (1 − WEIGHT)·s over [..., V] log-probs."""
    return WEIGHT * s2_side[0] + (1 - WEIGHT) * s1


@pytest.fixture()
def toy():
    method = register_method(Method("toy_weighted", roles=("small", "large"), system1="small", system2=("large",),
                                    score=_weighted, normalize=True, routed=True))
    yield method
    del METHODS[method.name]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


def full_logprobs(model, ids: list[int], vocab: int) -> torch.Tensor:
    """[T, V] log-probs after each position (one full forward, no cache)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :, :vocab].float()
    return torch.log_softmax(logits, dim=-1)


def reference_tokens(small, large, tokenizer, prompt: str, max_new: int, vocab: int) -> list[int]:
    ids, out = list(tokenizer(prompt).input_ids), []
    for _ in range(max_new):
        s, l = full_logprobs(small, ids + out, vocab)[-1], full_logprobs(large, ids + out, vocab)[-1]
        out.append(int((WEIGHT * l + (1 - WEIGHT) * s).argmax()))
        if out[-1] == tokenizer.eos_token_id:
            break
    return out


def test_a_registered_method_runs_through_fsgen_decode(toy, family, tmp_path):
    from fsgen.cli import main
    from fsgen.decoding.models import load_tokenizer
    from transformers import AutoModelForCausalLM

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    code = main(["decode", "--method", toy.name, "--small", str(family["small"]), "--large", str(family["large"]),
                 "--prompts", str(prompts), "--max-new-tokens", "6", "--no-progress",
                 "--out-trace", str(tmp_path / "t.parquet"), "--out-generations", str(tmp_path / "g.jsonl")])
    assert code == 0
    generations = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    tok = load_tokenizer(str(family["small"]))
    small, large = (AutoModelForCausalLM.from_pretrained(str(family[r])).eval() for r in ("small", "large"))
    for prompt, g in zip(PROMPTS, generations):
        assert g["token_ids"] == reference_tokens(small, large, tok, prompt, 6, len(tok))


def test_a_registered_method_scores_in_the_lm_eval_model(toy, family):
    from lm_eval.api.registry import get_model

    lm = get_model("fsgen").create_from_arg_string(
        f"method={toy.name},small={family['small']},large={family['large']}", {"batch_size": 2})
    context, continuation = "Tom has 3 apples.", " He buys 4 more."
    (logprob, _), = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0, ("t", 0, 1))])
    tok, vocab = lm.tokenizer, lm.systems.vocab_size
    ctx = list(tok(context).input_ids)
    cont = list(tok(context + continuation).input_ids)[len(ctx):]
    seq = ctx + cont
    s, l = full_logprobs(lm.systems.small, seq, vocab), full_logprobs(lm.systems.large, seq, vocab)
    mixed = torch.log_softmax(WEIGHT * l + (1 - WEIGHT) * s, dim=-1)[len(ctx) - 1: len(seq) - 1]
    reference = mixed.gather(-1, torch.tensor(cont)[:, None]).sum().item()
    assert logprob == pytest.approx(reference, abs=1e-4)


def test_the_pipeline_accepts_a_registered_pair_method(toy):
    from fsgen.pipeline.checks import validate_config
    from fsgen.pipeline.config import ConfigError
    from fsgen.pipeline.jobs import decode_jobs

    config = {"models": {"l": {"path": "x/l", "params": 2}, "s": {"path": "x/s", "params": 1}},
              "pairs": {"all_ordered": ["l", "s"]}, "methods": {"mine": {"method": toy.name, "router": "entropy:1"}},
              "benchmarks": {"b": {"task": "t"}}}
    validate_config(config)
    assert decode_jobs(config) == [{"benchmark": "b", "variant": "mine", "large": "l", "small": "s"}]
    config["methods"]["mine"]["k"] = 3  # a setting only speculative reads
    with pytest.raises(ConfigError, match="methods.mine.k: k only applies to method speculative"):
        validate_config(config)
    del METHODS[toy.name]
    with pytest.raises(ConfigError, match="methods.mine.method: unknown method 'toy_weighted'"):
        validate_config(config)
    METHODS[toy.name] = toy  # for the fixture's teardown


def test_registry_refuses_inconsistent_entries():
    with pytest.raises(ValueError, match="already registered"):
        register_method(METHODS["oracle"])
    with pytest.raises(ValueError, match="roles"):
        register_method(Method("bad", roles=("small",), system1="large"))
    assert methods.get_method("oracle").fast_path and not methods.get_method("contrastive").fast_path
