"""Where the models of a decode job go: one device map per model over the job's visible GPUs,
the largest batch that fits, and the job's SLURM resources (GPUs, host memory; the runtime guess
is fsgen.decoding.runtime).

Pure planning (no torch, no GPU) from the models' architectures (`ModelSpec`, from config.json).
Memory per model (docs/slurm.md, "Placement"): weights + KV cache (2 x kv_heads x head_dim x dtype
bytes x batch x tokens per layer, on that layer's GPU) + transients (prefill MLP activations and
float32 logits; a GPU keeps the largest of its models', as they run one after another); each card
keeps MARGIN and CUDA_CONTEXT_BYTES free. System 2 is placed first on the fewest GPUs, then each
other model on a GPU nobody uses, else in the room System 2 left: every model's need is reserved
at the same batch size before the next is placed, so System 1 never squeezes System 2 out. A
model with `gpus: n` gets n GPUs of its own. The batch size is the largest (<= the cap) that fits.

Loading without a full copy in host RAM: `from_pretrained(path, dtype=..., device_map=<the
model's device_map>)` from safetensors checkpoints. transformers >= 5 builds the model on the meta
device and copies each tensor from the memory-mapped shard to its GPU (`low_cpu_mem_usage` is
always on and ignored there; 4.x needs `low_cpu_mem_usage=True`, implied by device_map). With an
explicit map `max_memory` is informational. Never `.to(device)` afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MARGIN = 0.08  # share of each card kept free (fragmentation, allocator caching)
CUDA_CONTEXT_BYTES = int(1.5 * GIB)  # CUDA context + cuBLAS workspace per GPU
LOGIT_ENTRY_BYTES = 10  # dtype logits (<= 4) ... counted as 2 + 4 (float copy) + 4 (log-softmax)
DEFAULT_GPU_MEMORY_GB = 80.0  # config `gpu_memory_gb`: GiB per card (nvidia-smi total / 1024)
MAX_GPUS_PER_JOB = 8  # one node
# prompt tokens a decode job plans memory for when its rule does not say (params.placement): the
# longest prompt of the paper's tasks, MBPP 3-shot, is ~1476 tokens (bench/grid_cost.py PROMPT_TOKENS)
DEFAULT_PROMPT_TOKENS = 1536


class PlacementError(ValueError):
    """Nothing fits; the message names the model and the numbers."""


@dataclass(frozen=True)
class ModelSpec:
    """What placement needs of one model (`from_hf_config` reads it from config.json)."""

    name: str
    params: int  # parameter count (tied embeddings once)
    num_hidden_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"
    gpus: int | None = None  # config `gpus:`: this many GPUs of its own

    @classmethod
    def from_hf_config(cls, name: str, config: Mapping, *, dtype: str = "bfloat16", params: int | None = None,
                       gpus: int | None = None) -> ModelSpec:
        """From a config.json dict (`AutoConfig.from_pretrained(path).to_dict()` or the file).

        `params` defaults to `decoder_params(config)` (a Llama/Qwen2-type decoder)."""
        keys = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size", "vocab_size")
        missing = [key for key in keys if config.get(key) is None]
        if missing:
            raise PlacementError(f"model {name!r}: config.json has no {missing[0]!r} (needed for placement)")
        if dtype not in DTYPE_BYTES:
            raise PlacementError(f"model {name!r}: unknown dtype {dtype!r} (expected one of {sorted(DTYPE_BYTES)})")
        heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
        return cls(
            name=name,
            params=int(params) if params is not None else decoder_params(config),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            dtype=dtype,
            gpus=gpus,
        )

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def embedding_bytes(self) -> int:
        return self.vocab_size * self.hidden_size * self.dtype_bytes

    @property
    def head_bytes(self) -> int:
        """lm_head and the final norm (lm_head is the embedding matrix itself when tied)."""
        return (0 if self.tie_word_embeddings else self.embedding_bytes) + self.hidden_size * self.dtype_bytes

    @property
    def layer_weight_bytes(self) -> int:
        rest = self.weight_bytes - self.embedding_bytes - self.head_bytes
        return max(0, rest) // self.num_hidden_layers

    def kv_bytes(self, batch_size: int, tokens: int) -> int:
        """KV cache of one layer for `batch_size` rows of `tokens` tokens."""
        return 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes * batch_size * tokens

    def transient_bytes(self, batch_size: int, prompt_tokens: int, logit_positions: int) -> int:
        prefill = batch_size * prompt_tokens * (4 * self.hidden_size + 3 * self.intermediate_size) * self.dtype_bytes
        return prefill + batch_size * logit_positions * self.vocab_size * LOGIT_ENTRY_BYTES


def decoder_params(config: Mapping) -> int:
    """Parameter count of a Llama/Qwen2-type decoder from its config.json: per layer q, k, v, o
    projections (q/k/v with biases when `attention_bias` or model_type qwen2), gate/up/down MLP,
    two RMSNorms; embeddings, final norm, lm_head unless tied."""
    hidden, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv_dim = int(config.get("num_key_value_heads") or heads) * int(config.get("head_dim") or hidden // heads)
    q_dim = heads * int(config.get("head_dim") or hidden // heads)
    bias = bool(config.get("attention_bias", config.get("model_type") == "qwen2"))
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden + (q_dim + 2 * kv_dim if bias else 0)
    layer = attention + 3 * hidden * inter + 2 * hidden
    embedding = int(config["vocab_size"]) * hidden
    head = 0 if config.get("tie_word_embeddings", False) else embedding
    return int(config["num_hidden_layers"]) * layer + embedding + hidden + head


@dataclass
class ModelPlacement:
    role: str
    name: str
    gpus: tuple[int, ...]  # indices into the job's visible GPUs (cuda:0 ... cuda:n-1)
    device_map: dict[str, int]  # module name -> GPU index, for from_pretrained(device_map=...)
    max_memory: dict[int, int]  # GPU index -> bytes planned for this model there (weights, KV, transients)
    layers: dict[int, tuple[int, int]]  # GPU index -> (first, last) decoder layer on it
    weight_bytes: int
    kv_cache_bytes: int  # at the plan's batch size and token budget
    transient_bytes: int


@dataclass
class Placement:
    batch_size: int
    batch_cap: int
    prompt_tokens: int
    max_new_tokens: int
    gpu_memory_bytes: int
    n_gpus: int
    models: dict[str, ModelPlacement] = field(default_factory=dict)  # role -> placement, in placement order
    used_bytes: list[int] = field(default_factory=list)  # per GPU: weights + KV + the largest transient

    @property
    def usable_bytes(self) -> int:
        return usable_gpu_bytes(self.gpu_memory_bytes / GIB)

    def from_pretrained_kwargs(self, role: str) -> dict:
        """kwargs for `AutoModelForCausalLM.from_pretrained` (add dtype=): see the module docstring."""
        model = self.models[role]
        return {"device_map": dict(model.device_map), "max_memory": dict(model.max_memory)}

    def text(self) -> str:
        """The plan for the job log."""
        gib = lambda n: f"{n / GIB:.1f} GiB"  # noqa: E731
        lines = [f"placement: {self.n_gpus} GPU(s) x {gib(self.gpu_memory_bytes)} (usable {gib(self.usable_bytes)} "
                 f"each: {MARGIN:.0%} margin, {gib(CUDA_CONTEXT_BYTES)} CUDA context); batch size "
                 f"{self.batch_size} (cap {self.batch_cap}); tokens {self.prompt_tokens} prompt + "
                 f"{self.max_new_tokens} new"]
        for role, m in self.models.items():
            spans = ", ".join(f"layers {a}-{b} -> GPU {g}" for g, (a, b) in sorted(m.layers.items()))
            lines.append(f"  {role}: {m.name} on GPU {','.join(map(str, m.gpus))}: weights {gib(m.weight_bytes)}, "
                         f"KV cache {gib(m.kv_cache_bytes)}, transients {gib(m.transient_bytes)}; {spans}")
        for gpu, used in enumerate(self.used_bytes):
            holders = [f"{r} {gib(m.max_memory[gpu])}" for r, m in self.models.items() if gpu in m.max_memory]
            lines.append(f"  GPU {gpu}: {gib(used)} of {gib(self.usable_bytes)} planned ({', '.join(holders) or 'unused'})")
        return "\n".join(lines)


def usable_gpu_bytes(gpu_memory_gb: float) -> int:
    """What one card of `gpu_memory_gb` GiB can hold for the models (see the module docstring)."""
    return int(gpu_memory_gb * GIB * (1 - MARGIN)) - CUDA_CONTEXT_BYTES


def module_names(spec: ModelSpec, prefix: str = "model.") -> tuple[str, list[str], str, str]:
    """(embedding, decoder layers, final norm, lm_head) module names of a Llama/Qwen2-type model."""
    layers = [f"{prefix}layers.{i}" for i in range(spec.num_hidden_layers)]
    return f"{prefix}embed_tokens", layers, f"{prefix}norm", "lm_head"


@dataclass
class _Gpus:
    usable: int
    static: list[int]  # weights + KV planned per GPU
    transient: list[int]  # largest transient per GPU
    owner: list[str | None]  # role holding the GPU exclusively (gpus: n)

    def room(self, gpu: int, transient: int) -> int:
        return self.usable - self.static[gpu] - max(self.transient[gpu], transient)


def _candidates(gpus: _Gpus, spec: ModelSpec, role: str, first: bool) -> list[int]:
    """GPUs a model may use, in fill order."""
    n = len(gpus.static)
    if spec.gpus:
        free = [g for g in range(n) if gpus.owner[g] is None and gpus.static[g] == 0]
        if len(free) < spec.gpus:
            raise PlacementError(f"model {spec.name!r} ({role}) asks for {spec.gpus} GPU(s) of its own (gpus: "
                                 f"{spec.gpus}) but only {len(free)} of the job's {n} GPU(s) are free")
        for g in free[: spec.gpus]:
            gpus.owner[g] = role
        return free[: spec.gpus]
    shared = [g for g in range(n) if gpus.owner[g] is None]
    if first:
        return shared
    untouched = [g for g in shared if gpus.static[g] == 0]
    touched = sorted((g for g in shared if gpus.static[g] > 0), key=lambda g: -gpus.room(g, 0))
    return untouched + touched


def _place(spec: ModelSpec, role: str, gpus: _Gpus, order: list[int], batch: int, prompt: int, new: int,
           logit_positions: int) -> ModelPlacement | None:
    """Fill `order`'s GPUs with the model's modules in sequence; None when they do not fit."""
    tokens = prompt + new
    transient = spec.transient_bytes(batch, prompt, logit_positions)
    layer = spec.layer_weight_bytes + spec.kv_bytes(batch, tokens)
    sizes = [spec.embedding_bytes] + [layer] * spec.num_hidden_layers + [spec.head_bytes]
    where, planned, i = [], {}, 0
    for gpu in order:
        room = gpus.room(gpu, transient)
        while i < len(sizes) and sizes[i] <= room - planned.get(gpu, 0):
            planned[gpu] = planned.get(gpu, 0) + sizes[i]
            where.append(gpu)
            i += 1
        if i == len(sizes):
            break
    if i < len(sizes):
        return None
    for gpu, amount in planned.items():
        gpus.static[gpu] += amount
        gpus.transient[gpu] = max(gpus.transient[gpu], transient)
    embed, layer_names, norm, head = module_names(spec)
    device_map = {embed: where[0], **dict(zip(layer_names, where[1:-1])), norm: where[-1],
                  head: where[0] if spec.tie_word_embeddings else where[-1]}
    device_map["model.rotary_emb"] = where[0]
    spans = {}
    for index, gpu in enumerate(where[1:-1]):
        first, _ = spans.get(gpu, (index, index))
        spans[gpu] = (first, index)
    return ModelPlacement(role, spec.name, tuple(sorted(planned)), device_map,
                          {g: planned[g] + transient for g in sorted(planned)}, spans, spec.weight_bytes,
                          spec.kv_bytes(batch, tokens) * spec.num_hidden_layers, transient)


def _try(models: Mapping[str, ModelSpec], order: list[str], n_gpus: int, gpu_memory_gb: float, batch: int,
         prompt: int, new: int, logit_positions: int) -> tuple[Placement | None, str | None]:
    gpus = _Gpus(usable_gpu_bytes(gpu_memory_gb), [0] * n_gpus, [0] * n_gpus, [None] * n_gpus)
    plan = Placement(batch, batch, prompt, new, int(gpu_memory_gb * GIB), n_gpus)
    for index, role in enumerate(order):
        placed = _place(models[role], role, gpus, _candidates(gpus, models[role], role, index == 0), batch, prompt,
                        new, logit_positions)
        if placed is None:
            return None, role
        plan.models[role] = placed
    plan.used_bytes = [s + t for s, t in zip(gpus.static, gpus.transient)]
    return plan, None


def system2_role(method: str) -> str:
    """The role placed first, by the method registry: the method's System 2 (`large` for every
    pair method), or the lone model's own role (`single`: `model`)."""
    from fsgen.decoding.methods import get_method

    spec = get_method(method)
    return spec.system2[0] if spec.system2 else spec.system1


def plan_placement(models: Mapping[str, ModelSpec], *, n_gpus: int, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB,
                   batch_cap: int, prompt_tokens: int, max_new_tokens: int, system2: str = "large",
                   logit_positions: int | None = None) -> Placement:
    """Place every model of a job (role -> spec; `system2` is placed first, see `system2_role`)
    on the job's `n_gpus` visible GPUs at the largest batch size <= batch_cap that fits. Raises
    PlacementError naming the model that does not fit even at batch size 1, or when a job of
    several models does not have the `system2` role (the planner and the loader name roles alike)."""
    if system2 not in models and len(models) > 1:
        raise PlacementError(f"System 2 role {system2!r} is not among the job's models {sorted(models)}; "
                             f"pass system2=system2_role(method)")
    if n_gpus < 1:
        raise PlacementError(f"placement needs at least one GPU (the job sees {n_gpus})")
    if batch_cap < 1:
        raise PlacementError(f"batch size cap must be >= 1, got {batch_cap}")
    order = ([system2] if system2 in models else []) + [r for r in models if r != system2]
    positions = max_new_tokens if logit_positions is None else logit_positions
    for batch in range(batch_cap, 0, -1):
        plan, failed = _try(models, order, n_gpus, gpu_memory_gb, batch, prompt_tokens, max_new_tokens, positions)
        if plan is not None:
            plan.batch_cap = batch_cap
            return plan
    spec = models[failed]
    tokens = prompt_tokens + max_new_tokens
    need = (spec.weight_bytes + spec.kv_bytes(1, tokens) * spec.num_hidden_layers
            + spec.transient_bytes(1, prompt_tokens, positions))
    before = [r for r in order[: order.index(failed)]]
    raise PlacementError(
        f"model {spec.name!r} ({failed}) does not fit at batch size 1: it needs {need / GIB:.1f} GiB (weights "
        f"{spec.weight_bytes / GIB:.1f} GiB, KV cache and transients for {tokens} tokens) and the job's {n_gpus} "
        f"GPU(s) of {gpu_memory_gb:g} GiB have {usable_gpu_bytes(gpu_memory_gb) / GIB:.1f} GiB usable each"
        + (f", after {', '.join(before)}" if before else "")
        + "; give the job more GPUs (the model's gpus:) or set gpu_memory_gb to the cards' size")


# ------------------------------------------------------------------ SLURM resources of a job
HOST_BASE_GIB = 12  # Python, torch with its CUDA libraries, transformers, lm-eval, datasets, tokenizers
STREAM_BUFFER_GIB = 8  # one safetensors shard being read (Qwen1.5's are <= 4 GB) and page-cache headroom


def job_gpus(models: Mapping[str, ModelSpec], *, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB, batch_cap: int,
             prompt_tokens: int, max_new_tokens: int, system2: str = "large", max_gpus: int = MAX_GPUS_PER_JOB) -> int:
    """GPUs a decode job asks for: the fewest at which the plan runs at the batch cap (models with
    `gpus: n` count n each); if even `max_gpus` cannot reach the cap, the fewest that reach the
    best batch size `max_gpus` allows. Raises PlacementError (naming the model) when nothing fits."""
    reached = {}
    for n in range(max(1, sum(spec.gpus or 0 for spec in models.values())), max_gpus + 1):
        try:
            plan = plan_placement(models, n_gpus=n, gpu_memory_gb=gpu_memory_gb, batch_cap=batch_cap,
                                  prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, system2=system2)
        except PlacementError:
            continue
        if plan.batch_size == batch_cap:
            return n
        reached[n] = plan.batch_size
    if not reached:
        plan_placement(models, n_gpus=max_gpus, gpu_memory_gb=gpu_memory_gb, batch_cap=1,
                       prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, system2=system2)  # raises
    best = max(reached.values())
    return min(n for n, batch in reached.items() if batch == best)


def host_memory_mb(models: Mapping[str, ModelSpec], *, n_gpus: int, batch_size: int = 1, prompt_tokens: int = 0,
                   max_new_tokens: int = 0) -> int:
    """Host memory of a decode job in MiB (SLURM's --mem). With GPUs the weights stream to them
    (module docstring), so the process needs its libraries and one shard's buffer, whatever the
    model size; on the CPU the weights, KV caches and the largest transient live in host memory."""
    need = HOST_BASE_GIB * GIB
    if n_gpus > 0:
        need += STREAM_BUFFER_GIB * GIB
    else:
        tokens = prompt_tokens + max_new_tokens
        need += sum(s.weight_bytes + s.kv_bytes(batch_size, tokens) * s.num_hidden_layers for s in models.values())
        need += max((s.transient_bytes(batch_size, prompt_tokens, max_new_tokens) for s in models.values()), default=0)
    return math.ceil(need / (1 << 20))
