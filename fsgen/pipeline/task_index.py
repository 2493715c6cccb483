"""lm-eval task names known at DAG build: a line scan of the task YAMLs, cached per lm-eval install.

Parsing lm-eval's ~14k YAMLs with its TaskManager takes ~14 s; this scan ~1 s (and nothing once
cached). The authoritative check with lm-eval's own TaskManager is in preflight.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fsgen import atomic


def _yaml_task_names(root: Path) -> set[str]:
    """Names defined by lm-eval task YAMLs under root (`task:`, `group:`, `tag:` values), read with
    a line scan: parsing ~14k YAMLs with lm-eval's TaskManager takes ~14 s, this ~1 s."""
    names = set()
    head = re.compile(r"^(task|group|tag):[ \t]*([^#\n]*)")
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith((".yaml", ".yml")):
                continue
            in_tag_list = False
            for line in open(os.path.join(folder, f), encoding="utf-8", errors="replace"):
                m = head.match(line)
                if m:
                    value = m.group(2).strip().strip("'\"")
                    in_tag_list = m.group(1) == "tag" and not value
                    if value.startswith("["):
                        names.update(v.strip().strip("'\"") for v in value.strip("[]").split(","))
                    elif value:
                        names.add(value)
                elif in_tag_list and line.lstrip().startswith("- "):
                    names.add(line.strip()[2:].strip().strip("'\""))
                elif line.strip() and not line.startswith((" ", "\t", "-")):
                    in_tag_list = False
    return names


def builtin_task_names(cache_dir: str | os.PathLike | None = ".snakemake/fsgen") -> set[str]:
    """lm-eval's built-in task names, cached per lm-eval install (version and location) in
    cache_dir (None = no cache): the scan reads ~14k files."""
    import json
    from importlib.metadata import version

    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    key = re.sub(r"[^A-Za-z0-9.]", "_", f"{version('lm_eval')}-{root}")
    cache = Path(cache_dir) / f"lm_eval_tasks-{key}.json" if cache_dir else None
    if cache and cache.exists():
        try:
            return set(json.loads(cache.read_text()))
        except ValueError:
            pass  # a torn write: rebuild
    names = _yaml_task_names(root)
    if cache:
        atomic.write_text(cache, json.dumps(sorted(names)))
    return names


def known_task_names(include_paths: list[str | os.PathLike] = (), cache_dir=".snakemake/fsgen") -> set[str]:
    """Task/group/tag names of lm-eval's built-in tasks plus those under include_paths."""
    names = builtin_task_names(cache_dir)
    for p in include_paths:
        if Path(p).is_dir():
            names |= _yaml_task_names(Path(p))
    return names
