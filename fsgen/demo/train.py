"""Training the demo family on CPU: a shared tokenizer, Llama-type models, a tuned variant.

Everything is seeded (data order, initialisation) and runs with deterministic algorithms, so a
model folder is a function of (spec, data, seed, threads). Models are saved with
`save_pretrained` next to the tokenizer and a sidecar `fsgen_model.json` = {"name", "params", ...}
that the scaling-law analysis reads.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fsgen.demo.arith import read_jsonl, with_tuned_style_share
from fsgen.demo.tokenizer import (  # noqa: F401  (format_*, train_tokenizer: public here too)
    format_prompt, format_target, replace_dir, staging_dir, train_tokenizer,
)
from fsgen.decoding.models import load_tokenizer

log = logging.getLogger("fsgen.demo")

SIDECAR = "fsgen_model.json"


@dataclass
class ModelSpec:
    hidden_size: int = 64          # width; the main size knob
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 0     # MLP width; 0 = 3 × hidden_size
    steps: int = 1500              # optimizer steps
    batch_size: int = 16           # problems per step
    micro_batches: int = 1         # passes per step over length-sorted slices of the batch: less padding, same gradient
    lr: float = 3e-3               # peak AdamW learning rate (linear warmup, cosine decay to 10%)
    warmup: int = 50               # warmup steps
    weight_decay: float = 0.01
    prompt_loss_weight: float = 1.0  # loss weight of the question's tokens (answer tokens: 1); see make_batch
    tuned_style_share: float = 0.05  # share of training answers in the tuned style (arith.with_tuned_style_share)
    max_position_embeddings: int = 256  # prompt + answer must fit (a 0-shot arith prompt is < 100 tokens)

    def llama_config(self, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size or 3 * self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )


@dataclass
class TunedSpec:
    base: str                      # name of the family member that is fine-tuned
    steps: int = 100               # further optimizer steps on the tuned-style data
    batch_size: int = 16
    lr: float = 1e-3               # lower than pre-training: shift the style, keep the skill
    warmup: int = 20
    weight_decay: float = 0.01
    prompt_loss_weight: float = 1.0  # as ModelSpec.prompt_loss_weight


# ---- data -------------------------------------------------------------------------------------

def encode_examples(problems: list[dict], tokenizer) -> list[tuple[list[int], int]]:
    """(token ids of prompt + target + EOS, number of prompt tokens) per problem.

    The prompt and target are encoded separately and concatenated, exactly as lm-eval and the
    decoders see them (prompt encoded alone, then generated tokens appended).
    """
    out = []
    for p in problems:
        prompt = tokenizer.encode(format_prompt(p["question"]), add_special_tokens=False)
        target = tokenizer.encode(format_target(p["answer"]), add_special_tokens=False)
        out.append((prompt + target + [tokenizer.eos_token_id], len(prompt)))
    return out


def make_batch(examples: list[tuple[list[int], int]], pad_id: int,
               prompt_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Right-padded input_ids/attention_mask [B, T] and loss_weights [B, T].

    loss_weights[b, t] weighs the loss of predicting token t of row b: 1 on the answer (and its
    EOS), `prompt_weight` on the prompt's tokens after the first (nothing predicts the first),
    0 on padding. With weight 0 the loss is on the answer only. The demo family uses 1 (the
    whole sequence): with the answer-only loss and the tuned-style share of the training mix,
    the smallest model came out worse (docs/demo.md, "The tuned variants and proxy tuning").
    """
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    loss_weights = torch.zeros((len(examples), width), dtype=torch.float32)
    for i, (ids, n_prompt) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        loss_weights[i, 1:n_prompt] = prompt_weight
        loss_weights[i, n_prompt : len(ids)] = 1.0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_weights": loss_weights}


def summed_token_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_b,t loss_weights[b, t] · (−log p(token t | tokens < t)) of a make_batch batch (a scalar)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), batch["input_ids"][:, 1:],
                                            reduction="none")                                    # [B, T-1]
    return (nll * batch["loss_weights"][:, 1:]).sum()


def _lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_backward(model, batch: list[tuple[list[int], int]], pad_id: int, micro_batches: int = 1,
                   prompt_weight: float = 0.0) -> float:
    """Forward and backward of one batch; returns its loss (weighted mean over tokens, make_batch's weights).

    With micro_batches > 1 the rows are sorted by length and cut into that many slices, each
    padded only to its own longest row, and every slice's weighted token loss is divided by the
    whole batch's total weight: the same loss and gradient as one pass (up to float rounding),
    with less padding. Random batches of 32 arith problems are 29% padding; two slices make a
    step of the largest demo model about 20% faster.
    """
    rows = sorted(batch, key=lambda row: len(row[0])) if micro_batches > 1 else batch
    # answer tokens weigh 1, the prompt's tokens after the first `prompt_weight`
    total_weight = sum((len(ids) - n_prompt) + prompt_weight * (n_prompt - 1) for ids, n_prompt in rows)
    size = -(-len(rows) // max(1, micro_batches))
    total = 0.0
    for start in range(0, len(rows), size):
        loss = summed_token_loss(model, make_batch(rows[start : start + size], pad_id, prompt_weight)) / total_weight
        loss.backward()
        total += loss.item()
    return total


def fit(model, examples, pad_id: int, steps: int, batch_size: int, lr: float, warmup: int,
        weight_decay: float, seed: int, desc: str = "train", progress: bool = True, callback=None,
        micro_batches: int = 1, prompt_weight: float = 0.0) -> list[float]:
    """AdamW on random batches drawn with a seeded generator; returns the loss of every step.

    `callback(step, model)`, if given, runs after every optimizer step (e.g. to evaluate);
    `micro_batches`, `prompt_weight`: see `batch_backward`.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        idx = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        optimizer.zero_grad(set_to_none=True)
        loss = batch_backward(model, [examples[i] for i in idx], pad_id, micro_batches, prompt_weight)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss)
        if callback is not None:
            callback(step + 1, model)
        if step % 100 == 0 or step == steps - 1:
            recent = sum(losses[-100:]) / len(losses[-100:])
            bar.set_postfix(loss=f"{recent:.4f}")
            log.info("%s step %d/%d loss %.4f lr %.2e", desc, step + 1, steps, recent, optimizer.param_groups[0]["lr"])
    model.eval()
    return losses


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_model(spec: ModelSpec, data: list[dict] | str | Path, tokenizer_dir: str | Path, out_dir: str | Path,
                seed: int = 0, name: str | None = None, threads: int | None = 1, progress: bool = True) -> dict:
    """Train one family member from scratch and save it (model + tokenizer + sidecar) to `out_dir`.

    `data` is a list of problems or a JSONL path. Returns the sidecar dict.
    """
    problems = read_jsonl(data) if isinstance(data, (str, Path)) else data
    name = name or Path(out_dir).name
    _seed_everything(seed, threads)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    model = LlamaForCausalLM(spec.llama_config(tokenizer))
    problems = with_tuned_style_share(problems, spec.tuned_style_share, seed)
    examples = _checked_examples(problems, tokenizer, spec.max_position_embeddings, name)
    log.info("%s: %d params, %d training problems, spec %s", name, count_params(model), len(examples), asdict(spec))
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = fit(model, examples, tokenizer.pad_token_id, spec.steps, spec.batch_size, spec.lr, spec.warmup,
                 spec.weight_decay, seed, desc=name, progress=progress,
                 micro_batches=spec.micro_batches, prompt_weight=spec.prompt_loss_weight)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    sidecar = {"name": name, "params": count_params(model), "kind": "base", "spec": asdict(spec), "seed": seed,
               "threads": threads, "train_seconds": round(seconds, 1),
               "train_cpu_seconds": round(cpu_seconds, 1),
               "final_loss": sum(losses[-50:]) / len(losses[-50:]), "initial_loss": losses[0]}
    save_model(model, tokenizer, out_dir, sidecar)
    return sidecar


def finetune_tuned(spec: TunedSpec, base_dir: str | Path, data: list[dict] | str | Path, out_dir: str | Path,
                   seed: int = 0, name: str | None = None, threads: int | None = 1, progress: bool = True) -> dict:
    """Fine-tune a saved family member further on tuned-style data; save like `train_model`."""
    problems = read_jsonl(data) if isinstance(data, (str, Path)) else data
    name = name or Path(out_dir).name
    base_meta = read_sidecar(base_dir)  # fails early, naming the folder, if the base is not trained
    _seed_everything(seed, threads)
    tokenizer = load_tokenizer(str(base_dir))
    model = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    examples = _checked_examples(problems, tokenizer, model.config.max_position_embeddings, name)
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = fit(model, examples, tokenizer.pad_token_id, spec.steps, spec.batch_size, spec.lr, spec.warmup,
                 spec.weight_decay, seed, desc=name, progress=progress, prompt_weight=spec.prompt_loss_weight)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    sidecar = {"name": name, "params": count_params(model), "kind": "tuned", "base": base_meta.get("name", spec.base),
               "spec": asdict(spec), "seed": seed, "threads": threads, "train_seconds": round(seconds, 1),
               "train_cpu_seconds": round(cpu_seconds, 1),
               "final_loss": sum(losses[-50:]) / len(losses[-50:]), "initial_loss": losses[0]}
    save_model(model, tokenizer, out_dir, sidecar)
    return sidecar


# ---- saving -----------------------------------------------------------------------------------

def save_model(model, tokenizer, out_dir: str | Path, sidecar: dict) -> Path:
    """save_pretrained model + tokenizer + sidecar into a temp folder, then rename it into place."""
    out_dir = Path(out_dir)
    tmp = staging_dir(out_dir)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    replace_dir(tmp, out_dir)
    return out_dir


def read_sidecar(model_dir: str | Path) -> dict:
    path = Path(model_dir) / SIDECAR
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {model_dir} is not a model trained by fsgen.demo")
    return json.loads(path.read_text())


def _seed_everything(seed: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _checked_examples(problems, tokenizer, max_len: int, name: str):
    if not problems:
        raise ValueError(f"{name}: no training problems")
    examples = encode_examples(problems, tokenizer)
    longest = max(len(ids) for ids, _ in examples)
    if longest > max_len:
        raise ValueError(f"{name}: a training example has {longest} tokens > max_position_embeddings {max_len}")
    return examples
