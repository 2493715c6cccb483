"""Per-job append-only cache of finished requests, so a killed decode job resumes.

Snakemake deletes a failed job's declared outputs, so finished requests live outside them, in
`<cache_dir>/<job key>/records.jsonl`. The job key is a hash of everything that determines the
results (models and their file hashes or revisions, method and parameters, router, task); two
different jobs therefore never share a folder. Each record is one JSON line written with a single
`write` + `fsync`: after a kill it is either complete or a torn last line without its newline,
which readers ignore and the next writer cuts off before appending.

    cache = ResumeCache(cache_dir, job_key(models=..., method=..., params=..., task=...))
    key = request_key(prompt, max_new_tokens=256, stop=["\\n\\n"])
    record = cache.get(key)
    if record is None:
        record = compute(prompt)
        cache.put(key, record)
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

from fsgen import atomic

log = logging.getLogger(__name__)

SMALL_FILE_BYTES = 2 << 20  # files up to this size are hashed in full
EDGE_BYTES = 1 << 20  # larger files: their first and last MiB (plus name and size) are hashed
RECORDS_FILE = "records.jsonl"
KEY_FILE = "key.json"
LOCK_FILE = "lock"


def _sha256_json(value) -> str:
    text = json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value):
    """Turn dataclasses, paths, tuples and sets into plain JSON values (sets sorted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot put {type(value).__name__} value {value!r} into a cache key")


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SMALL_FILE_BYTES:
            digest.update(f.read())
        else:
            digest.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            digest.update(f.read(EDGE_BYTES))
    return digest.hexdigest()


def _hub_revision(repo_id: str) -> str | None:
    """The commit the local HF cache resolves `repo_id`'s main ref to, if it is cached."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - installed with transformers
        return None
    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


_FINGERPRINTS: dict[tuple, str] = {}  # folder stat signature -> fingerprint, per process


def model_fingerprint(path_or_id: str) -> str:
    """A hash that changes whenever the model's results could.

    Local folder: sha256 over config.json and every other file's relative name, size and content
    hash (in full up to 2 MiB, else the first and last MiB) - weights, tokenizer, generation
    config. Hub id: the id and the commit its main ref points to in the local HF cache (the
    literal "unresolved" when it is not cached, so a later download changes the key).
    """
    folder = Path(path_or_id)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model folder {folder} has no config.json")
        paths = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            if not any(part.startswith(".") for part in Path(rel).parts):
                paths.append((rel, path))  # hidden/temporary files (.cache, .tmp-...) do not count
        # a file's (name, size, mtime) unchanged since the last call in this process: same hash
        stamp = (str(folder.resolve()), tuple((rel, p.stat().st_size, p.stat().st_mtime_ns) for rel, p in paths))
        if stamp not in _FINGERPRINTS:
            files = [{"name": rel, "size": p.stat().st_size, "sha256": _file_digest(p)} for rel, p in paths]
            _FINGERPRINTS[stamp] = _sha256_json({"kind": "folder", "files": files})
        return _FINGERPRINTS[stamp]
    revision = _hub_revision(path_or_id)
    if revision is None:
        log.warning("model %s is neither a folder nor in the local HF cache; its fingerprint "
                    "is its id only", path_or_id)
    return _sha256_json({"kind": "hub", "id": path_or_id, "revision": revision or "unresolved"})


def job_key(**parts) -> str:
    """A stable sha256 of the JSON of everything that determines a job's results."""
    if not parts:
        raise ValueError("job_key needs the parts that determine the results")
    return _sha256_json(parts)


def request_key(prompt: str, **generation_kwargs) -> str:
    """A stable sha256 of one request: its prompt and its generation arguments."""
    return _sha256_json({"prompt": prompt, "generation_kwargs": generation_kwargs})


class CacheLocked(RuntimeError):
    """Another live process is writing the same job's cache."""


class ResumeCache:
    """Finished requests of one job: `get` before computing, `put` as soon as one finishes."""

    def __init__(self, cache_dir: str | os.PathLike, key: str, parts: dict | None = None):
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a hex digest from job_key(), got {key!r}")
        self.key = key
        self.folder = Path(cache_dir) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / RECORDS_FILE
        if parts is not None and not (self.folder / KEY_FILE).exists():
            _write_atomic(self.folder / KEY_FILE, json.dumps({"key": key, "parts": _jsonable(parts)}, indent=2))
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


def _write_atomic(path: Path, text: str) -> None:
    atomic.write_text(path, text)


# ---------------------------------------------------------------- a resumable engine.decode


class TraceMismatch(ValueError):
    """A trace disagrees with the generations it was written with."""


def check_trace_matches(generations: list[dict], trace) -> None:
    """Raise TraceMismatch unless the trace has exactly len(token_ids) rows per generation.

    Call it in the job that writes both (before writing), so a bad output fails its own job.
    """
    expected = {int(g["request_id"]): len(g["token_ids"]) for g in generations}
    if len(expected) != len(generations):
        raise TraceMismatch(f"{len(generations) - len(expected)} duplicate request_ids among the generations")
    counts = trace["request_id"].value_counts().to_dict() if len(trace) else {}
    counts = {int(k): int(v) for k, v in counts.items()}
    extra = sorted(set(counts) - set(expected))
    if extra:
        raise TraceMismatch(f"trace has rows for request_ids {extra[:10]} that have no generation")
    wrong = [(rid, n, counts.get(rid, 0)) for rid, n in sorted(expected.items()) if counts.get(rid, 0) != n]
    if wrong:
        rid, n, got = wrong[0]
        raise TraceMismatch(f"{len(wrong)} requests' trace rows disagree with their token_ids, e.g. "
                            f"request_id {rid}: {got} trace rows for {n} generated tokens")


def decode_request_key(prompt: str, request_id: int, config) -> str:
    """The cache key of one engine request: prompt, id (sampling seeds use it), stops, budget."""
    return request_key(prompt, request_id=int(request_id), stop=list(config.stop),
                       max_new_tokens=int(config.max_new_tokens))


def decode_job_key(systems, config, **job) -> str:
    """job_key over the models' fingerprints and the DecodeConfig, without batch_size/progress.

    Batch size is left out on purpose: rows do not depend on it (the engine's batch-equivalence
    guarantee), so an out-of-memory retry with a smaller batch reuses every finished request.
    `job` adds what else defines the job (benchmark, task, few-shot setup, ...).
    """
    params = {k: v for k, v in _jsonable(config).items() if k not in ("batch_size", "progress")}
    models = {role: model_fingerprint(path) for role, path in sorted(systems.names.items())}
    return job_key(models=models, decode=params, **job)


def _to_record(generation: dict, rows) -> dict:
    """JSON-safe record of one finished request (trace rows without request_id)."""
    import pyarrow as pa

    rows = rows.drop(columns=["request_id"]).reset_index(drop=True)
    return {"text": generation["text"], "token_ids": [int(t) for t in generation["token_ids"]],
            "trace": pa.Table.from_pandas(rows, preserve_index=False).to_pylist()}


def _from_record(record: dict, prompt: str, request_id: int, with_topk: bool):
    """(generation, trace rows) of a cached request, typed by the trace schema."""
    import pyarrow as pa

    from fsgen.trace import arrow_schema

    generation = {"request_id": request_id, "prompt": prompt, "text": record["text"],
                  "token_ids": list(record["token_ids"])}
    schema = arrow_schema(with_topk)
    rows = [{"request_id": request_id, **row} for row in record["trace"]]
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    return generation, table.to_pandas()


def decode_resumable(systems, prompts: list[str], config, cache: ResumeCache,
                     request_ids: list[int] | None = None, decode_fn=None):
    """`fsgen.engine.decode` that skips requests already in `cache` and caches each new one.

    Every request's output - fresh or cached - is assembled from its cache record. A resumed run's
    generations (tokens, text) and every decision in its trace equal an uninterrupted run's; the
    recorded float32 probabilities/entropies of requests decoded in other batches than before
    may differ in the last bits (1e-5, the engine's batch guarantee). `decode_fn` (default
    engine.decode) is for tests that count engine calls; `cache.stats()` says how many were reused.
    """
    import pandas as pd

    from fsgen import engine
    from fsgen.trace import empty_trace

    decode_fn = decode_fn or engine.decode
    ids = list(range(len(prompts))) if request_ids is None else [int(r) for r in request_ids]
    if len(ids) != len(prompts):
        raise ValueError(f"{len(ids)} request_ids for {len(prompts)} prompts")
    keys = [decode_request_key(p, rid, config) for p, rid in zip(prompts, ids)]
    todo = [i for i, key in enumerate(keys) if cache.get(key) is None]
    key_of_id = {ids[i]: keys[i] for i in todo}
    if todo:
        def on_result(generation: dict, rows) -> None:
            cache.put(key_of_id[int(generation["request_id"])], _to_record(generation, rows))

        decode_fn(systems, [prompts[i] for i in todo], config, request_ids=[ids[i] for i in todo],
                  on_result=on_result)
    missing = [ids[i] for i, key in enumerate(keys) if key not in cache]
    if missing:
        raise RuntimeError(f"decode finished without results for request_ids {missing[:10]} (on_result not called?)")
    log.info("resume cache %s: %d of %d requests reused, %d decoded", cache.folder,
             len(prompts) - len(todo), len(prompts), len(todo))
    pairs = [_from_record(cache.records[key], p, rid, config.top_k > 0) for key, p, rid in zip(keys, prompts, ids)]
    generations = [g for g, _ in pairs]
    frames = [f for _, f in pairs if len(f)]
    trace = pd.concat(frames, ignore_index=True) if frames else empty_trace(config.top_k > 0)
    trace = trace.sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    check_trace_matches(generations, trace)
    return engine.DecodeResult(generations=generations, trace=trace, metadata=engine.run_metadata(systems, config))
