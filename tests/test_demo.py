"""fsgen.demo: the arith generator, the tokenizer, a tiny training run, the lm-eval task file."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from fsgen.demo import arith
from fsgen.demo.arith import Difficulty, generate_problems
from fsgen.demo.evaluate import GAP_METRICS, gap_share, gap_share_interval, proxy_gap_report
from fsgen.demo.family import DEFAULT_FAMILY, DEFAULT_TUNED, spec_for
from fsgen.demo.train import (
    ModelSpec, TunedSpec, batch_backward, encode_examples, finetune_tuned, format_prompt, format_target, make_batch,
    read_sidecar, train_model, train_tokenizer,
)
from fsgen.decoding.models import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
TASK_YAML = REPO / "fsgen" / "harness" / "lm_eval_tasks" / "arith" / "arith.yaml"


# ---- generator ---------------------------------------------------------------------------------

def test_generator_is_deterministic_and_seeded():
    assert generate_problems(50, seed=3) == generate_problems(50, seed=3)
    assert generate_problems(50, seed=3) != generate_problems(50, seed=4)


def test_format_is_gsm8k_like():
    for p in generate_problems(200, seed=0):
        assert set(p) == {"question", "answer"}
        assert p["question"].endswith("now?")
        assert re.fullmatch(r"(-?\d+ [+\-*] -?\d+ = -?\d+\. )+#### -?\d+", p["answer"]), p["answer"]


def test_answers_are_correct_by_construction():
    problems = generate_problems(500, seed=1)
    assert all(arith.check_problem(p) for p in problems)
    # The question's numbers are the operands, in order: the answer follows from the question.
    for p in problems[:100]:
        numbers = [int(n) for n in re.findall(r"\d+", p["question"])]
        steps = arith.parse_steps(p["answer"])
        assert numbers == [steps[0][0]] + [b for _, _, b, _ in steps]


def test_check_problem_rejects_wrong_answers():
    p = {"question": "q", "answer": "3 + 4 = 7. 7 * 2 = 15. #### 15"}
    assert not arith.check_problem(p)
    assert not arith.check_problem({"question": "q", "answer": "3 + 4 = 7. #### 8"})
    assert not arith.check_problem({"question": "q", "answer": "3 + 4 = 7. 6 + 1 = 7. #### 7"})  # not chained
    assert arith.check_problem({"question": "q", "answer": "3 + 4 = 7. 7 * 2 = 14. #### 14"})


def test_difficulty_knobs():
    d = Difficulty(min_steps=3, max_steps=3, max_start=9, max_operand=5, max_factor=3, max_value=60, ops=("+", "*"))
    for p in generate_problems(300, seed=2, difficulty=d):
        steps = arith.parse_steps(p["answer"])
        assert len(steps) == 3
        assert steps[0][0] <= 9
        for x, op, b, r in steps:
            assert op in "+*" and 1 <= r <= 60
            assert (b <= 5) if op == "+" else (2 <= b <= 3)
    only_add = generate_problems(100, seed=2, ops=("+",), min_steps=1, max_steps=1)
    assert all(arith.parse_steps(p["answer"])[0][1] == "+" for p in only_add)
    # Harder knobs give longer answers and bigger numbers on average.
    easy = generate_problems(300, seed=5, max_steps=1, max_value=50, max_start=20, max_operand=5)
    hard = generate_problems(300, seed=5, min_steps=3, max_steps=3)
    assert sum(len(p["answer"]) for p in hard) > 1.5 * sum(len(p["answer"]) for p in easy)
    with pytest.raises(ValueError, match="ops"):
        Difficulty(ops=("/",))
    with pytest.raises(ValueError, match="min_steps"):
        Difficulty(min_steps=4, max_steps=2)


def test_answer_extraction_matches_lm_eval_filters():
    text = " 3 + 4 = 7. 7 * 2 = 14. #### 14"
    assert arith.extract_strict(text) == 14 and arith.extract_flexible(text) == 14
    assert arith.extract_strict(" 3 + 4 = 7. 14") is None and arith.extract_flexible(" 3 + 4 = 7. 14") == 14
    assert arith.extract_flexible("no number") is None
    tuned = arith.to_tuned_style({"question": "Mia has 3 pens. She buys 4 more. How many pens does Mia have now?",
                                  "answer": "3 + 4 = 7. #### 7"})
    assert tuned["answer"] == "3 + 4 = 7. Mia has 7 pens now. #### 7"
    assert arith.extract_tuned_style(tuned["answer"]) == 7 and arith.final_answer(tuned) == 7
    assert arith.check_problem(tuned)
    assert arith.extract_tuned_style(text) is None


def test_write_splits_disjoint_and_atomic(tmp_path):
    paths = arith.write_splits(tmp_path, n_train=300, n_test=40, n_tuned=50, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl", "train.jsonl", "tuned_train.jsonl"]
    train, test, tuned = (arith.read_jsonl(paths[k]) for k in ("train", "test", "tuned_train"))
    assert len(test) == 40 and 0 < len(train) <= 300 and 0 < len(tuned) <= 50
    assert not {p["question"] for p in test} & {p["question"] for p in train + tuned}
    assert all(arith.extract_tuned_style(p["answer"]) == arith.final_answer(p) for p in tuned)
    assert all(arith.extract_tuned_style(p["answer"]) is None for p in train)
    again = arith.write_splits(tmp_path / "again", n_train=300, n_test=40, n_tuned=50, seed=0)
    assert all(paths[k].read_bytes() == again[k].read_bytes() for k in paths)


def test_tuned_style_share_rewrites_a_seeded_share():
    problems = generate_problems(200, seed=4)
    mixed = arith.with_tuned_style_share(problems, 0.07, seed=5)
    styled = [i for i, (a, b) in enumerate(zip(problems, mixed)) if a != b]
    assert len(styled) == 14  # round(0.07 * 200)
    for i, (original, row) in enumerate(zip(problems, mixed)):
        # a styled row is that problem in the tuned style; every other row is untouched
        expected = arith.to_tuned_style(original) if i in styled else original
        assert row == expected
    assert arith.with_tuned_style_share(problems, 0.07, seed=5) == mixed
    assert arith.with_tuned_style_share(problems, 0.07, seed=6) != mixed
    assert arith.with_tuned_style_share(problems, 0.0, seed=5) == problems
    with pytest.raises(ValueError, match="share"):
        arith.with_tuned_style_share(problems, 1.5, seed=5)


# ---- tokenizer and training ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Data, tokenizer, a tiny trained model and its tuned variant (shared by the tests below)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("demo")
    easy = Difficulty(max_steps=1, max_start=9, max_operand=9, max_value=30)
    paths = arith.write_splits(root / "data", n_train=400, n_test=20, n_tuned=100, seed=0, difficulty=easy)
    train = arith.read_jsonl(paths["train"])
    train_tokenizer(train, root / "tokenizer")
    spec = ModelSpec(hidden_size=32, num_layers=2, num_heads=2, steps=100, batch_size=8, lr=3e-3, warmup=10)
    meta = train_model(spec, paths["train"], root / "tokenizer", root / "models" / "tiny-s", seed=0, progress=False)
    tuned_meta = finetune_tuned(TunedSpec(base="tiny-s", steps=10, batch_size=8), root / "models" / "tiny-s",
                                paths["tuned_train"], root / "models" / "tiny-s-tuned", seed=0, progress=False)
    return {"root": root, "paths": paths, "spec": spec, "meta": meta, "tuned_meta": tuned_meta}


def test_tokenizer_round_trip_and_digits(tiny):
    tok = load_tokenizer(str(tiny["root"] / "tokenizer"))
    for p in arith.read_jsonl(tiny["paths"]["test"]) + [arith.to_tuned_style(arith.generate_problems(1, 9)[0])]:
        text = format_prompt(p["question"]) + format_target(p["answer"])
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        # Every digit is its own token (with at most a leading space): arithmetic is learnable.
        assert all(not re.search(r"\d\d", tok.decode([i])) for i in ids)
    assert tok.encode("Question: x", add_special_tokens=True) == tok.encode("Question: x", add_special_tokens=False)
    assert len(tok) <= 300


def test_prompt_encoding_is_a_prefix_of_training_encoding(tiny):
    """The model sees at decode time exactly the token boundary it was trained on."""
    tok = load_tokenizer(str(tiny["root"] / "tokenizer"))
    for p in arith.read_jsonl(tiny["paths"]["test"]):
        whole = tok.encode(format_prompt(p["question"]) + format_target(p["answer"]), add_special_tokens=False)
        (ids, n_prompt), = encode_examples([p], tok)
        assert ids[:-1] == whole and ids[-1] == tok.eos_token_id
        assert ids[:n_prompt] == tok.encode(format_prompt(p["question"]), add_special_tokens=False)


def test_make_batch_pads_and_weighs_prompt_answer_and_padding():
    examples = [([5, 6, 7, 8], 2), ([9, 10, 11], 1)]
    b = make_batch(examples, pad_id=0, prompt_weight=0.25)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 11, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # nothing predicts a row's first token; prompt tokens 0.25, answer tokens 1, padding 0
    assert b["loss_weights"].tolist() == [[0, 0.25, 1, 1], [0, 1, 1, 0]]
    assert make_batch(examples, pad_id=0)["loss_weights"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]


def _slow_weighted_loss(model, examples, prompt_weight):
    """Reference: each row alone (no padding), each token from the logits of its own prefix."""
    total = weight = 0.0
    with torch.no_grad():
        for ids, n_prompt in examples:
            logits = model(torch.tensor([ids])).logits[0]
            for t in range(1, len(ids)):
                w = prompt_weight if t < n_prompt else 1.0
                total += w * -torch.log_softmax(logits[t - 1].double(), -1)[ids[t]].item()
                weight += w
    return total / weight


@pytest.mark.parametrize("prompt_weight", [0.0, 0.3, 1.0])
def test_batch_loss_is_the_weighted_token_loss(tiny, prompt_weight):
    from transformers import LlamaForCausalLM

    tok = load_tokenizer(str(tiny["root"] / "tokenizer"))
    examples = encode_examples(arith.read_jsonl(tiny["paths"]["train"])[:5], tok)
    torch.manual_seed(1)
    model = LlamaForCausalLM(tiny["spec"].llama_config(tok))
    loss = batch_backward(model, examples, tok.pad_token_id, prompt_weight=prompt_weight)
    assert loss == pytest.approx(_slow_weighted_loss(model, examples, prompt_weight), rel=1e-5)


@pytest.mark.parametrize("prompt_weight", [0.0, 0.3])
def test_micro_batches_give_the_loss_and_gradient_of_one_pass(tiny, prompt_weight):
    """Length-sorted slices (ModelSpec.micro_batches) are a faster way to compute the same step."""
    from transformers import LlamaForCausalLM

    tok = load_tokenizer(str(tiny["root"] / "tokenizer"))
    examples = encode_examples(arith.read_jsonl(tiny["paths"]["train"])[:12], tok)
    assert len({len(ids) for ids, _ in examples}) > 1  # rows of several lengths: slicing matters
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny["spec"].llama_config(tok))
    results = {}
    for slices in (1, 2, 3):
        model.zero_grad(set_to_none=True)
        loss = batch_backward(model, examples, tok.pad_token_id, micro_batches=slices, prompt_weight=prompt_weight)
        results[slices] = (loss, [p.grad.clone() for p in model.parameters()])
    loss_one, grads_one = results[1]
    for slices in (2, 3):
        loss, grads = results[slices]
        assert loss == pytest.approx(loss_one, rel=1e-5)
        assert all(torch.allclose(g, g1, rtol=1e-4, atol=1e-6) for g, g1 in zip(grads, grads_one))


def test_training_loss_falls_and_sidecar(tiny):
    meta = tiny["meta"]
    assert meta["final_loss"] < 0.6 * meta["initial_loss"]
    side = read_sidecar(tiny["root"] / "models" / "tiny-s")
    model = AutoModelForCausalLM.from_pretrained(str(tiny["root"] / "models" / "tiny-s"))
    assert side["name"] == "tiny-s" and side["kind"] == "base"
    assert side["params"] == sum(p.numel() for p in model.parameters())
    tuned = read_sidecar(tiny["root"] / "models" / "tiny-s-tuned")
    assert tuned["kind"] == "tuned" and tuned["base"] == "tiny-s" and tuned["params"] == side["params"]


def test_saved_model_loads_and_gives_the_same_logits(tiny):
    folder = tiny["root"] / "models" / "tiny-s"
    tok = load_tokenizer(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert model.config.model_type == "llama"
    # Retraining from the same seed gives the same weights (deterministic) and the same logits.
    again = train_model(tiny["spec"], tiny["paths"]["train"], tiny["root"] / "tokenizer",
                        tiny["root"] / "models" / "again", seed=0, progress=False)
    assert again["final_loss"] == tiny["meta"]["final_loss"]
    other = AutoModelForCausalLM.from_pretrained(str(tiny["root"] / "models" / "again")).eval()
    ids = torch.tensor([tok.encode(format_prompt("Mia has 3 pens. How many pens does Mia have now?"))])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, other(ids).logits)
    # No leftover temp folders next to the saved models (atomic rename).
    assert sorted(p.name for p in (tiny["root"] / "models").iterdir()) == ["again", "tiny-s", "tiny-s-tuned"]


def test_tuned_variant_differs_from_its_base(tiny):
    base = AutoModelForCausalLM.from_pretrained(str(tiny["root"] / "models" / "tiny-s")).eval()
    tuned = AutoModelForCausalLM.from_pretrained(str(tiny["root"] / "models" / "tiny-s-tuned")).eval()
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)


def test_gap_share_is_the_share_of_the_tuned_gap():
    assert gap_share(0.10, 0.40, 0.50) == pytest.approx(0.75)
    assert gap_share(0.30, 0.20, 0.70) == pytest.approx(-0.25)  # proxy moved away from the tuned model
    assert gap_share(0.20, 0.50, 0.20) is None                  # no gap to close


def test_gap_share_interval_covers_the_share_at_the_binomial_width():
    """Untuned always wrong, tuned always right: the share is the proxy's hit rate, whose 95%
    interval over 200 problems is about ±1.96·sqrt(p(1−p)/200)."""
    proxy = [i % 10 < 7 for i in range(200)]  # 70% hits
    low, high = gap_share_interval([0] * 200, proxy, [1] * 200, n_boot=4000, seed=3)
    half = 1.96 * (0.7 * 0.3 / 200) ** 0.5
    assert low < 0.7 < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert gap_share_interval([1, 0, 1], [1, 1, 0], [1, 0, 1]) is None  # never a gap


def test_proxy_gap_report_against_known_proxies(tiny):
    """Two proxies with known outcomes: a zero shift (tuned small = base small) leaves the large
    model as it is; the large model shifted by its own tuned variant (log p_l + log p_t − log p_l)
    is that tuned variant."""
    models = tiny["root"] / "models"
    base = AutoModelForCausalLM.from_pretrained(str(models / "tiny-s")).eval()
    tuned = AutoModelForCausalLM.from_pretrained(str(models / "tiny-s-tuned")).eval()
    tok = load_tokenizer(str(models / "tiny-s"))
    problems = arith.read_jsonl(tiny["paths"]["test"])[:8]
    report = proxy_gap_report(base, tuned, {"zero": (tuned, tuned), "self": (base, tuned)}, tok, problems, alpha=1.0)
    zero, own = report["pairs"]["zero"], report["pairs"]["self"]
    assert zero["proxy"] == report["large"] and zero["strict_change"] == 0
    assert own["proxy"] == report["large_tuned"] and own["small_tuned"] == report["large_tuned"]
    for metric in GAP_METRICS:
        gap = report["large_tuned"][metric] - report["large"][metric]
        assert zero["share"][metric] == (None if gap == 0 else 0.0)
        assert own["share"][metric] == (None if gap == 0 else pytest.approx(1.0))


def test_finetune_needs_a_trained_base(tmp_path):
    with pytest.raises(FileNotFoundError):
        finetune_tuned(TunedSpec(base="x"), tmp_path / "missing", [{"question": "q", "answer": "a"}], tmp_path / "o")


def test_default_family_spans_16x_in_parameters(tmp_path):
    problems = generate_problems(3000, seed=0)
    tok = train_tokenizer(problems, tmp_path / "tok")
    from transformers import LlamaForCausalLM
    params = {n: sum(p.numel() for p in LlamaForCausalLM(s.llama_config(tok)).parameters())
              for n, s in DEFAULT_FAMILY.items()}
    sizes = list(params.values())
    assert len(sizes) >= 4 and sizes == sorted(sizes)
    assert sizes[-1] >= 16 * sizes[0], params
    assert set(DEFAULT_TUNED) == {"arith-xs-tuned", "arith-s-tuned", "arith-m-tuned", "arith-l-tuned"}
    assert spec_for("arith-s-tuned").base == "arith-s"
    assert spec_for("other-tuned", base="other").base == "other"
    with pytest.raises(KeyError, match="nope"):
        spec_for("nope")


# ---- lm-eval task --------------------------------------------------------------------------------

def test_task_yaml_matches_training_format():
    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    cfg = yaml.load(TASK_YAML.read_text(), Loader=Loader)
    assert cfg["task"] == "arith" and cfg["output_type"] == "generate_until"
    assert cfg["dataset_path"] == "json" and set(cfg["dataset_kwargs"]["data_files"]) == {"train", "test"}
    assert cfg["test_split"] == "test" and cfg["fewshot_split"] == "train"
    # doc_to_text + target_delimiter + answer is what fsgen.demo.train trains on.
    q, a = "Mia has 3 pens. How many pens does Mia have now?", "3 + 0 = 3. #### 3"
    rendered = cfg["doc_to_text"].replace("{{question}}", q) + cfg["target_delimiter"] + a
    assert rendered == format_prompt(q) + format_target(a)
    filters = {f["name"]: f["filter"][0]["regex_pattern"] for f in cfg["filter_list"]}
    assert filters["strict-match"] == arith.STRICT_RE.pattern
    assert filters["flexible-extract"] == arith.FLEXIBLE_RE.pattern
    assert filters["tuned-style"] == arith.TUNED_STYLE_RE.pattern


@pytest.mark.slow
def test_lm_eval_finds_the_task():
    from lm_eval.tasks import TaskManager
    tm = TaskManager(include_path=str(TASK_YAML.parent.parent))
    assert "arith" in tm.all_tasks


# ---- rule scripts ----------------------------------------------------------------------------------

class _Namedlist(list):
    """Enough of snakemake.io.Namedlist for the scripts: a list with named attributes."""

    def __init__(self, items=(), **named):
        super().__init__(list(items) + list(named.values()))
        self.__dict__.update(named)

    def keys(self):
        return [k for k in self.__dict__]


def _run_script(name, **fields):
    from types import SimpleNamespace

    from fsgen.pipeline.rulescript import run_script
    run_script(REPO / "scripts" / name, SimpleNamespace(threads=1, **fields))


def test_rule_scripts_data_tokenizer_and_tuned_train(tiny, tmp_path):
    data = tmp_path / "demo" / "data"
    outputs = [str(data / f"{s}.jsonl") for s in ("train", "test", "tuned_train")]
    _run_script("demo_data.py", input=_Namedlist(), output=_Namedlist(outputs),
                params=SimpleNamespace(demo={"n_train": 200, "n_test": 20, "n_tuned": 30, "seed": 1}),
                log=[str(tmp_path / "data.log")])
    assert len(arith.read_jsonl(outputs[1])) == 20
    tok_json = tmp_path / "demo" / "tokenizer" / "tokenizer.json"
    _run_script("demo_tokenizer.py", input=_Namedlist(train=outputs[0]), output=_Namedlist([str(tok_json)]),
                params=SimpleNamespace(demo={"seed": 1}), log=[str(tmp_path / "tok.log")])
    assert load_tokenizer(str(tok_json.parent)).decode(load_tokenizer(str(tok_json.parent)).encode("Mia has 3")) == "Mia has 3"
    # A tuned variant of the tiny model (its spec comes from TunedSpec defaults, base from input.base).
    sidecar = tmp_path / "models" / "tiny-s-tuned" / "fsgen_model.json"
    _run_script("demo_train.py",
                input=_Namedlist(train=outputs[0], tuned_train=outputs[2], tokenizer=str(tok_json),
                                 base=[str(tiny["root"] / "models" / "tiny-s" / "fsgen_model.json")]),
                output=_Namedlist([str(sidecar)]),
                params=SimpleNamespace(spec={"name": "tiny-s-tuned", "base": "tiny-s", "seed": 0}),
                log=[str(tmp_path / "train.log")])
    meta = json.loads(sidecar.read_text())
    assert meta["kind"] == "tuned" and meta["base"] == "tiny-s"
    assert "loss" in (tmp_path / "train.log").read_text()
