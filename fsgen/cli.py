"""`fsgen decode ...` and `fsgen train-router ...` (also `python -m fsgen ...`).

Bad input exits with status 2 and a one-line reason on stderr (`fsgen: error: ...`), before
any model is loaded where that is possible. Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsgen.atomic import write_jsonl
from fsgen.decoding.config import DEFAULTS
from fsgen.decoding.methods import METHODS, get_method


class CliError(Exception):
    """Bad input: reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; a pipeline log wants one line
        raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fsgen", description="Collaborative decoding of a small and a large language model.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    d = sub.add_parser("decode", help="decode a prompts file with one method")
    roles = sorted({role for m in METHODS.values() for role in m.roles})
    for role in roles:  # every model role a registered method uses: --small, --large, --model, ...
        d.add_argument(f"--{role.replace('_', '-')}", dest=role, help=f"the {role} model (folder or hub id)")
    d.add_argument("--method", required=True, choices=list(METHODS))
    # decode settings default to None: DecodeConfig (and the method's registry entry) fill them in
    d.add_argument("--router", help=f"always|never|threshold:T|margin:T|entropy:T|learned:PATH (default {DEFAULTS.router})")
    d.add_argument("--alpha", type=float, help="contrastive plausibility / proxy weight (default: the method's)")
    d.add_argument("--beta", type=float, help=f"contrastive β (default {DEFAULTS.beta})")
    d.add_argument("--formula", choices=("blend", "standard"), help=f"contrastive formula (default {DEFAULTS.formula})")
    d.add_argument("--k", type=int, help=f"speculative draft length (default {DEFAULTS.k})")
    d.add_argument("--temperature", type=float, help=f"speculative sampling temperature (default {DEFAULTS.temperature})")
    d.add_argument("--seed", type=int, help=f"sampling seed (default {DEFAULTS.seed})")
    d.add_argument("--prompts", required=True, help="JSONL, one {\"prompt\": ...} per line")
    d.add_argument("--max-new-tokens", type=int, required=True)
    d.add_argument("--stop", nargs="*", default=[], help="stop strings")
    d.add_argument("--batch-size", type=int, help=f"prompts decoded together (default {DEFAULTS.batch_size})")
    d.add_argument("--dtype", default="float32", choices=("auto", "float32", "float16", "bfloat16"))
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (device_map='auto')")
    d.add_argument("--top-k", type=int, help="record System 1's top-k in the trace (default: off)")
    d.add_argument("--trust-remote-code", action="store_true")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--out-trace", required=True)
    d.add_argument("--out-generations", required=True)

    t = sub.add_parser("train-router", help="train a learned router from traces (decoded with --top-k)")
    t.add_argument("--traces", nargs="+", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--top-k", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threshold", type=float, default=0.5)
    return parser


def read_prompts(path: str) -> list[str]:
    """Prompts from JSONL; CliError naming the file and line for anything malformed."""
    file = Path(path)
    if not file.is_file():
        raise CliError(f"prompts file not found: {path}")
    prompts = []
    with open(file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise CliError(f"{path}:{number}: not UTF-8") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise CliError(f"{path}:{number}: not JSON ({e.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise CliError(f"{path}:{number}: expected an object with a string \"prompt\"")
            prompts.append(item["prompt"])
    if not prompts:
        raise CliError(f"prompts file is empty: {path}")
    return prompts


def check_model_arg(role: str, name: str | None) -> None:
    from fsgen.decoding.models import looks_local

    if name is not None and not Path(name).exists() and looks_local(name):
        raise CliError(f"--{role} path not found: {name}")


def run_decode(args) -> None:
    from fsgen.decoding import DecodeConfig, decode, load_systems
    from fsgen.decoding.routers import parse_router_spec
    from fsgen.trace import write_trace

    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be ≥ 1, got {args.max_new_tokens}")
    method = get_method(args.method)
    for role in method.roles:
        check_model_arg(role.replace("_", "-"), getattr(args, role))
        if getattr(args, role) is None:
            raise CliError(f"method {args.method} needs --{role.replace('_', '-')}")
    settings = {name: getattr(args, name) for name in
                ("method", "router", "alpha", "beta", "formula", "k", "temperature", "seed", "batch_size", "top_k")}
    try:
        config = DecodeConfig.from_settings(settings, max_new_tokens=args.max_new_tokens, stop=tuple(args.stop),
                                            progress=False if args.no_progress else None)
        router = parse_router_spec(config.router)
    except ValueError as e:
        raise CliError(str(e)) from None
    if router.kind == "learned" and not Path(router.path).is_file():
        raise CliError(f"learned router file not found: {router.path}")
    prompts = read_prompts(args.prompts)
    systems = load_systems(args.method, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                           **{role: getattr(args, role) for role in method.roles})
    result = decode(systems, prompts, config)
    write_trace(result.trace, args.out_trace, result.metadata)
    write_jsonl(args.out_generations, result.generations)


def run_train_router(args) -> None:
    import pandas as pd

    from fsgen.decoding.routers import train_learned_router
    from fsgen.trace import read_trace

    for path in args.traces:
        if not Path(path).is_file():
            raise CliError(f"trace not found: {path}")
    frames = [read_trace(path)[0] for path in args.traces]
    try:
        train_learned_router(pd.concat(frames, ignore_index=True), args.out, args.top_k, args.seed, args.threshold)
    except ValueError as e:
        raise CliError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "decode":
            run_decode(args)
        else:
            run_train_router(args)
    except CliError as e:
        print(f"fsgen: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # e.g. TokenizerMismatch, a model that cannot be loaded
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"fsgen: error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
