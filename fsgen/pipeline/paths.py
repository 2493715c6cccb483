"""Where the workflow writes: the one home of the results layout (rules/common.smk builds its
path patterns from these; `fsgen status` reads the same places).

Patterns are relative to the working directory and use Snakemake's wildcard syntax.
"""

from __future__ import annotations

from pathlib import Path

from fsgen.pipeline.jobs import SINGLE

RESULTS = Path("results")
PAIR_DIR = RESULTS / "{benchmark}" / "{variant}" / "{large}__{small}"
SINGLE_DIR = RESULTS / "{benchmark}" / SINGLE / "{model}"
JOB_DIR = RESULTS / "{benchmark}" / "{job}"  # {job}: "<variant>/<large>__<small>" or "single/<model>"
LOGS = RESULTS / "logs"
BENCH = RESULTS / "benchmarks"  # Snakemake's benchmark files (run time, memory) of decode and train jobs
# finished requests of decode jobs (fsgen.resume): outside every declared output, which Snakemake
# deletes when a job fails, so a killed or timed-out job resumes where it stopped
RESUME_DIR = RESULTS / ".resume"
TABLES = RESULTS / "tables"
FIGURES = RESULTS / "figures"
# per benchmark, so that a change of one benchmark's task or data reruns only that benchmark's jobs
TASK_OVERRIDES = RESULTS / "tasks" / "{benchmark}" / "overrides.json"  # its folder: the benchmark's include path
PREFLIGHT = RESULTS / "preflight" / "{benchmark}.json"
REFERENCE = RESULTS / "reference" / "published.csv"  # config `reference`, under our model names (rule reference)
SUMMARY = RESULTS / "summary.md"
REPORT_HTML = RESULTS / "report.html"

# counterfactual continuations of oracle jobs (fsgen.harness.counterfactual): their resume cache
# folders live apart from the decode jobs' (`fsgen cache` judges those against the decode jobs)
COUNTERFACTUAL_RESUME_DIR = RESUME_DIR / "counterfactual"

DECODE_OUTPUTS = ("trace.parquet", "samples.jsonl", "generations.jsonl")  # one folder per decode job
# in an oracle job's folder: the continuations (GPU stage) and their outcomes (CPU stage)
COUNTERFACTUAL_CONTINUATIONS = "counterfactual_continuations.parquet"
COUNTERFACTUAL_OUTPUT = "counterfactual.parquet"
SCORE_OUTPUT = "metrics.json"
STATS_OUTPUT = "stats.json"


def job_folder(job: dict) -> str:
    """A job's folder below results/<benchmark>/: "<variant>/<large>__<small>" or "single/<model>"."""
    if "model" in job:
        return f"{SINGLE}/{job['model']}"
    return f"{job['variant']}/{job['large']}__{job['small']}"


def job_dir(job: dict) -> Path:
    """results/<benchmark>/<job folder>."""
    return RESULTS / job["benchmark"] / job_folder(job)


def parse_job(benchmark: str, folder: str) -> dict:
    """The job of a folder below results/<benchmark>/ (the inverse of job_folder)."""
    head, _, rest = folder.partition("/")
    if head == SINGLE:
        return {"benchmark": benchmark, "model": rest}
    large, _, small = rest.partition("__")
    return {"benchmark": benchmark, "variant": head, "large": large, "small": small}


def log_file(stage: str, job: dict) -> Path:
    """results/logs/<stage>/<benchmark>/<job folder>.log (stage: decode, score, stats,
    counterfactual, counterfactual_score)."""
    return LOGS / stage / job["benchmark"] / f"{job_folder(job)}.log"
