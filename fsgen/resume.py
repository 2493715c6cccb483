"""Per-job append-only cache of finished requests, so a killed decode job resumes.

Snakemake deletes a failed job's declared outputs, so finished requests live outside them, in
`<cache_dir>/<job key>/records.jsonl`. The job key is a hash of everything that determines the
results (for decode jobs `fsgen.decoding.resumable.decode_job_parts`: models and their file
hashes or revisions, method and parameters, router, task, code digest, library versions, the
job's identity); two different jobs therefore never share a folder, and `key.json` holds the
parts in readable form. Each record is one JSON line written with a single `write` + `fsync`:
after a kill it is either complete or a torn last line without its newline, which readers ignore
and the next writer cuts off before appending.

Folders: `list_caches` describes every folder (parts, request count, size, whether a process is
writing it); `remove_cache` removes one that nobody writes; `remove_job_caches` removes a
finished job's folders (the workflow's decode script calls it once the job's outputs exist).

    cache = ResumeCache(cache_dir, job_key(models=..., method=..., params=..., task=...))
    key = request_key(prompt, max_new_tokens=256, stop=["\\n\\n"])
    record = cache.get(key)
    if record is None:
        record = compute(prompt)
        cache.put(key, record)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fsgen import atomic
from fsgen.fingerprint import jsonable, sha256_json

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
KEY_FILE = "key.json"
LOCK_FILE = "lock"
REMOVING_PREFIX = ".removing-"  # a folder being removed is renamed to this first
HEX = frozenset("0123456789abcdef")


def job_key(**parts) -> str:
    """A stable sha256 of the JSON of everything that determines a job's results."""
    if not parts:
        raise ValueError("job_key needs the parts that determine the results")
    return sha256_json(parts)


def request_key(prompt: str, **generation_kwargs) -> str:
    """A stable sha256 of one request: its prompt and its generation arguments."""
    return sha256_json({"prompt": prompt, "generation_kwargs": generation_kwargs})


class CacheLocked(RuntimeError):
    """Another live process is writing the same job's cache."""


class ResumeCache:
    """Finished requests of one job: `get` before computing, `put` as soon as one finishes."""

    def __init__(self, cache_dir: str | os.PathLike, key: str, parts: dict | None = None):
        if not key or not set(key) <= HEX:
            raise ValueError(f"cache key must be a hex digest from job_key(), got {key!r}")
        self.key = key
        self.folder = Path(cache_dir) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / RECORDS_FILE
        if parts is not None and not (self.folder / KEY_FILE).exists():
            atomic.write_text(self.folder / KEY_FILE, json.dumps({"key": key, "parts": jsonable(parts)}, indent=2))
        self.records: dict[str, dict] = dict(_read_records(self.path))
        self.loaded = len(self.records)  # finished before this process started
        self.hits = 0  # get() answered from the cache
        self.misses = 0  # get() found nothing: the caller computes it
        self.puts = 0  # records written by this process
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, request_key: str) -> bool:
        return request_key in self.records

    def get(self, request_key: str) -> dict | None:
        record = self.records.get(request_key)
        if record is None:
            self.misses += 1
        else:
            self.hits += 1
        return record

    def put(self, request_key: str, record: dict) -> None:
        """Append one record as a single line, flushed and fsync'd before returning."""
        line = json.dumps({"request_key": request_key, "record": record}, ensure_ascii=False,
                          separators=(",", ":"))
        data = (line + "\n").encode("utf-8")
        fd = self._writer()
        written = os.write(fd, data)
        if written != len(data):  # a short write is a torn line: cut it off and refuse
            os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes); disk full?")
        os.fsync(fd)
        self.records[request_key] = json.loads(line)["record"]
        self.puts += 1

    def stats(self) -> dict[str, int]:
        return {"loaded": self.loaded, "hits": self.hits, "misses": self.misses, "puts": self.puts}

    def close(self) -> None:
        for attr in ("_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)  # closing the lock file releases the lock
                setattr(self, attr, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _writer(self) -> int:
        """Lock the job (one writer at a time), cut a torn last line, open for appending."""
        if self._fd is not None:
            return self._fd
        lock_fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise CacheLocked(f"another process is writing the resume cache {self.folder}; "
                              "is the same job running twice?") from None
        self._lock_fd = lock_fd
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.lseek(fd, 0, os.SEEK_END)
        keep = _complete_prefix_length(self.path) if size else 0
        if keep < size:
            log.warning("resume cache %s: dropping a torn last record (%d bytes)", self.path, size - keep)
            os.ftruncate(fd, keep)
            os.fsync(fd)
        self._fd = fd
        return fd


def _complete_prefix_length(path: Path) -> int:
    """Bytes up to and including the last newline."""
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


def _read_records(path: Path):
    """(request_key, record) of every complete line; a torn or garbled line is skipped."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                log.warning("resume cache %s: ignoring a torn last line %d", path, number)
                continue
            try:
                entry = json.loads(raw)
                yield entry["request_key"], entry["record"]
            except (ValueError, KeyError, TypeError):
                log.warning("resume cache %s: ignoring unreadable line %d", path, number)


# ---------------------------------------------------------------- folders of a cache directory


@dataclass
class CacheFolder:
    """One job's cache folder as found on disk."""

    folder: Path
    key: str
    parts: dict | None  # key.json's parts; None when key.json is missing or unreadable
    requests: int  # complete records
    size_bytes: int
    modified: float  # latest modification time of its files (seconds since the epoch)
    locked: bool  # a live process holds its writer lock

    @property
    def job(self) -> dict | None:
        """The workflow job's identity (benchmark, variant, large, small | model), if recorded."""
        job = (self.parts or {}).get("job")
        return job if isinstance(job, dict) else None


def count_records(path: str | os.PathLike) -> int:
    """Complete records (lines) of a records.jsonl; a torn last line does not count."""
    path = Path(path)
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def read_parts(folder: str | os.PathLike) -> dict | None:
    """The parts in a folder's key.json, or None (missing, unreadable, or without parts)."""
    try:
        parts = json.loads((Path(folder) / KEY_FILE).read_text(encoding="utf-8")).get("parts")
    except (OSError, ValueError, AttributeError):
        return None
    return parts if isinstance(parts, dict) else None


def lock_held(folder: str | os.PathLike) -> bool:
    """Whether a live process holds the folder's writer lock (ResumeCache writing it)."""
    lock = Path(folder) / LOCK_FILE
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock if we got it


def list_caches(cache_dir: str | os.PathLike) -> list[CacheFolder]:
    """Every job folder under `cache_dir` (folders named by a hex key), newest first."""
    root = Path(cache_dir)
    folders = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or not set(folder.name) <= HEX:
            continue
        files = [p for p in folder.iterdir() if p.is_file()]
        stats = [p.stat() for p in files]
        folders.append(CacheFolder(
            folder=folder, key=folder.name, parts=read_parts(folder), requests=count_records(folder / RECORDS_FILE),
            size_bytes=sum(st.st_size for st in stats), locked=lock_held(folder),
            modified=max([st.st_mtime for st in stats] + [folder.stat().st_mtime])))
    return sorted(folders, key=lambda f: -f.modified)


def leftover_removals(cache_dir: str | os.PathLike) -> list[Path]:
    """Folders whose removal was interrupted (renamed, not yet deleted)."""
    root = Path(cache_dir)
    return sorted(p for p in root.glob(REMOVING_PREFIX + "*") if p.is_dir()) if root.is_dir() else []


def remove_cache(folder: str | os.PathLike) -> None:
    """Remove a job's cache folder; CacheLocked while a process writes it.

    Holding the writer lock, the folder is first renamed (`.removing-<key>`, one atomic step: no
    reader ever sees half a folder under its key), then deleted.
    """
    folder = Path(folder)
    lock_fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheLocked(f"a process is writing the resume cache {folder}; not removed") from None
        doomed = folder.with_name(f"{REMOVING_PREFIX}{folder.name}.{os.getpid()}")
        folder.rename(doomed)
    finally:
        os.close(lock_fd)
    shutil.rmtree(doomed)


def remove_job_caches(cache_dir: str | os.PathLike, job: dict) -> list[Path]:
    """Remove every folder whose key.json names this workflow job (any code, library versions,
    models or settings): called when the job has succeeded, so its outputs hold what the cache
    held. A folder being written is left (logged). Returns the removed folders."""
    wanted = jsonable(job)
    removed = []
    for entry in list_caches(cache_dir):
        if entry.job != wanted:
            continue
        try:
            remove_cache(entry.folder)
        except CacheLocked as err:
            log.warning("%s", err)
            continue
        removed.append(entry.folder)
    return removed
