"""The resume key follows everything that determines a decode result (issue #15, #18): every
decode setting, the models, the task, the job, the decoding code and the library versions. A
change to the code or to a library version makes the next run decode every request again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from fsgen import fingerprint, resume
from fsgen.decoding.config import FIELDS, DecodeConfig
from fsgen.decoding.resumable import decode_job_key, decode_job_parts, decode_request_key
from fsgen.testing import write_generation_task

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)

BASE = DecodeConfig(method="contrastive", router="entropy:0.5", alpha=0.2, beta=0.6, formula="blend", k=5,
                    temperature=0.0, seed=3, max_new_tokens=8, stop=("Question:",), batch_size=4, top_k=0)
# DecodeConfig field -> another value; each changes a result, so it must change the cache identity
CHANGED = {"method": "proxy", "router": "entropy:0.7", "alpha": 0.3, "beta": 0.25, "formula": "standard", "k": 3,
           "temperature": 0.7, "seed": 4, "max_new_tokens": 9, "stop": ("\n",), "top_k": 5}
# ... and the fields that change no result (a row does not depend on its batch)
NOT_A_RESULT = {"batch_size": 3, "progress": True}
JOB = {"benchmark": "arith", "variant": "contrastive", "large": "l", "small": "s"}
PROMPT = "Question: 2 + 3?\nAnswer:"


def fake_model(folder: Path, weights: bytes) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return str(folder)


@pytest.fixture
def models(tmp_path):
    return {"large": fake_model(tmp_path / "l", b"L" * 64), "small": fake_model(tmp_path / "s", b"S" * 64)}


def identity(names: dict, config=BASE, tasks=("t",), job=JOB, prompt=PROMPT, request_id=1) -> tuple[str, str]:
    """What the cache looks a finished request up by: (job key, request key)."""
    systems = SimpleNamespace(names=names)
    return (decode_job_key(systems, config, tasks=list(tasks), job=job),
            decode_request_key(prompt, request_id, config))


def test_every_decode_setting_is_classified():
    assert set(CHANGED) | set(NOT_A_RESULT) == set(FIELDS), "classify the new DecodeConfig field here"


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_each_result_setting_changes_the_identity(models, field):
    assert getattr(BASE, field) != CHANGED[field]
    assert identity(models, replace(BASE, **{field: CHANGED[field]})) != identity(models)


@pytest.mark.parametrize("field", sorted(NOT_A_RESULT))
def test_batch_size_and_progress_do_not(models, field):
    """An out-of-memory retry halves the batch size and must reuse every finished request."""
    assert identity(models, replace(BASE, **{field: NOT_A_RESULT[field]})) == identity(models)


def test_models_task_job_and_request_change_the_identity(models, tmp_path):
    base = identity(models)
    others = {
        "swapped roles": identity({"large": models["small"], "small": models["large"]}),
        "retrained small": identity({**models, "small": fake_model(tmp_path / "s2", b"S" * 63 + b"T")}),
        "task": identity(models, tasks=("t2",)),
        "job": identity(models, job={**JOB, "variant": "contrastive_b"}),
        "no job": identity(models, job=None),
        "prompt": identity(models, prompt=PROMPT + " "),
        "request id (sampling seed)": identity(models, request_id=2),
    }
    for what, other in others.items():
        assert other != base, what
    assert identity(models) == base  # and it is stable


def copy_package(dest: Path) -> Path:
    shutil.copytree(REPO / "fsgen", dest / "fsgen", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "fsgen"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


def test_code_digest_follows_the_decode_rule_inputs(tmp_path):
    package = copy_package(tmp_path)
    digest = fingerprint.code_digest(fingerprint.DECODE_CODE, package)
    assert digest == fingerprint.code_digest()  # the copy: same names, same content
    (package / "analysis" / "stats.py").write_text("# not decoding code\n")
    assert fingerprint.code_digest(fingerprint.DECODE_CODE, package) == digest
    edit(package / "decoding" / "stopping.py", "if end >= self.max_new_tokens:", "if end >= self.max_new_tokens - 1:")
    edited = fingerprint.code_digest(fingerprint.DECODE_CODE, package)
    assert edited != digest
    (package / "decoding" / "new_module.py").write_text("X = 1\n")  # a new module of the engine
    assert fingerprint.code_digest(fingerprint.DECODE_CODE, package) not in (digest, edited)


def test_code_and_library_versions_change_the_identity(models, tmp_path, monkeypatch):
    base = identity(models)
    package = copy_package(tmp_path / "copy")
    (package / "decoding" / "methods.py").write_text((package / "decoding" / "methods.py").read_text() + "\n# edited\n")
    monkeypatch.setattr(fingerprint, "PACKAGE", package)
    assert identity(models) != base
    monkeypatch.undo()
    for library in ("fsgen", *fingerprint.LIBRARIES):
        fake_version(monkeypatch, library, "99.0")
        assert identity(models) != base, library
        monkeypatch.undo()
    assert identity(models) == base


def fake_version(monkeypatch, library: str, version: str) -> None:
    """fsgen.fingerprint sees `library` at `version` (other distributions as installed)."""
    real = fingerprint.metadata

    def version_of(name):
        return version if name == library else real.version(name)

    monkeypatch.setattr(fingerprint, "metadata",
                        SimpleNamespace(version=version_of, PackageNotFoundError=real.PackageNotFoundError))


def test_key_json_names_every_part(models):
    parts = decode_job_parts(SimpleNamespace(names=models), BASE, tasks=["t"], job=JOB)
    small = models["small"]
    assert parts["models"]["small"] == {"path": small, "fingerprint": fingerprint.model_fingerprint(small)}
    assert parts["decode"]["beta"] == 0.6 and "batch_size" not in parts["decode"]
    assert parts["code"] == fingerprint.code_digest() and parts["versions"]["lm_eval"] == "0.4.13"
    assert set(parts["versions"]) == {"fsgen", "torch", "transformers", "lm_eval"}
    assert parts["tasks"] == ["t"] and parts["job"] == JOB
    with pytest.raises(ValueError, match="code"):
        decode_job_parts(SimpleNamespace(names=models), BASE, code="mine")
    for computed in ("models", "decode"):  # a caller cannot override what is computed here
        with pytest.raises(ValueError, match=rf"\['{computed}'\] are computed here"):
            decode_job_parts(SimpleNamespace(names=models), BASE, **{computed: "mine"})


def canonical_sha256(value) -> str:
    """Independent reference: sha256 of sorted, compact, UTF-8 JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_keys_are_the_documented_hashes_so_old_caches_stay_found():
    """The folder and record names of a cache written by an earlier run must not move: the job key
    is the hash of its parts, the request key the hash of {prompt, generation_kwargs}."""
    assert resume.job_key(task="gsm8k", beta=0.25) == canonical_sha256({"task": "gsm8k", "beta": 0.25})
    expected = canonical_sha256({"prompt": "2+2=", "generation_kwargs": {"max_new_tokens": 8, "stop": ["\n"]}})
    assert resume.request_key("2+2=", max_new_tokens=8, stop=["\n"]) == expected
    with pytest.raises(ValueError, match="^job_key needs the parts that determine the results$"):
        resume.job_key()


# ---------------------------------------------------------------- through run_decode

DOCS = [{"question": f"{a} + {b}?", "answer": str(a + b)} for a, b in [(1, 2), (4, 3), (7, 5), (2, 9)]]
BUDGET = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("key")
    family = {k: str(v) for k, v in build_tiny_family(root / "family").items()}
    (root / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    write_generation_task(root / "tasks", "key_gen", root / "d.jsonl")
    entry = {"task": "key_gen", "seed": 1, "max_new_tokens": BUDGET, "batch_size": 2}
    return SimpleNamespace(root=root, family=family, include=str(root / "tasks"), entry=entry)


def model_args(setup, cache_dir) -> dict:
    return {"model": setup.family["small"], "method": "single", "resume_dir": str(cache_dir)}


def generations(out_dir: Path) -> list[list[int]]:
    rows = [json.loads(line) for line in (out_dir / "generations.jsonl").read_text().splitlines()]
    return [r["token_ids"] for r in sorted(rows, key=lambda r: r["request_id"])]


def folders(cache_dir: Path) -> dict[str, dict]:
    """key -> key.json parts, plus the number of records under "records"."""
    return {p.name: {**json.loads((p / "key.json").read_text())["parts"],
                     "records": len((p / "records.jsonl").read_text().splitlines())}
            for p in cache_dir.iterdir() if p.is_dir()}


def count_engine_calls(monkeypatch) -> list[int]:
    """The request ids fsgen.decoding.engine.decode is asked for, from now on (the resume cache
    calls it for the requests it does not have)."""
    from fsgen.decoding import engine

    decoded = []
    real_decode = engine.decode

    def counting(systems, prompts, config, request_ids=None, on_result=None):
        decoded.extend(request_ids)
        return real_decode(systems, prompts, config, request_ids=request_ids, on_result=on_result)

    monkeypatch.setattr(engine, "decode", counting)
    return decoded


def test_library_version_change_decodes_every_request_again(setup, tmp_path, monkeypatch):
    from fsgen.harness.run import run_decode

    decoded = count_engine_calls(monkeypatch)
    cache = tmp_path / "cache"

    def run(name):
        decoded.clear()
        run_decode("b", setup.entry, model_args(setup, cache), tmp_path / name, include_path=setup.include)
        return len(decoded)

    assert run("first") == len(DOCS)
    assert run("again") == 0  # same code, same libraries: everything reused
    installed = fingerprint.library_versions()["transformers"]
    fake_version(monkeypatch, "transformers", "99.0")
    assert run("upgraded") == len(DOCS)
    assert run("upgraded-again") == 0
    by_version = {p["versions"]["transformers"]: p["records"] for p in folders(cache).values()}
    assert by_version == {installed: len(DOCS), "99.0": len(DOCS)}
    assert generations(tmp_path / "upgraded") == generations(tmp_path / "first")


RUN_DECODE = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    import fsgen
    from fsgen.harness.run import run_decode
    benchmark, entry, model_args, out_dir, include = json.loads(sys.argv[1])
    run_decode(benchmark, entry, model_args, out_dir, include_path=include)
    print(fsgen.__file__)
    """
)


def run_decode_with(package_root: Path, setup, cache_dir: Path, out_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1"}
    args = json.dumps(["b", setup.entry, model_args(setup, cache_dir), str(out_dir), setup.include])
    done = subprocess.run([sys.executable, "-c", RUN_DECODE, args], env=env, cwd=setup.root,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip().splitlines()[-1]).is_relative_to(package_root)  # that copy of fsgen ran


@pytest.mark.slow
def test_code_change_decodes_every_request_again_with_the_new_result(setup, tmp_path):
    """This package decodes in the test's process; then a copy whose token budget stops one token
    early, in a subprocess: its run reuses nothing and every generation is the old one cut to
    BUDGET - 1 tokens."""
    from fsgen.harness.run import run_decode

    cache = tmp_path / "cache"
    run_decode("b", setup.entry, model_args(setup, cache), tmp_path / "old", include_path=setup.include)
    edited = copy_package(tmp_path / "edited").parent
    edit(edited / "fsgen" / "decoding" / "stopping.py", "if end >= self.max_new_tokens:",
         "if end >= self.max_new_tokens - 1:")
    run_decode_with(edited, setup, cache, tmp_path / "new")

    old, new = generations(tmp_path / "old"), generations(tmp_path / "new")
    assert any(len(ids) == BUDGET for ids in old)  # the edit matters for this data
    assert new == [ids[:BUDGET - 1] for ids in old]
    records = sorted((p["code"], p["records"]) for p in folders(cache).values())
    assert [n for _, n in records] == [len(DOCS), len(DOCS)]  # the new code decoded every request itself
    assert {c for c, _ in records} == {fingerprint.code_digest(), fingerprint.code_digest(package=edited / "fsgen")}
