"""python -m fsgen.demo: build the demo data, tokenizer and family outside Snakemake, and check it.

    python -m fsgen.demo data OUT_DIR [--n-train 20000 --n-test 150 --n-tuned 4000 --seed 0]
    python -m fsgen.demo tokenizer TRAIN_JSONL OUT_DIR
    python -m fsgen.demo train NAME --train T.jsonl --tuned-train TT.jsonl --tokenizer DIR --out DIR [--base DIR]
    python -m fsgen.demo check MODELS_DIR TEST_JSONL [--names arith-xs,arith-s,...] [--limit 150]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time

import torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsgen.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data")
    p.add_argument("out_dir"); p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=150); p.add_argument("--n-tuned", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("tokenizer")
    p.add_argument("train"); p.add_argument("out_dir")
    p = sub.add_parser("train")
    p.add_argument("name"); p.add_argument("--train", required=True); p.add_argument("--tuned-train", required=True)
    p.add_argument("--tokenizer", required=True); p.add_argument("--out", required=True)
    p.add_argument("--base", default=None, help="base model folder (tuned variants)")
    p.add_argument("--seed", type=int, default=0); p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("check", help="greedy accuracy per model and oracle frequency per pair")
    p.add_argument("models_dir"); p.add_argument("test")
    p.add_argument("--names", default="arith-xs,arith-s,arith-m,arith-l"); p.add_argument("--limit", type=int, default=150)
    p.add_argument("--proxy-large", default="arith-l", help="large model for the proxy check ('' = skip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from fsgen.demo import arith, train
    if args.command == "data":
        print(arith.write_splits(args.out_dir, args.n_train, args.n_test, args.n_tuned, args.seed))
    elif args.command == "tokenizer":
        tok = train.train_tokenizer(arith.read_jsonl(args.train), args.out_dir)
        print(f"{len(tok)} tokens -> {args.out_dir}")
    elif args.command == "train":
        print(json.dumps(train_one(args.name, args.train, args.tuned_train, args.tokenizer, args.out, args.base,
                                   args.seed, args.threads), indent=1))
    elif args.command == "check":
        check(args.models_dir, args.test, args.names.split(","), args.limit, args.proxy_large)


def train_one(name, train_jsonl, tuned_jsonl, tokenizer_dir, out_dir, base_dir=None, seed=0, threads=1,
              progress=True) -> dict:
    """Train family member `name` (a tuned variant when its spec is a TunedSpec); returns its sidecar."""
    from fsgen.demo import family, train
    spec = family.spec_for(name, base=None if base_dir is None else str(base_dir))
    if isinstance(spec, train.TunedSpec):
        if base_dir is None:
            raise ValueError(f"{name} is a tuned variant of {spec.base}: its base model folder is needed")
        return train.finetune_tuned(spec, base_dir, tuned_jsonl, out_dir, seed=seed, name=name, threads=threads,
                                    progress=progress)
    return train.train_model(spec, train_jsonl, tokenizer_dir, out_dir, seed=seed, name=name, threads=threads,
                             progress=progress)


def check(models_dir, test_jsonl, names, limit=150, proxy_large="arith-l") -> dict:
    """Print (and return) accuracy per model, oracle frequency per pair, proxy style/accuracy."""
    from pathlib import Path
    from transformers import LlamaForCausalLM
    from fsgen.demo.arith import read_jsonl
    from fsgen.demo.evaluate import accuracy, oracle_frequency, proxy_accuracy
    from fsgen.models import load_tokenizer
    torch.set_num_threads(1)
    test = read_jsonl(test_jsonl)[:limit]
    load = lambda n: LlamaForCausalLM.from_pretrained(str(Path(models_dir) / n)).eval()
    tok = load_tokenizer(str(Path(models_dir) / names[0]))
    models = {n: load(n) for n in names}
    report = {"accuracy": {}, "oracle_frequency": {}, "proxy": {}}
    for n, m in models.items():
        t = time.perf_counter()
        acc = accuracy(m, tok, test)
        report["accuracy"][n] = {k: acc[k] for k in ("strict", "flexible", "tuned_style", "style_rate")}
        print(n, report["accuracy"][n], f"({time.perf_counter() - t:.0f}s)", acc["samples"][0], flush=True)
    for small, large in itertools.combinations(names, 2):
        f = oracle_frequency(models[large], models[small], tok, test)
        report["oracle_frequency"][f"{large}__{small}"] = round(f, 4)
        print(f"oracle {large}__{small}: {f:.4f}", flush=True)
    if proxy_large:
        for small in names:
            tuned_dir = Path(models_dir) / f"{small}-tuned"
            if small == proxy_large or not tuned_dir.exists():
                continue
            tuned = load(f"{small}-tuned")
            own = accuracy(tuned, tok, test)
            px = proxy_accuracy(models[proxy_large], models[small], tuned, tok, test)
            report["proxy"][f"{proxy_large}__{small}"] = {
                "tuned_small": {k: own[k] for k in ("strict", "flexible", "tuned_style", "style_rate")},
                "proxy": {k: px[k] for k in ("strict", "flexible", "tuned_style", "style_rate")}}
            print(f"proxy {proxy_large}__{small}:", report["proxy"][f"{proxy_large}__{small}"], px["samples"][0], flush=True)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
