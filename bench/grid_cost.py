"""What the paper grid costs: disk for the Hugging Face cache and expected GPU-hours, from a config.

    python bench/grid_cost.py                                  # config/paper.yaml, H100 80GB cards
    python bench/grid_cost.py --gpu h200 --out bench/out/grid_cost.json
    python bench/grid_cost.py --measure-prompts gsm8k=../shared/data/gsm8k_test.jsonl \\
        mmlu_stem=../shared/data/mmlu_stem.jsonl mbpp=../shared/data/mbpp.jsonl mtbench=../shared/data/mtbench_questions.jsonl

Disk: every hub model's parameter count (from its architecture, config/reference/
qwen1.5_architectures.json) x 2 bytes (bfloat16 safetensors). GPU-hours: for every decode job of
the config (fsgen.pipeline.jobs.decode_jobs and single_jobs), the job's GPUs and batch size from
fsgen.decoding.placement (the same planner the decode jobs use) times its expected wall time
(fsgen.decoding.runtime.decode_seconds: the throughput model calibrated on docs/bench.md's GPU run).
Prompt lengths per benchmark come from PROMPT_TOKENS, measured with --measure-prompts (lm-eval
renders each benchmark's prompts from local data; tokens ~ characters / CHARS_PER_TOKEN, since no
Qwen tokenizer is at hand offline). Method and assumptions: docs/slurm.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fsgen.decoding import placement as pl  # noqa: E402
from fsgen.decoding import runtime  # noqa: E402
from fsgen.pipeline import jobs as pj  # noqa: E402
from fsgen.pipeline.config import fill_defaults, load_yaml_unique, validate_schema  # noqa: E402

CHARS_PER_TOKEN = 4.0  # English BPE text, Qwen-sized vocabulary (assumption)
# benchmark -> (documents available, mean prompt tokens, max prompt tokens): measured with
# --measure-prompts on the public data (shared/data: GSM8K test, MMLU STEM, MBPP, MT-Bench), all
# documents, the config's shots; see docs/slurm.md.
PROMPT_TOKENS = {
    "gsm8k": (1319, 597, 749),
    "mmlu_stem": (3134, 101, 424),
    "mbpp": (500, 470, 1476),
    "mtbench": (80, 79, 415),
}


def load_config(path: Path) -> dict:
    config = load_yaml_unique(path)
    schema = load_yaml_unique(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    validate_schema(config, schema)
    fill_defaults(config, schema)
    return config


def model_specs(config: dict, architectures: dict) -> dict[str, pl.ModelSpec]:
    """Every config model's ModelSpec; a tuned variant has its base model's architecture."""
    base_of = {m.get("tuned"): name for name, m in config["models"].items() if m.get("tuned")}
    specs = {}
    for name, entry in config["models"].items():
        arch = architectures.get(name) or architectures.get(base_of.get(name))
        if arch is None:
            raise SystemExit(f"models.{name}: no architecture in the architectures file (add its config.json fields)")
        specs[name] = pl.ModelSpec.from_hf_config(name, {**arch, "model_type": "qwen2"}, dtype=entry.get("dtype", "bfloat16"))
    return specs


def job_models(config: dict, specs: dict, job: dict) -> tuple[dict, str]:
    """role -> spec of a decode job, and its method (what decode_seconds understands)."""
    if "model" in job:
        return {"large": specs[job["model"]]}, "single"
    method = pj.decode_settings(config, job["variant"])["method"]
    models = {"large": specs[job["large"]], "small": specs[job["small"]]}
    if method == "proxy":
        models["small_tuned"] = specs[config["models"][job["small"]]["tuned"]]
    return models, method


def job_cost(config: dict, specs: dict, job: dict, gpu: runtime.GpuModel, gpu_memory_gb: float) -> dict:
    bench = config["benchmarks"][job["benchmark"]]
    available, mean_prompt, max_prompt = PROMPT_TOKENS[job["benchmark"]]
    models, method = job_models(config, specs, job)
    new, cap = int(bench["max_new_tokens"]), int(bench["batch_size"])
    gpus = pl.job_gpus(models, gpu_memory_gb=gpu_memory_gb, batch_cap=cap, prompt_tokens=max_prompt, max_new_tokens=new)
    plan = pl.plan_placement(models, n_gpus=gpus, gpu_memory_gb=gpu_memory_gb, batch_cap=cap,
                             prompt_tokens=max_prompt, max_new_tokens=new)
    documents = min(int(bench["limit"]), available)
    seconds = runtime.decode_seconds(models, method, gpu=gpu, documents=documents, batch_size=plan.batch_size,
                                prompt_tokens=mean_prompt, max_new_tokens=new,
                                draft_k=int(pj.expand_variants(config).get(job.get("variant"), {}).get("k", 5)))
    return {**job, "method": method, "gpus": gpus, "batch_size": plan.batch_size, "documents": documents,
            "hours": seconds / 3600, "gpu_hours": gpus * seconds / 3600,
            "runtime_min": runtime.runtime_minutes(seconds)}


def disk_rows(config: dict, specs: dict) -> list[dict]:
    return [{"model": name, "params": specs[name].params, "gb": specs[name].params * 2 / 1e9}
            for name in pj.hub_models(config)]


def measure_prompts(config: dict, data: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    """benchmark -> (documents, mean, max prompt tokens) of lm-eval's rendered prompts, all documents."""
    from lm_eval.api.model import LM

    from fsgen.harness.run import evaluate_benchmark

    class Recorder(LM):
        def __init__(self):
            super().__init__()
            self.prompts = []

        def generate_until(self, requests, disable_tqdm=False):
            self.prompts += [r.args[0] for r in requests]
            return [""] * len(requests)

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    out = {}
    for bench, path in data.items():
        entry = {**config["benchmarks"][bench], "data": {"path": path}, "limit": None}  # predict-only: no code runs
        recorder = Recorder()
        with tempfile.TemporaryDirectory() as work:
            evaluate_benchmark(recorder, bench, entry, work, predict_only=True)
        tokens = [len(p) / CHARS_PER_TOKEN for p in recorder.prompts]
        out[bench] = (len(tokens), round(sum(tokens) / len(tokens)), math.ceil(max(tokens)))
    return out


def summary(rows: list[dict], disk: list[dict], gpu: runtime.GpuModel, gpu_memory_gb: float) -> str:
    lines = [f"Disk (bfloat16 weights): {sum(d['gb'] for d in disk):.0f} GB for {len(disk)} models",
             f"GPU-hours on {gpu.name} ({gpu_memory_gb:g} GiB): {sum(r['gpu_hours'] for r in rows):.0f} "
             f"over {len(rows)} decode jobs", "", "| benchmark | method | jobs | GPU-hours | longest job (h) |",
             "|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r.get("method", "single")), []).append(r)
    for (bench, method), group in groups.items():
        lines.append(f"| {bench} | {method} | {len(group)} | {sum(r['gpu_hours'] for r in group):.0f} | "
                     f"{max(r['hours'] for r in group):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--architectures", type=Path, default=ROOT / "config" / "reference" / "qwen1.5_architectures.json")
    parser.add_argument("--gpu", choices=sorted(runtime.GPU_MODELS), default="h100-80gb")
    parser.add_argument("--gpu-memory-gb", type=float, help="card size (default: the GPU model's)")
    parser.add_argument("--measure-prompts", nargs="+", metavar="BENCHMARK=FILE", help="print PROMPT_TOKENS and stop")
    parser.add_argument("--out", type=Path, help="write the per-job rows as JSON")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.measure_prompts:
        print(json.dumps(measure_prompts(config, dict(a.split("=", 1) for a in args.measure_prompts))))
        return
    specs = model_specs(config, json.loads(args.architectures.read_text())["models"])
    gpu = runtime.GPU_MODELS[args.gpu]
    memory = args.gpu_memory_gb or gpu.memory_gb
    rows = [job_cost(config, specs, job, gpu, memory) for job in pj.decode_jobs(config) + pj.single_jobs(config)]
    disk = disk_rows(config, specs)
    print(summary(rows, disk, gpu, memory))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"gpu": gpu.name, "gpu_memory_gb": memory, "disk": disk, "jobs": rows}, indent=1))


if __name__ == "__main__":
    main()
