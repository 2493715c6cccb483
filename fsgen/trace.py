"""The per-token trace: schema, and atomic Parquet I/O with run metadata."""

from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fsgen.atomic import atomic_path

METADATA_KEY = b"fsgen"

# column -> arrow type; the order is the file's column order
SCHEMA_FIELDS: dict[str, pa.DataType] = {
    "request_id": pa.int64(),
    "position": pa.int32(),
    "token_id": pa.int64(),
    "s1_token_id": pa.int64(),
    "s2_called": pa.bool_(),
    "intervened": pa.bool_(),
    "s1_top1_prob": pa.float32(),
    "s1_top2_prob": pa.float32(),
    "s1_entropy": pa.float32(),
    "s2_top1_prob": pa.float32(),  # null when System 2 was not consulted
    "s2_entropy": pa.float32(),  # null when System 2 was not consulted
    "round": pa.int32(),  # speculative round, null for other methods
    "drafted": pa.bool_(),  # speculative: an accepted draft token
    # proxy: the base small model's argmax where System 2's side (large + base small) was read;
    # null otherwise (the FS-GEN authors count a proxy intervention against it)
    "s1_base_token_id": pa.int64(),
}
# Nullable columns added to the schema after traces were first written: a trace without them
# (an older fsgen's, or one built by hand) reads and writes them as null.
ADDED_FIELDS = ("s1_base_token_id",)
TOPK_FIELDS: dict[str, pa.DataType] = {
    "s1_topk_probs": pa.list_(pa.float32()),
    "s1_topk_ids": pa.list_(pa.int64()),
}
COLUMNS = list(SCHEMA_FIELDS)


def arrow_schema(with_topk: bool = False) -> pa.Schema:
    fields = dict(SCHEMA_FIELDS, **(TOPK_FIELDS if with_topk else {}))
    return pa.schema([pa.field(name, dtype, nullable=True) for name, dtype in fields.items()])


def empty_trace(with_topk: bool = False) -> pd.DataFrame:
    return arrow_schema(with_topk).empty_table().to_pandas()


def to_table(df: pd.DataFrame, metadata: dict | None = None) -> pa.Table:
    """Cast a trace DataFrame to the trace schema (missing columns are an error, except the
    later additions of ADDED_FIELDS, written as null)."""
    with_topk = "s1_topk_probs" in df.columns
    schema = arrow_schema(with_topk)
    absent = [name for name in ADDED_FIELDS if name not in df.columns]
    if absent:
        df = df.assign(**{name: None for name in absent})
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"trace is missing columns: {missing}")
    table = pa.Table.from_pandas(df[schema.names], preserve_index=False).cast(schema)
    if metadata is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, default=str).encode()})
    return table


def write_trace(df: pd.DataFrame, path: str | os.PathLike, metadata: dict) -> None:
    """Write atomically: a temporary file in the same folder, then rename into place."""
    with atomic_path(path) as tmp:
        pq.write_table(to_table(df, metadata), tmp)


def read_trace(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return table.to_pandas(), (json.loads(raw) if raw else {})


def records_to_frame(request_id: int, records: list[dict], with_topk: bool = False) -> pd.DataFrame:
    """One request's trace rows from per-position dicts (keys: the schema columns but request_id).

    Missing nullable columns (`s2_top1_prob`, `s2_entropy`, `round`, `s1_base_token_id`) are
    null; `drafted` False.
    Column dtypes follow the schema (via an Arrow round trip), so frames concatenate cleanly.
    """
    schema = arrow_schema(with_topk)
    if not records:
        return schema.empty_table().to_pandas()
    columns = {name: [r.get(name) for r in records] for name in schema.names if name != "request_id"}
    columns["request_id"] = [request_id] * len(records)
    columns["drafted"] = [bool(v) for v in columns["drafted"]]
    return pa.Table.from_pydict({n: columns[n] for n in schema.names}, schema=schema).to_pandas()


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
