"""Collaborative decoding of a batch of prompts by System 1 (small) and System 2 (large).

`decode` is the one entry point for every method. It owns what is common to all of them:
tokenising and truncating prompts, batching, the progress bar, cutting generations at stop
criteria, assembling generations and the trace, and run metadata. The token-by-token work is
in `fsgen.decoding.steploop` (every method and router), `fsgen.decoding.oracle_fast` (a method with
a fast path and the `always` router: one `generate` of the large model) and
`fsgen.decoding.speculative`; the method registry (`fsgen.decoding.methods`) says which one runs.

Defined behaviour for odd inputs:
- a model that never emits EOS runs to `max_new_tokens` and stops;
- an empty prompt decodes from the tokenizer's BOS token; without a BOS token it raises
  ValueError naming the request;
- a prompt longer than `context - max_new_tokens` tokens, where `context` is the smallest
  `max_position_embeddings` of the systems in use, keeps its last `context - max_new_tokens`
  tokens (left truncation; the end of a prompt is what the continuation depends on) and a
  warning names the request; when `max_new_tokens >= context` a ValueError is raised.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.methods import METHODS, Method, get_method
from fsgen.decoding.models import (
    check_shared_tokenizer,
    load_model,
    load_tokenizer,
    shared_vocab_size,
    tokenizer_eos_ids,
)

log = logging.getLogger(__name__)


@dataclass
class Systems:
    """What decode() runs on: the shared tokenizer and the models of the roles a method needs."""

    tokenizer: object  # the shared tokenizer (the first role's; left padding, pad token set)
    models: dict[str, torch.nn.Module] = field(default_factory=dict)  # role -> model (small, large, ...)
    names: dict[str, str] = field(default_factory=dict)  # role -> path/id, for metadata
    vocab_size: int = 0  # shared tokenizer vocabulary; logits past it are dropped
    # role -> EOS ids of that role's own tokenizer: tokenizers that share the ids may still name
    # other EOS tokens (Qwen1.5 base `<|endoftext|>`, -Chat `<|im_end|>`); decoding stops at all
    tokenizer_eos: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def model(self, role: str) -> torch.nn.Module:
        if self.models.get(role) is None:
            raise ValueError(f"no {role} model was loaded")
        return self.models[role]

    def alone(self, role: str) -> Systems:
        """The model of `role` as the lone model of method `single` (a baseline from a loaded pair)."""
        eos = {"model": self.tokenizer_eos[role]} if role in self.tokenizer_eos else {}
        return Systems(self.tokenizer, {"model": self.model(role)}, {"model": self.names.get(role, role)},
                       self.vocab_size, eos)

    def stop_token_ids(self, roles) -> set[int]:
        """Where decoding with the models of `roles` stops: the shared tokenizer's EOS, each
        role's own tokenizer EOS and each model's generation_config EOS."""
        from fsgen.decoding.stopping import eos_token_ids

        ids = eos_token_ids(self.tokenizer, *(self.models.get(role) for role in roles))
        for role in roles:
            ids.update(self.tokenizer_eos.get(role, ()))
        return ids

    @property
    def tokenizer_model(self) -> str:
        """The model whose tokenizer is the shared one (the first role loaded), for messages."""
        return next(iter(self.names.values()), "the shared tokenizer's model")

    # the usual roles by name (None when not loaded)
    small = property(lambda self: self.models.get("small"))  # System 1 of most methods
    large = property(lambda self: self.models.get("large"))  # System 2
    small_tuned = property(lambda self: self.models.get("small_tuned"))  # proxy: System 1


def require_roles(systems: Systems, method: str) -> Method:
    """The registered method; ValueError naming the first role it needs that `systems` lacks."""
    spec = get_method(method)
    for role in spec.roles:
        if systems.models.get(role) is None:
            raise ValueError(f"method {method!r} needs the {role} model, which was not given")
    return spec


def load_systems(
    method: str = "oracle",
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    placement=None,
    **models: str | None,
) -> Systems:
    """Load the models `method` needs, given by role (small=..., large=..., small_tuned=..., model=...).

    `placement` (a `fsgen.decoding.placement.Placement` with every role): each model is loaded
    with its device map (weights streamed to the GPUs); `device` is then not used.

    The tokenizers are loaded and compared before any weights (TokenizerMismatch naming both
    models when they map strings to other ids; other special tokens or chat templates are only
    logged); each role's tokenizer EOS is kept in `Systems.tokenizer_eos`. A role the method
    needs that is missing (or None) raises ValueError naming it. Models of roles the method
    does not use are not loaded.
    """
    spec = get_method(method)
    known = {role for m in METHODS.values() for role in m.roles}
    if set(models) - known:
        raise ValueError(f"unknown model roles {sorted(set(models) - known)}; expected some of {sorted(known)}")
    for role in spec.roles:
        if models.get(role) is None:
            raise ValueError(f"method {method!r} needs the {role} model (--{role.replace('_', '-')})")
    names = {role: str(models[role]) for role in spec.roles}
    by_role = {role: load_tokenizer(names[role], trust_remote_code) for role in names}
    tokenizers = {names[role]: tok for role, tok in by_role.items()}
    if len(tokenizers) > 1:
        check_shared_tokenizer(tokenizers)
    tokenizer = by_role[spec.roles[0]]
    if placement is not None and set(placement.models) != set(names):
        raise ValueError(f"the placement plans roles {sorted(placement.models)}, "
                         f"method {method!r} loads {sorted(names)}")
    maps = {role: placement.from_pretrained_kwargs(role)["device_map"] if placement else None for role in names}
    loaded = {role: load_model(names[role], dtype, device, trust_remote_code, maps[role]) for role in names}
    return Systems(tokenizer=tokenizer, models=loaded, names=names, vocab_size=shared_vocab_size(tokenizer),
                   tokenizer_eos={role: tokenizer_eos_ids(tok) for role, tok in by_role.items()})


def load_job_systems(method: str, *, dtype: str, batch_size: int, max_new_tokens: int, prompt_tokens: int,
                     trust_remote_code: bool = False, gpus: dict[str, int | None] | None = None,
                     **models: str) -> tuple[Systems, int]:
    """Load a decode job's models where it runs: (systems, batch size).

    With CUDA every model is placed by the planner (`fsgen.decoding.placement`) over exactly the
    visible GPUs (`torch.cuda.device_count()`, planned at the smallest card's memory; `gpus`:
    role -> GPUs of its own, the config's `gpus:`), the plan is logged (the job's log), and the
    batch size is min(the plan's, `batch_size`). Without CUDA: on the CPU, `batch_size` as given.
    Roles and the System 2 placed first come from the method registry (`system2_role`).
    """
    from fsgen.decoding.models import model_spec, visible_gpus
    from fsgen.decoding.placement import plan_placement, system2_role

    n_gpus, memory_gb = visible_gpus()
    if n_gpus == 0:
        systems = load_systems(method, dtype=dtype, device="cpu", trust_remote_code=trust_remote_code, **models)
        return systems, batch_size
    roles = get_method(method).roles
    specs = {role: model_spec(str(models[role]), str(models[role]), dtype, trust_remote_code, (gpus or {}).get(role))
             for role in roles if models.get(role) is not None}
    plan = plan_placement(specs, n_gpus=n_gpus, gpu_memory_gb=memory_gb, batch_cap=batch_size,
                          prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, system2=system2_role(method))
    log.info("%s", plan.text())
    systems = load_systems(method, dtype=dtype, trust_remote_code=trust_remote_code, placement=plan, **models)
    return systems, min(plan.batch_size, batch_size)


@dataclass
class DecodeResult:
    generations: list[dict]  # {"request_id", "prompt", "text", "token_ids"} in input order
    trace: pd.DataFrame  # trace schema columns, sorted by (request_id, position)
    metadata: dict  # method, models, parameters, seed, versions


def context_length(systems: Systems, method: str) -> int | None:
    """The smallest `max_position_embeddings` of the models the method uses (None if unknown)."""
    lengths = []
    for role in get_method(method).roles:
        config = getattr(systems.models[role], "config", None)
        length = getattr(config, "max_position_embeddings", None)
        if length:
            lengths.append(int(length))
    return min(lengths) if lengths else None


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt with the tokenizer's default special tokens, except a second BOS:
    a prompt that starts with the BOS text (a chat template's `{{ bos_token }}`) keeps only it."""
    bos = tokenizer.bos_token
    starts_with_bos = bool(bos) and prompt.startswith(bos)
    return list(tokenizer(prompt, add_special_tokens=not starts_with_bos).input_ids)


def prepare_prompt(tokenizer, prompt: str, request_id: int, max_new_tokens: int, context: int | None) -> list[int]:
    """Token ids of one prompt: BOS for an empty prompt, left-truncated to fit the context."""
    ids = encode_prompt(tokenizer, prompt)
    if not ids:
        if tokenizer.bos_token_id is None:
            raise ValueError(f"request {request_id}: empty prompt and the tokenizer has no BOS token to start from")
        ids = [tokenizer.bos_token_id]
    if context is not None:
        room = context - max_new_tokens
        if room < 1:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a context of {context} tokens"
            )
        if len(ids) > room:
            log.warning(
                "request %d: prompt of %d tokens left-truncated to its last %d (context %d − max_new_tokens %d)",
                request_id, len(ids), room, context, max_new_tokens,
            )
            ids = ids[-room:]
    return ids


def fsgen_version() -> str:
    """The installed distribution's version; the package's own when run from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fsgen")
    except PackageNotFoundError:
        import fsgen

        return getattr(fsgen, "__version__", "unknown")


def run_metadata(systems: Systems, config: DecodeConfig) -> dict:
    """What goes into the trace's Parquet metadata."""
    import transformers

    params = config.to_dict()
    params["stop"] = list(config.stop)
    return {
        "method": config.method,
        "router": config.router if get_method(config.method).routed else None,
        "models": dict(systems.names),
        "params": params,
        "seed": config.seed,
        "k": config.k,
        "vocab_size": systems.vocab_size,
        "eos_token_ids": sorted(systems.stop_token_ids(get_method(config.method).roles)),
        "versions": {"fsgen": fsgen_version(), "torch": torch.__version__, "transformers": transformers.__version__},
    }


def show_progress(config: DecodeConfig) -> bool:
    return sys.stderr.isatty() if config.progress is None else bool(config.progress)


def run_batch(systems: Systems, prompt_ids, request_ids, config: DecodeConfig, router, stop) -> list[tuple[list[int], pd.DataFrame]]:
    """One batch under the configured method: per request (generated ids, trace rows)."""
    from fsgen.decoding.routers import AlwaysRouter
    from fsgen.trace import records_to_frame

    method = get_method(config.method)
    if method.loop == "speculative":
        from fsgen.decoding.speculative import speculative_batch

        return speculative_batch(systems, prompt_ids, request_ids, config, stop)
    if method.fast_path and isinstance(router, AlwaysRouter):
        from fsgen.decoding.oracle_fast import oracle_fast_batch

        rows = oracle_fast_batch(systems, prompt_ids, config, stop)
    else:
        from fsgen.decoding.steploop import step_batch

        rows = step_batch(systems, prompt_ids, config, router, stop)
    return [(ids, records_to_frame(rid, recs, config.top_k > 0)) for (ids, recs), rid in zip(rows, request_ids)]


def decode(
    systems: Systems,
    prompts: list[str],
    config: DecodeConfig,
    request_ids: list[int] | None = None,
    on_result: Callable[[dict, pd.DataFrame], None] | None = None,
) -> DecodeResult:
    """Decode `prompts` under `config.method`; see the module docstring for odd inputs.

    Prompts are batched by length (longest first) to limit padding; a row's result does not
    depend on the batch it is in. `on_result(generation, trace_rows)` is called for each request
    as its batch finishes. Generations come back in input order, the trace sorted by
    (request_id, position).
    """
    from tqdm.auto import tqdm

    from fsgen.decoding.routers import build_router
    from fsgen.decoding.stopping import StopCriteria
    from fsgen.trace import empty_trace

    method = require_roles(systems, config.method)
    router = build_router(config.router)
    if request_ids is None:
        request_ids = list(range(len(prompts)))
    if len(request_ids) != len(prompts):
        raise ValueError(f"{len(request_ids)} request_ids for {len(prompts)} prompts")
    context = context_length(systems, config.method)
    prompt_ids = [
        prepare_prompt(systems.tokenizer, p, rid, config.max_new_tokens, context) for p, rid in zip(prompts, request_ids)
    ]
    stop = StopCriteria(systems.tokenizer, systems.stop_token_ids(method.roles), config.stop, config.max_new_tokens)

    order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    generations: list[dict | None] = [None] * len(prompts)
    frames = []
    for batch in tqdm(batches, desc=f"fsgen {config.method}", unit="batch", disable=not show_progress(config)):
        results = run_batch(
            systems, [prompt_ids[i] for i in batch], [request_ids[i] for i in batch], config, router, stop
        )
        for i, (ids, rows) in zip(batch, results):
            generation = {
                "request_id": request_ids[i],
                "prompt": prompts[i],
                "text": stop.text(ids),
                "token_ids": [int(t) for t in ids],
            }
            generations[i] = generation
            frames.append(rows)
            if on_result is not None:
                on_result(generation, rows)
    frames = [f for f in frames if len(f)]
    trace = pd.concat(frames, ignore_index=True) if frames else empty_trace(config.top_k > 0)
    trace = trace.sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    return DecodeResult(generations=generations, trace=trace, metadata=run_metadata(systems, config))


@torch.no_grad()
def method_logprobs(systems: Systems, config: DecodeConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, V] float32 log-probs of the method's next-token distribution, teacher-forced.

    Full forwards without cache over left-padded inputs (lm-eval loglikelihood), one per model
    the method uses, combined by the method's registry entry (`Method.distribution`): a lone
    model's own log-probs; oracle and speculative: the large model's; contrastive and proxy: the
    combined score renormalised (implausible tokens -inf). The router is not applied: this is
    the distribution used wherever System 2 is consulted.
    """
    from fsgen.decoding.oracle_fast import full_logprobs

    method = require_roles(systems, config.method)
    logprobs = {
        role: full_logprobs(systems.models[role], input_ids, attention_mask, systems.vocab_size).cpu()
        for role in method.roles
    }
    return method.distribution(config, logprobs)
