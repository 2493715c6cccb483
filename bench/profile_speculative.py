"""Where speculative decoding spends its time: model forwards vs bookkeeping, batch 1 vs 8.

    python bench/profile_speculative.py [--hidden 256]

Builds the benchmark's pair (bench/pairs.py), wraps `CachedModel.forward` with a timer, and
prints per batch size: wall time, time inside forwards, rounds per request, and the costliest
forward shapes (model, rows, block width).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fsgen.decoding.kvcache as runner  # noqa: E402
from bench.bench_engine import PROMPTS  # noqa: E402
from bench.pairs import build_related_pair  # noqa: E402
from fsgen.decoding.config import DecodeConfig  # noqa: E402
from fsgen.decoding.engine import decode, load_systems  # noqa: E402
from fsgen.testing import build_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fsgen-prof-"))
    tokenizer = build_tokenizer(root / "tokenizer")
    paths = build_related_pair(root, tokenizer, args.hidden, args.layers, 1, 0.05, num_heads=8)
    systems = load_systems(small=str(paths["small"]), large=str(paths["large"]), method="speculative")
    timings: dict[tuple, list[float]] = {}
    forward = runner.CachedModel.forward

    def timed_forward(self, tokens, valid):
        start = time.perf_counter()
        out = forward(self, tokens, valid)
        key = ("large" if self.model is systems.large else "small", tokens.shape[0], tokens.shape[1])
        timings.setdefault(key, []).append(time.perf_counter() - start)
        return out

    runner.CachedModel.forward = timed_forward
    for batch_size in (1, 8):
        config = DecodeConfig(method="speculative", batch_size=batch_size, max_new_tokens=args.new_tokens, progress=False)
        decode(systems, PROMPTS, config)  # warm-up
        timings.clear()
        start = time.perf_counter()
        result = decode(systems, PROMPTS, config)
        wall = time.perf_counter() - start
        inside = sum(sum(v) for v in timings.values())
        rounds = result.trace.groupby("request_id")["round"].max().add(1).tolist()
        print(f"batch {batch_size}: wall {wall:.2f} s, in forwards {inside:.2f} s ({100 * inside / wall:.0f}%), "
              f"rounds per request {rounds}")
        for key, values in sorted(timings.items(), key=lambda kv: -sum(kv[1]))[:5]:
            print(f"    {key}: {len(values)} calls, {sum(values):.3f} s, {1000 * sum(values) / len(values):.2f} ms/call")


if __name__ == "__main__":
    main()
