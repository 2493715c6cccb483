"""The trace schema, its Parquet round trip with metadata, and the trace/generations consistency
check, on hand-built frames. No models: the mutation-testing selection of `fsgen/trace.py`
(docs/testing.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fsgen.trace import (
    ADDED_FIELDS,
    COLUMNS,
    METADATA_KEY,
    SCHEMA_FIELDS,
    TOPK_FIELDS,
    TraceMismatch,
    arrow_schema,
    check_trace_matches,
    empty_trace,
    read_trace,
    records_to_frame,
    to_table,
    write_trace,
)

RECORDS = [
    {"position": 0, "token_id": 7, "s1_token_id": 7, "s2_called": True, "intervened": False, "s1_top1_prob": 0.75,
     "s1_top2_prob": 0.125, "s1_entropy": 0.5, "s2_top1_prob": 0.875, "s2_entropy": 0.25, "round": 0,
     "drafted": True},
    {"position": 1, "token_id": 9, "s1_token_id": 4, "s2_called": False, "intervened": True, "s1_top1_prob": 0.5,
     "s1_top2_prob": 0.25, "s1_entropy": 1.0},
]


def test_schema_order_and_topk_columns():
    assert arrow_schema().names == COLUMNS == list(SCHEMA_FIELDS)
    assert arrow_schema(with_topk=True).names == COLUMNS + list(TOPK_FIELDS)
    assert all(field.nullable for field in arrow_schema(True))
    assert arrow_schema().field("position").type == pa.int32()
    empty = empty_trace(with_topk=True)
    assert list(empty.columns) == COLUMNS + list(TOPK_FIELDS) and len(empty) == 0
    assert list(empty_trace().columns) == COLUMNS


def test_records_to_frame_fills_the_nullable_columns():
    frame = records_to_frame(12, RECORDS)
    assert list(frame.columns) == COLUMNS
    assert frame["request_id"].tolist() == [12, 12]
    assert frame["drafted"].tolist() == [True, False]  # missing: False, not null
    assert frame["s2_top1_prob"].isna().tolist() == [False, True]
    assert frame["round"].isna().tolist() == [False, True] and frame["s1_base_token_id"].isna().all()
    assert str(frame["position"].dtype) == "int32" and str(frame["s1_top1_prob"].dtype) == "float32"
    with_topk = records_to_frame(3, [{**RECORDS[0], "s1_topk_probs": [0.75, 0.125], "s1_topk_ids": [7, 2]}], True)
    assert with_topk["s1_topk_ids"].iloc[0].tolist() == [7, 2]
    assert list(records_to_frame(3, [], with_topk=True).columns) == COLUMNS + list(TOPK_FIELDS)
    assert len(records_to_frame(3, [])) == 0


def test_to_table_casts_names_missing_columns_and_fills_later_additions():
    frame = records_to_frame(0, RECORDS)
    older = frame.drop(columns=list(ADDED_FIELDS))  # a trace written before s1_base_token_id existed
    table = to_table(older)
    assert table.schema.names == COLUMNS and table.column("s1_base_token_id").null_count == 2
    assert table.schema.metadata is None
    with pytest.raises(ValueError, match=r"trace is missing columns: \['s1_entropy'\]"):
        to_table(frame.drop(columns=["s1_entropy"]))
    meta = {"method": "oracle", "params": {"beta": 0.3}, "model": Path("/models/x")}  # not JSON: written as str
    tagged = to_table(frame, meta)
    assert json.loads(tagged.schema.metadata[METADATA_KEY]) == {**meta, "model": "/models/x"}
    assert to_table(frame.assign(extra=1)).schema.names == COLUMNS  # other columns are not written
    # a filtered frame's index (rows 3 and 7 kept) is not written as a column
    assert to_table(frame.set_axis([3, 7])).schema.names == COLUMNS
    assert to_table(frame.iloc[1:]).column("token_id").to_pylist() == [9]


def test_write_and_read_round_trip(tmp_path):
    frame = records_to_frame(5, [{**r, "s1_topk_probs": [0.5], "s1_topk_ids": [1]} for r in RECORDS], True)
    path = tmp_path / "sub" / "trace.parquet"
    path.parent.mkdir()
    write_trace(frame, path, {"method": "proxy", "seed": 3})
    read, meta = read_trace(path)
    assert meta == {"method": "proxy", "seed": 3}
    pd.testing.assert_frame_equal(read, frame)
    assert [p.name for p in path.parent.iterdir()] == ["trace.parquet"]  # no temporary left behind
    pq.write_table(pa.table({"request_id": [1]}), tmp_path / "bare.parquet")
    assert read_trace(tmp_path / "bare.parquet")[1] == {}


def generations(lengths: dict[int, int]) -> list[dict]:
    return [{"request_id": rid, "token_ids": list(range(n))} for rid, n in lengths.items()]


def trace_of(lengths: dict[int, int]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [rid for rid, n in lengths.items() for _ in range(n)]})


def test_consistency_check_accepts_exact_rows_and_empty_generations():
    check_trace_matches(generations({0: 2, 3: 1, 7: 0}), trace_of({3: 1, 0: 2}))
    check_trace_matches(generations({4: 0}), pd.DataFrame({"request_id": []}))
    check_trace_matches([], pd.DataFrame({"request_id": []}))
    check_trace_matches(generations({1: 0}), pd.DataFrame())  # no rows: the columns do not matter


@pytest.mark.parametrize("lengths, rows, message", [
    ({0: 2, 1: 1}, {0: 2}, "1 requests' trace rows disagree with their token_ids, e.g. request_id 1: 0 trace rows "
                           "for 1 generated tokens"),
    ({0: 2, 1: 3}, {0: 3, 1: 2}, "2 requests' trace rows disagree with their token_ids, e.g. request_id 0: 3 trace "
                                 "rows for 2 generated tokens"),
    ({0: 1}, {0: 1, 5: 2, 9: 1}, "trace has rows for request_ids [5, 9] that have no generation"),
    ({0: 1}, {0: 1, **{rid: 1 for rid in range(10, 22)}}, "trace has rows for request_ids "
                                                          "[10, 11, 12, 13, 14, 15, 16, 17, 18, 19] that"),
    ({2: 0}, {2: 1}, "request_id 2: 1 trace rows for 0 generated tokens"),
])
def test_consistency_check_names_the_first_disagreement(lengths, rows, message):
    with pytest.raises(TraceMismatch) as err:
        check_trace_matches(generations(lengths), trace_of(rows))
    assert message in str(err.value)


def test_consistency_check_refuses_duplicate_generations():
    doubled = generations({0: 1, 1: 1}) + generations({1: 1})
    with pytest.raises(TraceMismatch, match="^1 duplicate request_ids among the generations$"):
        check_trace_matches(doubled, trace_of({0: 1, 1: 1}))
    assert issubclass(TraceMismatch, ValueError)
