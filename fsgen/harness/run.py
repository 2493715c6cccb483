"""Decode, then score: the two lm-eval runs of one (benchmark, method, models) job.

run_decode (GPU job): lm-eval in predict-only mode with the `fsgen` model. Writes to out_dir
    samples.jsonl       lm-eval's samples (one per doc and filter) with `task` added: the raw
                        responses (`resps`) that scoring replays
    generations.jsonl   one per generate_until request: request_id, task, doc_id, idx, prompt,
                        text, token_ids (joins the trace to the samples)
    trace.parquet       the per-token trace (request_id = the request's index, see above)
    decode_results.json lm-eval's results/config of the decode run (no metrics); `fsgen_run` holds
                        the benchmark entry, doc_ids, fsgen's decode metadata and `chat_template`:
                        {"applied": false} or the applied template (model, sha256, template,
                        special_tokens; also in the trace's metadata under `harness`)
run_score (CPU job): lm-eval again, with the `fsgen-replay` model answering from samples.jsonl,
    so lm-eval re-applies filters and metrics. Writes to out_dir
    metrics.json        {benchmark, task, n, seed, limit, doc_ids, metrics: {"metric,filter": v}, decode}
    lm_eval_results.json lm-eval's own results (no samples)
    scored_samples.jsonl lm-eval's samples with per-doc metrics

Both select the same documents: `limit` of them drawn with the benchmark's `seed` (sorted
indices), and seed lm-eval's random/numpy/torch/few-shot generators with it. With the entry's
`chat_template` on, both render prompts through lm-eval's chat-template support
(`apply_chat_template=True`): the decode run with the model's tokenizer, the score run with the
template the decode run recorded, so the replayed prompts are the decoded ones.
"""

from __future__ import annotations

import json
import logging
import platform
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lm_eval
from lm_eval.utils import handle_non_serializable

import fsgen.harness  # noqa: F401  (registers the models, built-ins first)
from fsgen.harness import code_eval
from fsgen.harness.lm import render_chat
from fsgen.harness.replay import ReplayLM
from fsgen.harness.tasks import (
    benchmark_entry,
    check_code_execution,
    load_task,
    make_task_manager,
    select_samples,
    task_name,
)

from fsgen import atomic

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- one lm-eval run


@contextmanager
def quick_env_info():
    """lm-eval's add_env_info runs torch's collect_env, which starts pip and nvidia-smi
    subprocesses: 1.6 s of every run, and the demo has 80 runs. Inside this block the same keys
    are filled from the package versions directly."""
    import lm_eval.evaluator as evaluator

    def add_env_info(storage: dict) -> None:
        import torch
        import transformers

        storage.update(
            pretty_env_info=(f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python "
                             f"{platform.python_version()}, {platform.platform()}; torch's collect_env skipped by fsgen"),
            transformers_version=transformers.__version__,
            lm_eval_version=getattr(lm_eval, "__version__", "unknown"),
            upper_git_hash=None,
        )

    original = evaluator.add_env_info
    evaluator.add_env_info = add_env_info
    try:
        yield
    finally:
        evaluator.add_env_info = original


def evaluate_benchmark(lm, benchmark: str, entry: dict, work_dir, *, predict_only: bool, tasks_dir=None,
                       include_path=None, bootstrap_iters: int = 100000) -> tuple[dict, list[int] | None]:
    """simple_evaluate of one benchmark with its document selection and seeds.

    With `entry["chat_template"]` on, lm-eval renders prompts with `lm.apply_chat_template`.
    Task overrides are read from `include_path` when given (written by the workflow), else
    written to work_dir/tasks. Returns (lm-eval results, the selected dataset indices or None
    for all documents).
    """
    entry = benchmark_entry(benchmark, entry)
    check_code_execution(benchmark, entry)
    task = task_name(entry)
    if include_path is not None:
        manager = make_task_manager({benchmark: entry}, include_path, tasks_dir, write=False)
    else:
        manager = make_task_manager({benchmark: entry}, Path(work_dir) / "tasks", tasks_dir)
    task_obj = load_task(manager, task)
    check_code_execution(benchmark, entry, {"unsafe_code": getattr(task_obj, "UNSAFE_CODE", False)})
    indices = select_samples(len(task_obj.eval_docs), entry["limit"], entry["seed"])
    seed = int(entry["seed"])
    allow = entry["allow_code_execution"] and not predict_only
    with code_eval.allow_code_execution() if allow else nullcontext(), quick_env_info():
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=manager,
            samples={task: indices} if indices is not None else None,
            num_fewshot=entry["num_fewshot"],
            gen_kwargs=({"max_gen_toks": int(entry["max_new_tokens"])}
                        if task_obj.get_config("output_type") == "generate_until" else None),
            batch_size=entry["batch_size"],
            predict_only=predict_only,
            log_samples=True,
            bootstrap_iters=bootstrap_iters,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            confirm_run_unsafe_code=bool(entry["allow_code_execution"]),
            apply_chat_template=bool(entry["chat_template"]),
        )
    if results is None:
        raise RuntimeError(f"benchmark {benchmark!r}: lm-eval returned no results (not rank 0?)")
    return results, indices


def _samples_rows(results: dict) -> list[dict]:
    return [{"task": task, **sample} for task, samples in results.get("samples", {}).items() for sample in samples]


def _without_samples(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "samples"}


# ---------------------------------------------------------------- decode


def run_decode(benchmark: str, entry: dict, model_args: dict | None, out_dir, *, lm=None,
               tasks_dir=None, include_path=None) -> dict:
    """Decode one benchmark with the `fsgen` model (or `lm`, e.g. a stub) in predict-only mode.

    The code-execution opt-in is checked before any model is loaded.
    """
    entry = benchmark_entry(benchmark, entry)
    check_code_execution(benchmark, entry)
    out_dir = Path(out_dir)
    if lm is None:
        from fsgen.harness.lm import FsgenLM

        lm = FsgenLM(**{"batch_size": entry["batch_size"], **(model_args or {})})
    chat = {"applied": False}
    if entry["chat_template"] and hasattr(lm, "chat_template_record"):
        chat = lm.chat_template_record(benchmark)  # a model without a chat template fails here, before decoding
    results, indices = evaluate_benchmark(lm, benchmark, entry, out_dir, predict_only=True, tasks_dir=tasks_dir,
                                          include_path=include_path)
    task = task_name(entry)

    def doc_id(task_, position):  # lm-eval numbers the selected docs 0..n-1
        return indices[position] if (indices is not None and task_ == task) else position

    run_info = {"benchmark": benchmark, "task": task, "entry": entry, "doc_ids": indices, "chat_template": chat}
    atomic.write_jsonl(out_dir / "samples.jsonl", _samples_rows(results), default=handle_non_serializable)
    if hasattr(lm, "write_generations"):
        lm.write_generations(out_dir / "generations.jsonl", doc_ids=doc_id)
        lm.write_trace(out_dir / "trace.parquet", {"harness": run_info})
        run_info["fsgen"] = lm.metadata()
    atomic.write_json(out_dir / "decode_results.json", {**_without_samples(results), "fsgen_run": run_info},
                      default=handle_non_serializable)
    return results


# ---------------------------------------------------------------- score


def replay_model(benchmark: str, entry: dict, samples_path, chat_record: dict | None):
    """The `fsgen-replay` model of a decode run; for a chat benchmark one that renders the
    decode run's recorded chat template (ValueError when the decode run recorded none)."""
    if not entry["chat_template"]:
        return ReplayLM(samples=str(samples_path))
    if not (chat_record or {}).get("applied"):
        raise ValueError(f"benchmark {benchmark!r} asks for chat prompts (chat_template), but the decode run "
                         f"beside {samples_path} recorded no chat template; decode it again")
    return ChatReplayLM(samples=str(samples_path), chat_record=chat_record)


class ChatReplayLM(ReplayLM):
    """ReplayLM with lm-eval's chat-template hooks: renders with a tokenizer that holds only the
    decode run's recorded template and special tokens (the same `apply_chat_template` call as
    the decode run; no model files needed)."""

    def __init__(self, samples, chat_record: dict, **kwargs) -> None:
        super().__init__(samples=samples, **kwargs)
        self.chat_record = chat_record
        self.chat_tokenizer = template_tokenizer(chat_record["template"], chat_record.get("special_tokens") or {})

    @property
    def tokenizer_name(self) -> str:
        return str(self.chat_record.get("model", "fsgen")).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return render_chat(self.chat_tokenizer, chat_history, add_generation_prompt)


def template_tokenizer(template: str, special_tokens: dict):
    """A tokenizer with no vocabulary beyond `special_tokens`, carrying `template`: renders chats
    as the original tokenizer did (its special tokens are the template's variables)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={}, unk_token=None))
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=template, **special_tokens)



def flat_metrics(task_results: dict) -> dict:
    """lm-eval's "metric,filter" entries (values and stderrs; "N/A" without bootstrap), as floats."""
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in task_results.items() if "," in k}


def run_score(benchmark: str, entry: dict, samples_path, out_dir, *, tasks_dir=None, include_path=None,
              bootstrap_iters: int = 100000) -> dict:
    """Re-score a decode run from its samples.jsonl with lm-eval's filters and metrics.

    A chat benchmark's prompts are rendered again with the chat template its decode run
    recorded (decode_results.json next to samples.jsonl): replay checks they are the same."""
    entry = benchmark_entry(benchmark, entry)
    check_code_execution(benchmark, entry)
    out_dir = Path(out_dir)
    decode_run = {}
    decode_results = Path(samples_path).with_name("decode_results.json")
    if decode_results.exists():
        decode_run = json.loads(decode_results.read_text(encoding="utf-8")).get("fsgen_run", {})
    lm = replay_model(benchmark, entry, samples_path, decode_run.get("chat_template"))
    results, indices = evaluate_benchmark(lm, benchmark, entry, out_dir, predict_only=False, tasks_dir=tasks_dir,
                                          include_path=include_path, bootstrap_iters=bootstrap_iters)
    task = task_name(entry)
    decode_info = decode_run.get("fsgen", {})
    metrics = {
        "benchmark": benchmark,
        "task": task,
        "n": results.get("n-samples", {}).get(task, {}).get("effective"),
        "seed": entry["seed"],
        "limit": entry["limit"],
        "doc_ids": indices,
        "metrics": flat_metrics(results["results"][task]),
        "decode": decode_info,
    }
    atomic.write_json(out_dir / "lm_eval_results.json", _without_samples(results), default=handle_non_serializable)
    atomic.write_jsonl(out_dir / "scored_samples.jsonl", _samples_rows(results), default=handle_non_serializable)
    atomic.write_json(out_dir / "metrics.json", metrics, default=handle_non_serializable)
    return metrics
