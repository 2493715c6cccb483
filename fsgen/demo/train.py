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
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fsgen.demo.arith import read_jsonl
from fsgen.models import load_tokenizer

log = logging.getLogger("fsgen.demo")

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# Every digit is its own pre-token (with the space before it, if any), so numbers are spelled
# digit by digit and arithmetic is learnable; words and punctuation keep their leading space.
PRETOKEN_PATTERN = r"\s?\d|\s?[A-Za-z]+|\s?[^\sA-Za-z\d]+|\s+"
SIDECAR = "fsgen_model.json"


@dataclass
class ModelSpec:
    hidden_size: int = 64          # width; the main size knob
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 0     # MLP width; 0 = 3 × hidden_size
    steps: int = 1500              # optimizer steps
    batch_size: int = 16           # problems per step
    lr: float = 3e-3               # peak AdamW learning rate (linear warmup, cosine decay to 10%)
    warmup: int = 50               # warmup steps
    weight_decay: float = 0.01
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
    steps: int = 200               # further optimizer steps on the tuned-style data
    batch_size: int = 16
    lr: float = 1e-3               # lower than pre-training: shift the style, keep the skill
    warmup: int = 20
    weight_decay: float = 0.01


# ---- prompt format (identical to workflow/tasks/arith/arith.yaml) -----------------------------

def format_prompt(question: str) -> str:
    """lm-eval's doc_to_text: the model continues after "Answer:"."""
    return f"Question: {question}\nAnswer:"


def format_target(answer: str) -> str:
    """lm-eval's target_delimiter (" ") + doc_to_target."""
    return f" {answer}"


# ---- tokenizer --------------------------------------------------------------------------------

def train_tokenizer(problems: list[dict], out_dir: str | Path, vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the formatted problems and save it in Hugging Face format.

    No BOS/EOS is added on encode (like lm-eval's default for such tokenizers); training appends
    EOS after each answer so that greedy decoding stops by itself.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # Only the characters of the corpus, not all 256 bytes: unused rows would be most of the
        # smallest model's parameters.
        show_progress=False,
    )
    corpus = (format_prompt(p["question"]) + format_target(p["answer"]) for p in problems)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=1024,
    )
    out_dir = Path(out_dir)
    tmp = _tmp_dir(out_dir)
    fast.save_pretrained(str(tmp))
    _replace_dir(tmp, out_dir)
    return fast


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


def make_batch(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids/attention_mask [B, T]; labels [B, T] are -100 on prompt and padding,
    so the loss is on the answer (and its EOS) only."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def fit(model, examples, pad_id: int, steps: int, batch_size: int, lr: float, warmup: int,
        weight_decay: float, seed: int, desc: str = "train", progress: bool = True, callback=None) -> list[float]:
    """AdamW on random batches drawn with a seeded generator; returns the loss of every step.

    `callback(step, model)`, if given, runs after every optimizer step (e.g. to evaluate).
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
        loss = model(**make_batch([examples[i] for i in idx], pad_id)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
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
    examples = _checked_examples(problems, tokenizer, spec.max_position_embeddings, name)
    log.info("%s: %d params, %d training problems, spec %s", name, count_params(model), len(examples), asdict(spec))
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = fit(model, examples, tokenizer.pad_token_id, spec.steps, spec.batch_size, spec.lr, spec.warmup,
                 spec.weight_decay, seed, desc=name, progress=progress)
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
                 spec.weight_decay, seed, desc=name, progress=progress)
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
    tmp = _tmp_dir(out_dir)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    _replace_dir(tmp, out_dir)
    return out_dir


def read_sidecar(model_dir: str | Path) -> dict:
    path = Path(model_dir) / SIDECAR
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {model_dir} is not a model trained by fsgen.demo")
    return json.loads(path.read_text())


def _tmp_dir(out_dir: Path) -> Path:
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


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
