"""The `fsgen` lm-eval model on a tiny local family: loglikelihood against slow references,
multiple choice with every method, generate_until against the engine, decode-then-score."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from lm_eval.api.instance import Instance

import fsgen.harness  # noqa: F401
from fsgen.decoding import engine
from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.methods import METHODS
from fsgen.harness.lm import FsgenLM, score_token_pairs
from fsgen.harness.replay import read_samples
from fsgen.harness.run import evaluate_benchmark, flat_metrics, run_decode, run_score
from fsgen.testing import build_tiny_family
from fsgen.trace import read_trace

pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)

PAIRS = [("Tom has 3 apples.", " He buys 4 more."), ("", "Question: What is"), ("A box holds 6 eggs. 4 boxes", " hold"),
         ("The quick brown fox ", "jumps")]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


@pytest.fixture(scope="module")
def systems(family):
    return engine.load_systems("proxy", small=str(family["small"]), large=str(family["large"]),
                               small_tuned=str(family["small_tuned"]))


def make_lm(systems, method, alone="large", **kwargs):
    """The lm-eval model on the loaded family; method single runs the `alone` model by itself."""
    if method == "single":
        systems = systems.alone(alone)
    return FsgenLM(method=method, systems=systems, **kwargs)


def encode_pair(tokenizer, context, continuation, prefix_id):
    """lm-eval's context/continuation split, written out: trailing spaces of the context move to
    the continuation, whose tokens are those of the whole string past the context's; an empty
    context is the prefix token."""
    if not context:
        return [prefix_id], list(tokenizer(continuation, add_special_tokens=False).input_ids)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    context_ids = list(tokenizer(context).input_ids)
    return context_ids, list(tokenizer(context + continuation).input_ids)[len(context_ids):]


def ll_requests(pairs):
    return [Instance("loglikelihood", {}, pair, 0, ("t", i, 1)) for i, pair in enumerate(pairs)]


def reference_loglikelihood(systems, config, context_ids, continuation_ids):
    """One unpadded sequence at a time, the method's distribution from the engine."""
    ids = torch.tensor([context_ids + continuation_ids])
    logprobs = engine.method_logprobs(systems, config, ids[:, :-1], torch.ones_like(ids[:, :-1]))[0]  # [T, V]
    n = len(continuation_ids)
    rows = logprobs[-n:]
    targets = torch.tensor(continuation_ids)
    return rows.gather(-1, targets[:, None]).sum().item(), bool((rows.argmax(-1) == targets).all())


@pytest.mark.parametrize("method", METHODS)
def test_loglikelihood_matches_unbatched_reference(systems, method):
    lm = make_lm(systems, method, batch_size=3)  # batches of mixed lengths (right padding)
    got = lm.loglikelihood(ll_requests(PAIRS))
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got):
        ctx, cont = encode_pair(systems.tokenizer, context, continuation, lm.prefix_token_id)
        ref_lp, ref_greedy = reference_loglikelihood(lm.systems, lm.config, ctx, cont)
        if ref_lp == float("-inf"):  # contrastive: an implausible continuation token
            assert logprob == float("-inf")
        else:
            assert logprob == pytest.approx(ref_lp, abs=1e-3)
        assert greedy == ref_greedy


def test_large_loglikelihood_equals_plain_hf_forward(systems, family):
    """Independent of the engine: the large model's own forward, one sequence at a time."""
    lm = make_lm(systems, "single", alone="large", batch_size=4)
    got = lm.loglikelihood(ll_requests(PAIRS))
    for (context, continuation), (logprob, _) in zip(PAIRS, got):
        ctx, cont = encode_pair(systems.tokenizer, context, continuation, lm.prefix_token_id)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logits = systems.large(input_ids=ids).logits[0, :-1, : systems.vocab_size].float()
        ref = torch.log_softmax(logits, -1)[len(ctx) - 1:].gather(-1, torch.tensor(cont)[:, None]).sum().item()
        assert logprob == pytest.approx(ref, abs=1e-3)


def test_greedy_flag_and_truncation(systems):
    lm = make_lm(systems, "single", alone="small")
    context = list(systems.tokenizer("Tom has 3 apples.").input_ids)
    greedy_cont = []
    for _ in range(4):  # the small model's own greedy continuation
        ids = torch.tensor([context + greedy_cont])
        lp = engine.method_logprobs(lm.systems, lm.config, ids, torch.ones_like(ids))
        greedy_cont.append(int(lp[0, -1].argmax()))
    other = greedy_cont[:-1] + [(greedy_cont[-1] + 1) % systems.vocab_size]
    (lp_g, g), (lp_o, o) = score_token_pairs(lm._logprobs, [(context, greedy_cont), (context, other)], 2, 512, "cpu")
    assert g and not o and lp_g > lp_o
    # a max_length shorter than the sequence keeps its end: the same as scoring the cut sequence
    (cut_lp, _), = score_token_pairs(lm._logprobs, [(context, greedy_cont)], 1, 5, "cpu")
    (ref_lp, _), = score_token_pairs(lm._logprobs, [((context + greedy_cont)[-6:-4], greedy_cont)], 1, 512, "cpu")
    assert cut_lp == pytest.approx(ref_lp, abs=1e-4)


def test_loglikelihood_rolling_equals_loglikelihood_from_prefix(systems):
    lm = make_lm(systems, "oracle")
    text = "Small models write most tokens."
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0, ("t", 0, 1))])
    (whole, _), = lm.loglikelihood(ll_requests([("", text)]))
    assert rolling[0] == pytest.approx(whole, abs=1e-3)
    short = make_lm(systems, "oracle", max_length=4)  # several windows, every token scored once
    windowed = short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0, ("t", 0, 1))])
    assert windowed[0] < 0 and windowed[0] != pytest.approx(rolling[0], abs=1e-3)


# ---------------------------------------------------------------- generate_until


def gen_requests(items):
    return [Instance("generate_until", {}, (prompt, kwargs), 0, ("t", i, 1)) for i, (prompt, kwargs) in enumerate(items)]


def test_generate_until_groups_options_and_matches_engine(systems, tmp_path):
    items = [("Tom has 3", {"until": ["."], "max_gen_toks": 6}), ("Ann had 12 pens", {"until": "\n", "max_gen_toks": 4}),
             ("A box holds", {"until": ["."], "max_gen_toks": 6, "do_sample": False})]
    lm = make_lm(systems, "oracle", router="entropy:1.0", batch_size=2,
                 trace=str(tmp_path / "trace.parquet"), generations=str(tmp_path / "gen.jsonl"))
    texts = lm.generate_until(gen_requests(items))
    for i, (prompt, kwargs) in enumerate(items):
        until = [kwargs["until"]] if isinstance(kwargs["until"], str) else kwargs["until"]
        config = replace(lm.config, stop=tuple(until), max_new_tokens=kwargs["max_gen_toks"])
        alone = engine.decode(systems, [prompt], config, request_ids=[i])
        assert texts[i] == alone.generations[0]["text"]
        assert lm.records[i]["token_ids"] == alone.generations[0]["token_ids"]
        mine = lm.trace()[lambda d: d.request_id == i].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone.trace.reset_index(drop=True), check_dtype=False)
    trace, meta = read_trace(tmp_path / "trace.parquet")
    assert sorted(trace.request_id.unique()) == [0, 1, 2] and meta["method"] == "oracle"
    rows = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert [r["request_id"] for r in rows] == [0, 1, 2] and rows[1]["stop"] == ["\n"]


def test_sampling_requests_are_refused(systems):
    lm = make_lm(systems, "oracle")
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until(gen_requests([("Tom", {"until": ["."], "do_sample": True, "temperature": 0.7})]))


# ---------------------------------------------------------------- through lm-eval

GEN_TASK = """task: tiny_arith
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["Question:", "\\n\\n"]
  do_sample: false
filter_list:
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
MC_TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    arith = [{"question": f"Tom has {a} apples. He buys {b} more. How many?", "answer": f"{a} + {b} = {a + b} #### {a + b}"}
             for a, b in [(3, 4), (12, 5), (6, 6), (9, 1), (2, 7)]]
    (root / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arith))
    mc = [{"question": "2 + 2?", "choices": ["4", "5", "22"], "answer": 0},
          {"question": "Tom has 3 apples.", "choices": [" He buys 4", " The fox"], "answer": 1}]
    (root / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (root / "yaml").mkdir()
    (root / "yaml" / "tiny_arith.yaml").write_text(GEN_TASK.format(data=root / "arith.jsonl"))
    (root / "yaml" / "tiny_mc.yaml").write_text(MC_TASK.format(data=root / "mc.jsonl"))
    return root / "yaml"


@pytest.mark.parametrize("method", METHODS)
def test_multiple_choice_with_every_method(systems, tasks_dir, tmp_path, method):
    lm = make_lm(systems, method, batch_size=4)
    results, _ = evaluate_benchmark(lm, "mc", {"task": "tiny_mc"}, tmp_path, predict_only=False,
                                    tasks_dir=tasks_dir, bootstrap_iters=0)
    config = DecodeConfig(method=method)
    accs = []
    for sample in results["samples"]["tiny_mc"]:
        scores = []
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"]):
            ctx, cont = encode_pair(systems.tokenizer, context, continuation, lm.prefix_token_id)
            ref, _ = reference_loglikelihood(lm.systems, config, ctx, cont)
            assert resp[0][0] == pytest.approx(ref, abs=1e-3) or resp[0][0] == ref == float("-inf")
            scores.append(ref)
        accs.append(float(max(range(len(scores)), key=scores.__getitem__) == sample["target"]))
    assert results["results"]["tiny_mc"]["acc,none"] == pytest.approx(sum(accs) / len(accs))


def test_decode_then_score_end_to_end(systems, tasks_dir, tmp_path):
    entry = {"task": "tiny_arith", "limit": 4, "seed": 42, "max_new_tokens": 8, "batch_size": 2}
    lm = make_lm(systems, "oracle", router="entropy:1.0")
    run_decode("arith", entry, None, tmp_path, lm=lm, tasks_dir=tasks_dir)
    samples = read_samples(tmp_path / "samples.jsonl")
    generations = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    trace, meta = read_trace(tmp_path / "trace.parquet")
    assert len(samples) == len(generations) == 4
    doc_ids = json.loads((tmp_path / "decode_results.json").read_text())["fsgen_run"]["doc_ids"]
    assert sorted(g["doc_id"] for g in generations) == sorted(s["doc_id"] for s in samples) == doc_ids
    by_doc = {s["doc_id"]: s for s in samples}
    for g in generations:  # the join: trace request_id -> generation -> lm-eval sample
        assert by_doc[g["doc_id"]]["resps"][g["idx"]][0] == g["text"]
        assert by_doc[g["doc_id"]]["arguments"][g["idx"]][0] == g["prompt"]
        assert (trace.request_id == g["request_id"]).sum() == len(g["token_ids"])
        assert g["max_new_tokens"] == 8
    assert meta["harness"]["benchmark"] == "arith" and meta["method"] == "oracle"
    metrics = run_score("arith", entry, tmp_path / "samples.jsonl", tmp_path, tasks_dir=tasks_dir, bootstrap_iters=0)
    direct, _ = evaluate_benchmark(make_lm(systems, "oracle", router="entropy:1.0"), "arith", entry, tmp_path / "d",
                                   predict_only=False, tasks_dir=tasks_dir, bootstrap_iters=0)
    assert metrics["metrics"] == flat_metrics(direct["results"]["tiny_arith"])
    assert metrics["decode"]["method"] == "oracle"


def test_model_args_string_loads_models(family, tmp_path):
    import lm_eval.api.registry

    cls = lm_eval.api.registry.get_model("fsgen")
    lm = cls.create_from_arg_string(f"large={family['large']},small={family['small']},method=contrastive,beta=0.3,"
                                    f"alpha=0.2", {"batch_size": 2, "device": None})
    assert lm.config.method == "contrastive" and lm.config.beta == 0.3 and lm.config.batch_size == 2
    assert lm_eval.api.registry.get_model("hf").__name__ == "HFLM"  # built-ins still registered
    with pytest.raises(ValueError, match="unknown decode settings"):
        cls.create_from_arg_string(f"large={family['large']},small={family['small']},bogus=1")


ARITH_YAML = fsgen.harness.tasks.TASKS_DIR / "arith" / "arith.yaml"


def test_demo_arith_benchmark_end_to_end(systems, tmp_path):
    """The workflow's demo benchmark: arith task YAML, its data through an override, decode, score."""
    from fsgen.demo.arith import generate_problems, write_jsonl

    data = write_jsonl(generate_problems(6, seed=1), tmp_path / "test.jsonl")
    entry = {"task": "arith", "data": {"path": str(data), "split": "test"}, "limit": 4, "seed": 42,
             "num_fewshot": 0, "max_new_tokens": 8, "batch_size": 2}
    run_decode("arith", entry, None, tmp_path / "run", lm=make_lm(systems, "speculative", k=3))
    trace, meta = read_trace(tmp_path / "run" / "trace.parquet")
    assert meta["method"] == "speculative" and len(trace) > 0 and trace["round"].notna().all()
    metrics = run_score("arith", entry, tmp_path / "run" / "samples.jsonl", tmp_path / "run", bootstrap_iters=0)
    assert metrics["task"] == "arith__local" and metrics["n"] == 4
    assert all(0.0 <= v <= 1.0 for k, v in metrics["metrics"].items() if "stderr" not in k)


def test_resume_dir_reuses_finished_requests(systems, tmp_path, monkeypatch):
    items = [("Tom has 3", {"until": ["."], "max_gen_toks": 5}), ("Ann had 12", {"until": ["."], "max_gen_toks": 5})]
    first = make_lm(systems, "contrastive", resume_dir=str(tmp_path / "cache"))
    texts = first.generate_until(gen_requests(items))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished request was decoded again")

    monkeypatch.setattr(engine, "decode", no_decoding)
    again = make_lm(systems, "contrastive", resume_dir=str(tmp_path / "cache"))
    assert again.generate_until(gen_requests(items)) == texts
    pd.testing.assert_frame_equal(again.trace(), first.trace(), check_dtype=False)
