"""Outputs appear complete or not at all: write to a temporary name, then rename into place.

The one home of atomic writes: text, JSON and JSONL writers for every output fsgen makes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success rename it to `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data, *, indent: int = 2, default=None, finite: bool = False) -> None:
    """JSON text (UTF-8, a trailing newline), atomically. `default` converts what json cannot;
    `finite`: NaN and ±inf become null, so the file is strict JSON."""
    if finite:
        data = _nan_to_none(json.loads(json.dumps(data, default=default)))
    write_text(path, json.dumps(data, indent=indent, default=default, ensure_ascii=False) + "\n")


def _nan_to_none(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def write_jsonl(path: str | os.PathLike, rows, *, default=None) -> None:
    """One JSON object per line, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=default, ensure_ascii=False) + "\n")
