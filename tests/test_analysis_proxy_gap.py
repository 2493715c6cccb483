"""Proxy tuning's gap share against the large model tuned directly (fsgen.analysis.proxy_gap),
on hand-made scored samples whose answer is worked out here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsgen.analysis.proxy_gap import gap_share_interval, proxy_gap_table

JOB = {"benchmark": "b", "variant": "proxy", "method": "proxy", "large": "L", "small": "S"}


def scored(path, values: dict[str, list[float]]):
    """scored_samples.jsonl: one row per document and filter, as lm-eval writes them."""
    rows = []
    for key, per_doc in values.items():
        name, flt = key.split(",")
        rows += [{"task": "t", "doc_id": d, "filter": flt, "metrics": [name], name: v} for d, v in enumerate(per_doc)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_share_of_the_gap_per_metric(tmp_path):
    # 8 documents: large 2/8, proxy 5/8, tuned 6/8 on the style metric -> (5 - 2) / (6 - 2) = 0.75
    large = {"exact_match,style": [1, 1, 0, 0, 0, 0, 0, 0], "exact_match,strict": [1, 0, 1, 0, 0, 0, 0, 0]}
    proxy = {"exact_match,style": [1, 1, 1, 1, 1, 0, 0, 0], "exact_match,strict": [1, 0, 1, 0, 0, 0, 0, 0]}
    tuned = {"exact_match,style": [1, 1, 1, 1, 1, 1, 0, 0], "exact_match,strict": [1, 0, 1, 0, 0, 0, 0, 0]}
    item = {"job": JOB, "tuned": "L-tuned", "large": scored(tmp_path / "l.jsonl", large),
            "proxy": scored(tmp_path / "p.jsonl", proxy), "tuned_samples": scored(tmp_path / "t.jsonl", tuned)}
    table = proxy_gap_table([item], n_boot=400, seed=1).set_index("metric")
    style = table.loc["exact_match,style"]
    assert (style["large_value"], style["proxy_value"], style["tuned_value"]) == (0.25, 0.625, 0.75)
    assert style["share"] == pytest.approx(0.75) and style["status"] == "ok"
    assert style["share_low"] <= 0.75 <= style["share_high"] and style["n_documents"] == 8
    strict = table.loc["exact_match,strict"]  # tuning changed nothing here: no gap to close
    assert np.isnan(strict["share"]) and strict["status"].startswith("no gap")


def test_paired_interval_is_the_bootstrap_of_the_same_documents():
    rng = np.random.default_rng(0)
    untuned = rng.integers(0, 2, 200).astype(float)
    tuned = np.maximum(untuned, rng.integers(0, 2, 200))  # tuning only fixes answers
    proxy = np.where(rng.random(200) < 0.5, tuned, untuned)  # proxy keeps about half of the fixes
    low, high = gap_share_interval(untuned, proxy, tuned, n_boot=2000, seed=3)
    # the same percentile interval written out: resample documents, recompute the three means
    idx = np.random.default_rng(3).integers(0, 200, size=(2000, 200))
    base, px, ref = (v[idx].mean(axis=1) for v in (untuned, proxy, tuned))
    shares = (px - base) / (ref - base)
    assert (low, high) == pytest.approx(tuple(np.percentile(shares, [2.5, 97.5])))
    point = (proxy.mean() - untuned.mean()) / (tuned.mean() - untuned.mean())
    assert low < point < high


def test_no_proxy_job_says_why():
    table = proxy_gap_table([])
    assert len(table) == 1 and "no proxy job" in table["status"].iloc[0]
