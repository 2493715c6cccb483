"""Fingerprints: stable hashes of what determines a result (models' files, JSON-able settings).

`model_fingerprint` changes whenever a model's results could (its files, or the hub revision its
id resolves to); `sha256_json` hashes plain data with sorted keys; `code_digest` hashes the code
files a stage depends on (the same list its rule declares as inputs) and `library_versions` names
the libraries that compute a result. The resume cache's keys and the preflight stamp are built
from these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

SMALL_FILE_BYTES = 2 << 20  # files up to this size are hashed in full
EDGE_BYTES = 1 << 20  # larger files: their first and last MiB (plus name and size) are hashed


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`name` or `org/name`): it exists, or starts with
    '/', '.' or '~', or has more than one '/' (or the OS's own separator, on Windows)."""
    return (Path(path).expanduser().exists() or path.startswith(("/", ".", "~")) or path.count("/") > 1
            or (os.sep != "/" and os.sep in path))


def sha256_json(value) -> str:
    text = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def jsonable(value):
    """Turn dataclasses, paths, tuples and sets into plain JSON values (sets sorted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
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
            _FINGERPRINTS[stamp] = sha256_json({"kind": "folder", "files": files})
        return _FINGERPRINTS[stamp]
    revision = _hub_revision(path_or_id)
    if revision is None:
        log.warning("model %s is neither a folder nor in the local HF cache; its fingerprint "
                    "is its id only", path_or_id)
    return sha256_json({"kind": "hub", "id": path_or_id, "revision": revision or "unresolved"})


# ------------------------------------------------------------------------------------ code
PACKAGE = Path(__file__).resolve().parent
# The code that determines what a decode job writes (tokens, trace, generations): the engine
# package, the modules that feed it requests and write its outputs, and our lm-eval task files
# (prompts). The decode rules list these files as inputs, so an edit reruns the decode jobs.
DECODE_CODE = ("__init__.py", "decoding/*.py", "trace.py", "resume.py", "fingerprint.py", "atomic.py",
               "harness/__init__.py", "harness/lm.py", "harness/run.py", "harness/tasks.py",
               "harness/lm_eval_tasks/*/*.yaml", "harness/lm_eval_tasks/*/*.py")
# What determines a score: lm-eval's replay (and the chat rendering it repeats), the runner, the task
# setup and code execution.
SCORE_CODE = ("harness/replay.py", "harness/run.py", "harness/lm.py", "harness/code_eval.py", "harness/tasks.py",
              "harness/lm_eval_tasks/*/*.yaml", "harness/lm_eval_tasks/*/*.py", "sandbox.py")


def code_files(patterns: tuple[str, ...], package: Path = PACKAGE) -> list[Path]:
    """The files matching `patterns` (globs relative to the fsgen package folder `package`, by
    default the imported one), sorted."""
    return sorted({path for pattern in patterns for path in Path(package).glob(pattern)})


def code_digest(patterns: tuple[str, ...] = DECODE_CODE, package: Path = PACKAGE) -> str:
    """sha256 over the relative name and content of each file of `code_files(patterns, package)`:
    any edit, added or removed file among them changes it (a bare touch does not)."""
    files = [{"name": path.relative_to(package).as_posix(), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
             for path in code_files(patterns, package)]
    if not files:
        raise FileNotFoundError(f"no code files match {patterns} in {package}")
    return sha256_json(files)


# ------------------------------------------------------------------------------- libraries
# Distributions whose code computes a decode result (tokens, probabilities, lm-eval's prompts).
LIBRARIES = ("torch", "transformers", "lm_eval")


def library_versions() -> dict[str, str]:
    """Installed versions of fsgen and LIBRARIES, read from their distribution metadata (no
    import: `fsgen status` and `fsgen cache` stay light). fsgen run from a source tree without an
    installed distribution reports its `__version__`."""
    versions = {}
    for name in ("fsgen", *LIBRARIES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name != "fsgen":
                raise
            from fsgen import __version__

            versions[name] = __version__
    return versions


def decode_environment() -> dict:
    """The parts of a decode job's resume key that come from the running environment rather than
    from the job: the digest of the decoding code and the library versions. `fsgen status` and
    `fsgen cache` compare a cache folder's key.json with these."""
    return {"code": code_digest(DECODE_CODE, PACKAGE), "versions": library_versions()}
