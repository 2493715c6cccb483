"""bench/grid_cost.py: disk and GPU-hours of the paper grid come from config/paper.yaml, the
placement planner and the run-time model, one row per decode job of the workflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fsgen.pipeline import jobs as pj

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import grid_cost  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_paper_grid_cost_covers_every_job(tmp_path, capsys):
    grid_cost.main(["--out", str(tmp_path / "rows.json"), "--gpu", "h100-80gb"])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "rows.json").read_text())
    config = grid_cost.load_config(ROOT / "config" / "paper.yaml")
    jobs = pj.decode_jobs(config) + pj.single_jobs(config)
    assert len(result["jobs"]) == len(jobs) and len(jobs) > 300
    for row in result["jobs"]:
        bench = config["benchmarks"][row["benchmark"]]
        assert 1 <= row["gpus"] <= 8 and 1 <= row["batch_size"] <= bench["batch_size"]
        assert row["gpu_hours"] == pytest.approx(row["gpus"] * row["hours"])
        assert 0 < row["runtime_min"] <= 24 * 60
        assert row["documents"] == min(bench["limit"], grid_cost.PROMPT_TOKENS[row["benchmark"]][0])
    proxy_72_32 = [r for r in result["jobs"] if r.get("variant") == "proxy" and r["large"] == "Qwen1.5-72B"
                   and r["small"] == "Qwen1.5-32B"]
    # one per benchmark (MT-Bench's with the base pair too); 3 models, 255.7 GiB of weights: more
    # than 3 cards of 80 GiB hold (72.1 GiB usable each)
    assert len(proxy_72_32) == 4 and all(r["gpus"] >= 4 for r in proxy_72_32)
    assert sorted(d["model"] for d in result["disk"]) == sorted(pj.hub_models(config))
    total_gb = sum(d["gb"] for d in result["disk"])
    assert f"Disk (bfloat16 weights): {total_gb:.0f} GB for 14 models" in printed
    assert f"{sum(r['gpu_hours'] for r in result['jobs']):.0f} over {len(jobs)} decode jobs" in printed


def test_prompt_lengths_are_measured_from_rendered_prompts(tmp_path):
    question = "A farmer has 17 sheep and buys 5 more. How many sheep does he have now?"
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": question, "answer": "17 + 5 = 22\n#### 22"}) + "\n"
                    + json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n")
    config = grid_cost.load_config(ROOT / "config" / "paper.yaml")
    documents, mean, longest = grid_cost.measure_prompts(config, {"gsm8k": str(data)})["gsm8k"]
    assert documents == 2 and longest > mean
    assert mean > 8 * 40  # the 8-shot chain-of-thought examples come with every question
    assert longest - mean == pytest.approx((len(question) - len("What is 2 + 3?")) / 4 / 2, abs=1)
