"""`fsgen decode|train-router|show|status|cache|lm-eval ...` (also `python -m fsgen ...`).

Bad input exits with status 2 and a one-line reason on stderr (`fsgen: error: ...`), before
any model is loaded where that is possible. Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsgen.atomic import write_jsonl, write_text
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

    v = sub.add_parser("show", help="a job's generations with the tokens System 2 decided marked (terminal or HTML)")
    v.add_argument("trace", help="trace.parquet or its job folder")
    v.add_argument("--request", type=int, action="append", help="request_id to show (repeatable); default: a sample")
    v.add_argument("--requests", type=int, default=5, help="sample size when no --request is given")
    v.add_argument("--seed", type=int, default=0, help="seed of the sample")
    v.add_argument("--html", help="write a self-contained HTML page here instead of printing")
    v.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the trace's models)")
    v.add_argument("--generations", help="generations.jsonl (default: next to the trace)")
    v.add_argument("--metric", help="lm-eval 'metric,filter' of the verdict (default: the analysis's choice)")
    v.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    st = sub.add_parser("status", help="progress of a grid: jobs done / running / failed per stage")
    st.add_argument("--workdir", default=".", help="the workflow's working directory (holds results/ and .snakemake/)")
    st.add_argument("--configfile", action="append", help="config file(s) of the run (default: WORKDIR/config/config.yaml)")
    st.add_argument("--all", action="store_true", help="list every job, not only running and failed ones")

    c = sub.add_parser("cache", help="the resume cache's folders (results/.resume) and which no current job uses")
    c.add_argument("--workdir", default=".", help="the workflow's working directory (holds results/)")
    c.add_argument("--configfile", action="append", help="config file(s) of the run (default: WORKDIR/config/config.yaml)")
    c.add_argument("--remove", action="store_true", help="remove the unused folders (default: only list them)")

    sub.add_parser("lm-eval", add_help=False, help="lm-eval's own command line with the fsgen models registered")
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
    from fsgen.fingerprint import looks_local

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


def run_show(args) -> None:
    from fsgen.viewer import load_job, render_job, render_page, sample_requests, use_colour

    try:
        job = load_job(args.trace, tokenizer=args.tokenizer, generations=args.generations, metric=args.metric)
    except (FileNotFoundError, KeyError) as e:
        raise CliError(str(e).strip("'\"")) from None
    ids = job.request_ids
    missing = sorted(set(args.request or []) - set(ids))
    if missing:
        raise CliError(f"request_id {missing[0]} is not in {job.path} (ids {ids[0]}..{ids[-1]})" if ids
                       else f"{job.path} has no requests")
    chosen = sorted(args.request) if args.request else sample_requests(ids, args.requests, args.seed)
    if args.html:
        write_text(args.html, render_page(job, chosen, None if args.request else args.seed))
        print(f"wrote {args.html} ({len(chosen)} requests)")
    else:
        sys.stdout.write(render_job(job, chosen, use_colour(sys.stdout, args.color)))


def run_lm_eval(argv: list[str]) -> int:
    """lm-eval's CLI (0.4.13: lm_eval.__main__.cli_evaluate, which reads sys.argv) with the
    `fsgen` and `fsgen-replay` models registered; every argument is lm-eval's."""
    import fsgen.harness  # noqa: F401  (registers the models)
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # before argparse: the rest belongs to lm-eval, --help included
        return run_lm_eval(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        if args.command == "decode":
            run_decode(args)
        elif args.command == "train-router":
            run_train_router(args)
        elif args.command == "show":
            run_show(args)
        elif args.command == "status":
            from fsgen.status import run_status

            run_status(args)
        elif args.command == "cache":
            from fsgen.cache import run_cache

            run_cache(args)
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
