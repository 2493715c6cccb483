"""`fsgen status`: how far a grid has got, from what the workflow and Snakemake leave on disk.

Jobs are expanded from the config exactly as the workflow does (fsgen.pipeline.jobs), with the
workflow's paths (fsgen.pipeline.paths): decode -> results/<benchmark>/<job>/{trace.parquet,
samples.jsonl, generations.jsonl}, score -> metrics.json, stats -> stats.json, analyses -> the
aggregate tables, scaling law, figures, summary and report; logs under results/logs/.

State of a job, in this order:
    done        every output exists and none is marked incomplete
    running     an output is marked incomplete (.snakemake/incomplete/: Snakemake marks a job's
                outputs when it starts and unmarks them when it ends) and a Snakemake process
                holds the working directory's lock (.snakemake/locks/). A stale lock (a killed
                Snakemake; `snakemake --unlock`) makes an interrupted job look running.
    interrupted marked incomplete but nothing holds the lock: the Snakemake that ran it was
                killed; the next run reruns it (with --rerun-incomplete)
    failed      the latest Snakemake log (.snakemake/log/*.snakemake.log) that names one of its
                outputs reports "Error in rule ..." for it (Snakemake deletes a failed job's
                outputs, keeps its log file)
    pending     none of the above
Decoded requests of a decode job that is not done: the complete lines of its resume cache,
results/.resume/<key>/records.jsonl, in the folder whose key.json names the job and this
environment's code digest and library versions (fsgen.cache.current_folder: what an attempt
started now resumes; after a code change, none until the job runs again).
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fsgen.analysis import outputs as analysis_outputs
from fsgen.pipeline import jobs as pj
from fsgen.pipeline import paths
from fsgen.pipeline.config import ConfigError, fill_defaults, load_yaml_unique, validate_schema

STAGES = ("decode", "score", "stats", "analyses")
STATES = ("done", "running", "interrupted", "failed", "pending")


def analyses(config: dict) -> dict[str, list[str]]:
    """Analysis rule -> its outputs below results/: those of the registry fsgen.analysis.outputs
    (which rules/analyze.smk reads), and the report (rules/report.smk) when the config builds it.
    Each rule logs to results/logs/<rule>.log."""
    reference = bool(config.get("reference"))
    by_rule: dict[str, list[str]] = {}
    for output in analysis_outputs.all_outputs(reference):
        by_rule.setdefault(output.rule, []).append(output.path)
    if config.get("report", True):
        by_rule["report"] = [paths.REPORT_HTML.relative_to(paths.RESULTS).as_posix()]
    return by_rule


@dataclass
class JobStatus:
    stage: str
    name: str  # e.g. "arith/oracle/arith-l__arith-s", "arith/single/arith-s", "figures"
    outputs: list[str]  # relative to the working directory, as Snakemake names them
    log: str
    state: str = "pending"
    detail: str = ""  # decoded requests, cluster job id
    decode: dict | None = None  # decode jobs: the workflow's job dict


# ---------------------------------------------------------------- the grid


def load_config(workdir: Path, config_files: list[str] | None = None) -> dict:
    """The run's config: its files (later ones update earlier ones, as Snakemake merges them),
    validated against the workflow's schema with its defaults filled."""
    from snakemake.utils import update_config

    files = config_files or [str(workdir / "config" / "config.yaml")]
    config: dict = {}
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        update_config(config, load_yaml_unique(path))
    schema_path = workdir / "workflow" / "schemas" / "config.schema.yaml"
    if not schema_path.is_file():
        raise FileNotFoundError(f"no workflow schema at {schema_path} (is --workdir the workflow's folder?)")
    schema = load_yaml_unique(schema_path)
    validate_schema(config, schema)
    return fill_defaults(config, schema)


def job_name(job: dict) -> str:
    """"<benchmark>/<variant>/<large>__<small>" or "<benchmark>/single/<model>"."""
    return f"{job['benchmark']}/{paths.job_folder(job)}"


def grid_jobs(config: dict) -> list[JobStatus]:
    """Every job of the grid per stage, in the workflow's order."""
    decode_jobs = pj.decode_jobs(config) + pj.single_jobs(config)
    jobs = []
    for job in decode_jobs:
        folder = paths.job_dir(job)
        jobs.append(JobStatus("decode", job_name(job), [str(folder / n) for n in paths.DECODE_OUTPUTS],
                              str(paths.log_file("decode", job)), decode=job))
    for stage, output in (("score", paths.SCORE_OUTPUT), ("stats", paths.STATS_OUTPUT)):
        jobs += [JobStatus(stage, job_name(j), [str(paths.job_dir(j) / output)], str(paths.log_file(stage, j)))
                 for j in decode_jobs]
    for rule, outputs in analyses(config).items():
        log = str(paths.LOGS / f"{rule}.log")
        jobs.append(JobStatus("analyses", rule, [str(paths.RESULTS / o) for o in outputs], log))
    return jobs


# ---------------------------------------------------------------- what Snakemake leaves


def incomplete_outputs(workdir: Path) -> dict[str, str | None]:
    """Output path -> cluster job id (or None) of every output marked incomplete.

    Snakemake's file persistence names each marker by the urlsafe base64 of the output path,
    split into '@'-prefixed folders when longer than a file name may be.
    """
    root = workdir / ".snakemake" / "incomplete"
    marked = {}
    for dirpath, _, files in os.walk(root):
        parts = [p[1:] for p in Path(dirpath).relative_to(root).parts if p.startswith("@")]
        for name in files:
            if name == "migration_underway":
                continue
            try:
                path = base64.urlsafe_b64decode("".join(parts) + name).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            try:
                job_id = json.loads((Path(dirpath) / name).read_text() or "{}").get("external_jobid")
            except (OSError, ValueError):
                job_id = None
            marked[os.path.normpath(path)] = job_id
    return marked


def workflow_locked(workdir: Path) -> bool:
    """A Snakemake process holds the working directory (its N.input.lock / N.output.lock files)."""
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(p.name.endswith(".lock") for p in locks.iterdir())


RULE_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
RULE_ERROR = re.compile(r"^Error in rule (\S+):$")


def last_events(workdir: Path) -> dict[str, tuple[str, str]]:
    """Output path -> ("started" | "failed", Snakemake log file) of the last mention in the logs."""
    events: dict[str, tuple[str, str]] = {}
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        event = None
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if RULE_START.match(line):
                event = "started"
            elif RULE_ERROR.match(line):
                event = "failed"
            elif event and line.startswith("    output: "):
                for path in line[len("    output: "):].split(", "):
                    events[os.path.normpath(path.strip())] = (event, str(log))
            elif not line.startswith("    "):
                event = None
    return events


# ---------------------------------------------------------------- decoded requests


def decode_detail(config: dict, status: JobStatus, workdir: Path, caches: list, environment: dict) -> str:
    """"37 of 150 requests decoded" (resume cache) or the generations of a finished job."""
    from fsgen.cache import current_folder

    limit = config["benchmarks"][status.decode["benchmark"]].get("limit")
    total = f" of {limit}" if limit else ""
    if status.state == "done":
        with open(workdir / status.outputs[2], "rb") as fh:
            return f"{sum(1 for line in fh if line.strip())} requests"
    folder = current_folder(caches, status.decode, environment)
    done = folder.requests if folder else 0
    return f"{done}{total} requests decoded" if done or status.state != "pending" else ""


# ---------------------------------------------------------------- deciding and reporting


def decide(status: JobStatus, workdir: Path, marked: dict, locked: bool, events: dict) -> tuple[str, str]:
    """(state, cluster job id or "") of one job; see the module doc."""
    outputs = [os.path.normpath(o) for o in status.outputs]
    flagged = [o for o in outputs if o in marked]
    if not flagged and all((workdir / o).exists() for o in outputs):
        return "done", ""
    if flagged:
        job_id = marked[flagged[0]]
        return ("running" if locked else "interrupted"), (f"cluster job {job_id}" if job_id else "")
    if any(events.get(o, ("",))[0] == "failed" for o in outputs):
        return "failed", ""
    return "pending", ""


def collect(workdir: Path, config: dict) -> list[JobStatus]:
    from fsgen.fingerprint import decode_environment
    from fsgen.resume import list_caches

    marked, locked, events = incomplete_outputs(workdir), workflow_locked(workdir), last_events(workdir)
    caches, environment = list_caches(workdir / paths.RESUME_DIR), decode_environment()
    jobs = grid_jobs(config)
    for status in jobs:
        status.state, job_id = decide(status, workdir, marked, locked, events)
        details = [decode_detail(config, status, workdir, caches, environment)] if status.stage == "decode" else []
        status.detail = ", ".join(d for d in [*details, job_id] if d)
    return jobs


def format_status(jobs: list[JobStatus], show_all: bool = False) -> str:
    """A table of counts per stage, then one line per running / interrupted / failed job."""
    lines = [f"{'stage':<10}" + "".join(f"{s:>13}" for s in (*STATES, "total"))]
    for stage in STAGES:
        of_stage = [j for j in jobs if j.stage == stage]
        counts = [sum(j.state == s for j in of_stage) for s in STATES]
        lines.append(f"{stage:<10}" + "".join(f"{c:>13}" for c in (*counts, len(of_stage))))
    listed = [j for j in jobs if show_all or j.state in ("running", "interrupted", "failed")]
    if listed:
        lines.append("")
    for j in listed:
        detail = f" ({j.detail})" if j.detail else ""
        log = f"  log: {j.log}" if j.state in ("failed", "interrupted") or show_all else ""
        lines.append(f"{j.state:<12}{j.stage:<9}{j.name}{detail}{log}")
    return "\n".join(lines) + "\n"


def workflow_config(args) -> tuple[Path, dict]:
    """(working directory, checked config) of a command's --workdir / --configfile; CliError."""
    from fsgen.cli import CliError

    workdir = Path(args.workdir)
    try:
        return workdir, load_config(workdir, args.configfile)
    except (FileNotFoundError, ConfigError) as e:
        raise CliError(str(e)) from None


def run_status(args) -> None:
    workdir, config = workflow_config(args)
    print(format_status(collect(workdir, config), args.all), end="")
