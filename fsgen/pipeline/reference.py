"""The published reference table under this config's model names (rule `reference`).

A reference CSV (config `reference`, e.g. config/reference/fsgen_paper_collaboration_frequency.csv)
names each pair by its base models, on every benchmark: the FS-GEN paper labels a pair by its
sizes. On a chat benchmark (`models: tuned`) the authors decoded with the -Chat models
(their logits_gen.sh), and so do we, so the published MT-Bench rows of oracle and contrastive
decoding belong to our -Chat pairs; proxy tuning keeps the base pair there
(`fsgen.pipeline.jobs.method_pair`). This module renames each reference row's models to the ones our
job of that method decodes that benchmark with, so that the analysis joins rows by model name on
every benchmark (`fsgen.analysis.tables.reference_comparison`).

A reference model name matches a config model when they are equal after taking the last path
component and lower-casing (`Qwen/Qwen1.5-7B` = `qwen1.5-7b`), the analysis' rule; rows of unknown
models, methods or benchmarks are kept as they are.
"""

from __future__ import annotations

from fsgen.decoding.methods import METHODS
from fsgen.pipeline.jobs import method_pair

NAME_COLUMNS = ("large_model", "small_model")


def name_key(name) -> str:
    """Model names compare by their last path component, case-insensitively."""
    return str(name).rstrip("/").split("/")[-1].lower()


def reference_pair(config: dict, method: str, benchmark: str, large: str, small: str) -> tuple[str, str]:
    """The (large, small) names of our job behind a reference row, or the row's own names when the
    config has no such method, benchmark or models."""
    by_key = {name_key(n): n for n in config["models"]}
    ours = by_key.get(name_key(large)), by_key.get(name_key(small))
    if method not in METHODS or benchmark not in config["benchmarks"] or None in ours:
        return large, small
    pair = method_pair(config, benchmark, METHODS[method], *ours)
    return (large, small) if None in pair else pair  # no tuned variant: no job of ours


def align_reference(config: dict, reference):
    """A copy of the reference DataFrame (columns method, benchmark, large_model, small_model, ...)
    with each row's model names those of our job (module docstring)."""
    aligned = reference.copy()
    pairs = [reference_pair(config, m, b, lg, sm) for m, b, lg, sm in
             reference[["method", "benchmark", *NAME_COLUMNS]].itertuples(index=False)]
    for index, column in enumerate(NAME_COLUMNS):
        aligned[column] = [pair[index] for pair in pairs]
    return aligned


def write_aligned_reference(config: dict, source, target) -> int:
    """Read the reference CSV `source`, write it aligned to `target` (atomically); rows renamed."""
    import pandas as pd

    from fsgen import atomic

    reference = pd.read_csv(source)
    aligned = align_reference(config, reference)
    atomic.write_text(target, aligned.to_csv(index=False))
    return int((aligned[list(NAME_COLUMNS)] != reference[list(NAME_COLUMNS)]).any(axis=1).sum())
