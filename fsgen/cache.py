"""`fsgen cache`: the workflow's resume cache folders, their parts, and which no current job uses.

Each folder of `results/.resume/` (fsgen.resume) belongs to one attempt history of one decode job
and its key.json names its parts: the job's identity (benchmark, variant, large, small | model),
models and fingerprints, decode settings, lm-eval tasks, the digest of the decoding code and the
library versions (fsgen.decoding.resumable.decode_job_parts). The workflow's decode script removes
a job's folders once the job has succeeded, so what remains are the folders of attempts that did
not finish, and folders that nothing will read again.

A folder is *unused* - listed for removal - when one of these holds, and it is not being written
(a live process holds its lock):
    no job          key.json names no workflow job (written outside the workflow, e.g. by
                    `fsgen lm-eval ... resume_dir=...`, or by an fsgen before key.json had parts)
    not in config   its job is not a job of the given config (a removed model, variant, benchmark)
    superseded      a newer folder of the same job exists and this one's code digest or library
                    versions are not the current ones (the code or a library changed since)
Everything else is kept: the newest folder of every configured job (the one its next attempt
resumes, even if `fsgen cache` runs in another environment than the jobs), and any folder whose
code and versions are the current ones. "Current" is the fsgen running this command and its
libraries: run it in the environment the decode jobs use.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from fsgen.fingerprint import jsonable
from fsgen.resume import CacheFolder, CacheLocked, leftover_removals, list_caches, remove_cache

ENVIRONMENT_KEYS = ("code", "versions")  # the parts fsgen.fingerprint.decode_environment computes


@dataclass
class Verdict:
    entry: CacheFolder
    remove: bool
    reason: str


def is_current(entry: CacheFolder, environment: dict) -> bool:
    """Whether the folder's code digest and library versions are those of `environment`."""
    parts = entry.parts or {}
    return all(parts.get(k) == environment.get(k) for k in ENVIRONMENT_KEYS)


def current_folder(entries: list[CacheFolder], job: dict, environment: dict) -> CacheFolder | None:
    """The folder an attempt of `job` started now would resume: its key.json names the job and
    has this environment's code and versions; the newest if several (other models or settings)."""
    wanted = jsonable(job)
    matching = [e for e in entries if e.job == wanted and is_current(e, environment)]
    return max(matching, key=lambda e: e.modified, default=None)


def judge(entries: list[CacheFolder], jobs: list[dict], environment: dict) -> list[Verdict]:
    """Keep or remove each folder, with the reason (see the module doc)."""
    configured = [jsonable(j) for j in jobs]
    newest: dict[str, float] = {}
    for e in entries:
        if e.job is not None:
            name = job_label(e.job)
            newest[name] = max(newest.get(name, 0.0), e.modified)
    verdicts = []
    for e in entries:
        if e.locked:
            verdicts.append(Verdict(e, False, "being written"))
        elif e.job is None:
            verdicts.append(Verdict(e, True, "no job: not written by a workflow decode job"))
        elif e.job not in configured:
            verdicts.append(Verdict(e, True, "not in config: its job is not in the config"))
        elif e.modified < newest[job_label(e.job)] and not is_current(e, environment):
            verdicts.append(Verdict(e, True, "superseded: a newer folder of its job exists, and its code "
                                             "or library versions are not the current ones"))
        else:
            verdicts.append(Verdict(e, False, "in use: its job is in the config"))
    return verdicts


# ---------------------------------------------------------------- presentation


def job_label(job: dict) -> str:
    """"<benchmark>/<variant>/<large>__<small>" or "<benchmark>/single/<model>"."""
    from fsgen.pipeline.paths import job_folder

    return f"{job.get('benchmark')}/{job_folder(job)}"


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def describe(verdict: Verdict, environment: dict) -> list[str]:
    """The lines `fsgen cache` prints for one folder."""
    e, parts = verdict.entry, verdict.entry.parts or {}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified))
    action = "REMOVE" if verdict.remove else "keep"
    lines = [f"{action:<7}{e.folder}  ({e.requests} requests, {human_size(e.size_bytes)}, {when}): {verdict.reason}"]
    if not parts:
        return lines + ["       no parts in key.json"]
    decode = parts.get("decode") or {}
    settings = ", ".join(f"{k} {v}" for k, v in sorted(decode.items()) if k != "method" and v is not None)
    models = ", ".join(f"{role} {m.get('path')} ({str(m.get('fingerprint'))[:12]})"
                       for role, m in sorted((parts.get("models") or {}).items()))
    versions = ", ".join(f"{k} {v}" for k, v in sorted((parts.get("versions") or {}).items()))

    def current(key):
        return "current" if parts.get(key) == environment.get(key) else "not current"

    lines += [
        f"       job      {job_label(e.job) if e.job else '-'}  (tasks {', '.join(parts.get('tasks') or []) or '-'})",
        f"       method   {decode.get('method')}  ({settings})",
        f"       models   {models}",
        f"       code     {str(parts.get('code'))[:12]} ({current('code')})",
        f"       versions {versions} ({current('versions')})",
    ]
    return lines


# ---------------------------------------------------------------- the command


def run_cache(args) -> None:
    from fsgen.fingerprint import decode_environment
    from fsgen.pipeline import jobs as pj
    from fsgen.pipeline import paths
    from fsgen.status import workflow_config

    workdir, config = workflow_config(args)
    cache_dir = workdir / paths.RESUME_DIR
    environment = decode_environment()
    verdicts = judge(list_caches(cache_dir), pj.decode_jobs(config) + pj.single_jobs(config), environment)
    leftovers = leftover_removals(cache_dir)
    for verdict in verdicts:
        print("\n".join(describe(verdict, environment)) + "\n")
    for folder in leftovers:
        print(f"REMOVE {folder}: an interrupted removal")
    doomed = [v.entry for v in verdicts if v.remove]
    size = human_size(sum(e.size_bytes for e in doomed))
    print(f"{len(verdicts)} cache folders in {cache_dir}; {len(doomed)} unused ({size})"
          + ("" if args.remove or not (doomed or leftovers) else "; run with --remove to remove them"))
    if not args.remove:
        return
    for entry in doomed:
        try:
            remove_cache(entry.folder)
            print(f"removed {entry.folder}")
        except (CacheLocked, FileNotFoundError) as err:  # started or removed meanwhile
            print(f"not removed: {err}")
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {folder}")
