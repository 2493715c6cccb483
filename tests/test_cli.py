"""`fsgen decode` / `fsgen train-router`: outputs, and a one-line error for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fsgen.cli import main
from fsgen.testing import build_tiny_family
from fsgen.trace import read_trace

torch.set_num_threads(1)

PROMPTS = ["Tom has 3 apples.", "def add(a, b):", "Q"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def decode_args(family, prompts, out, *extra, method="oracle"):
    return ["decode", "--large", str(family["large"]), "--small", str(family["small"]), "--method", method,
            "--prompts", str(prompts), "--max-new-tokens", "6", "--no-progress",
            "--out-trace", str(out / "trace.parquet"), "--out-generations", str(out / "gen.jsonl"), *extra]


def test_decode_writes_outputs(family, prompts_file, tmp_path):
    out = tmp_path / "out"
    assert main(decode_args(family, prompts_file, out, "--router", "threshold:0.1", "--top-k", "3")) == 0
    generations = [json.loads(line) for line in (out / "gen.jsonl").read_text().splitlines()]
    assert [g["request_id"] for g in generations] == [0, 1, 2]
    assert [g["prompt"] for g in generations] == PROMPTS
    assert all(set(g) == {"request_id", "prompt", "text", "token_ids"} for g in generations)
    trace, meta = read_trace(out / "trace.parquet")
    assert len(trace) == sum(len(g["token_ids"]) for g in generations)
    assert "s1_topk_probs" in trace.columns
    assert meta["method"] == "oracle" and meta["router"] == "threshold:0.1"
    assert meta["models"] == {"small": str(family["small"]), "large": str(family["large"])}
    assert meta["params"]["max_new_tokens"] == 6
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


def test_python_dash_m_and_train_router(family, prompts_file, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fsgen", *decode_args(family, prompts_file, out, "--top-k", "4")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # train-router needs both classes; the tiny random pair disagrees nearly always, so relabel
    trace, meta = read_trace(out / "trace.parquet")
    trace["intervened"] = trace["s1_top1_prob"] < trace["s1_top1_prob"].median()
    from fsgen.trace import write_trace

    write_trace(trace, out / "relabelled.parquet", meta)
    assert main(["train-router", "--traces", str(out / "relabelled.parquet"), "--out", str(tmp_path / "r.joblib"),
                 "--top-k", "4"]) == 0
    assert (tmp_path / "r.joblib").exists()
    assert main(decode_args(family, prompts_file, tmp_path / "o2", "--router", f"learned:{tmp_path / 'r.joblib'}")) == 0
    # a trace with only one class is refused with one line
    assert main(["train-router", "--traces", str(out / "trace.parquet"), "--out", str(tmp_path / "x.joblib")]) != 0


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fsgen: error:")
    return err


def test_bad_inputs(family, prompts_file, tmp_path, capsys):
    out = tmp_path / "out"
    base = decode_args(family, prompts_file, out)

    def with_arg(flag, value):
        args = list(base)
        args[args.index(flag) + 1] = value
        return args

    assert "not found" in one_line_error(capsys, with_arg("--large", str(tmp_path / "missing_model")))
    assert "prompts file not found" in one_line_error(capsys, with_arg("--prompts", str(tmp_path / "none.jsonl")))
    assert "invalid choice" in one_line_error(capsys, with_arg("--method", "beam"))
    assert "unknown router" in one_line_error(capsys, base + ["--router", "sometimes"])
    assert "malformed threshold" in one_line_error(capsys, base + ["--router", "threshold:x"])
    assert "learned router file not found" in one_line_error(capsys, base + ["--router", f"learned:{tmp_path}/r.joblib"])
    assert "max-new-tokens" in one_line_error(capsys, with_arg("--max-new-tokens", "0"))
    assert "--small-tuned" in one_line_error(capsys, base[:base.index("--method") + 1] + ["proxy"] +
                                             base[base.index("--method") + 2:])

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "empty" in one_line_error(capsys, with_arg("--prompts", str(empty)))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "a"}\n{"prompt": \n')
    assert ":2: not JSON" in one_line_error(capsys, with_arg("--prompts", str(bad_json)))
    bad_utf8 = tmp_path / "bad8.jsonl"
    bad_utf8.write_bytes(b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "\xff\xfe"}\n')
    assert ":3: not UTF-8" in one_line_error(capsys, with_arg("--prompts", str(bad_utf8)))
    no_prompt = tmp_path / "noprompt.jsonl"
    no_prompt.write_text('{"text": "a"}\n')
    assert ":1:" in one_line_error(capsys, with_arg("--prompts", str(no_prompt)))
    assert not out.exists()  # nothing written on bad input


def test_different_tokenizers_one_line(family, prompts_file, tmp_path, capsys):
    from fsgen.testing import build_model, build_tokenizer

    other = build_model(tmp_path / "other", build_tokenizer(tmp_path / "tok", vocab_size=300, corpus=["zebra quartz"] * 30))
    args = decode_args(family, prompts_file, tmp_path / "out")
    args[args.index("--small") + 1] = str(other)
    capsys.readouterr()  # drop the model builder's own progress output
    err = one_line_error(capsys, args)
    assert "different tokenizers" in err and str(other) in err
