"""python -m fsgen.demo: build the demo data, tokenizer and family outside Snakemake, and check it.

    python -m fsgen.demo data OUT_DIR [--n-train 20000 --n-test 150 --n-tuned 4000 --seed 0]
    python -m fsgen.demo tokenizer TRAIN_JSONL OUT_DIR
    python -m fsgen.demo train NAME --train T.jsonl --tuned-train TT.jsonl --tokenizer DIR --out DIR [--base DIR]
    python -m fsgen.demo check MODELS_DIR TEST_JSONL [--names arith-xs,arith-s,...] [--limit 150]
"""

from __future__ import annotations

import argparse
import json
import logging


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
    from fsgen.demo.evaluate import check_family
    from fsgen.demo.family import train_member

    if args.command == "data":
        print(arith.write_splits(args.out_dir, args.n_train, args.n_test, args.n_tuned, args.seed))
    elif args.command == "tokenizer":
        tok = train.train_tokenizer(arith.read_jsonl(args.train), args.out_dir)
        print(f"{len(tok)} tokens -> {args.out_dir}")
    elif args.command == "train":
        print(json.dumps(train_member(args.name, args.train, args.tuned_train, args.tokenizer, args.out, args.base,
                                   args.seed, args.threads), indent=1))
    elif args.command == "check":
        check_family(args.models_dir, args.test, args.names.split(","), args.limit, args.proxy_large)


if __name__ == "__main__":
    main()
