"""Quick checks of the demo family without the pipeline: greedy accuracy and oracle frequency.

These are the measurements the family was tuned with (docs/demo.md); the pipeline measures the
same things through lm-eval and fsgen.decoding.engine. Plain HF forwards, no KV-cache tricks.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import torch

from fsgen.analysis.proxy_gap import gap_share, gap_share_interval
from fsgen.demo.arith import TUNED_STYLE_RE, extract_flexible, extract_strict, extract_tuned_style, final_answer
from fsgen.demo.tokenizer import format_prompt


def left_padded(tokenizer, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, T], attention_mask [B, T]) of token lists, left-padded so every row's next
    token comes from the last column."""
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)  # [B, T]
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)                   # [B, T]
    for i, ids in enumerate(encoded):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention_mask[i, width - len(ids) :] = 1
    return input_ids, attention_mask


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 48,
                    batch_size: int = 50) -> list[list[int]]:
    """Greedy continuations (token ids, up to and including EOS) of each prompt."""
    eos = tokenizer.eos_token_id
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        input_ids, attention_mask = left_padded(tokenizer, [tokenizer.encode(p, add_special_tokens=False)
                                                            for p in chunk])
        width = input_ids.shape[1]
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, width:].tolist():
            outputs.append(row[: row.index(eos) + 1] if eos in row else row)
    return outputs


def answer_scores(texts: list[str], problems: list[dict]) -> dict:
    """Exact-match rates of answers under the task's three filters, the tuned style's rate, samples.

    strict: "#### N" (lm-eval strict-match); flexible: the last number; tuned_style: the number
    of the tuned sentence "<Name> has N <items> now." (0 for an answer without it); style_rate:
    answers with the tuned sentence, right number or not. "hits": the same four per problem
    ({metric: [P] bools}, for paired comparisons).
    """
    gold = [final_answer(p) for p in problems]
    hits = {
        "strict": [extract_strict(t) == g for t, g in zip(texts, gold)],
        "flexible": [extract_flexible(t) == g for t, g in zip(texts, gold)],
        "tuned_style": [extract_tuned_style(t) == g for t, g in zip(texts, gold)],
        "style_rate": [TUNED_STYLE_RE.search(t) is not None for t in texts],
    }
    return {**{metric: sum(h) / len(problems) for metric, h in hits.items()}, "samples": texts[:3], "hits": hits}


def accuracy(model, tokenizer, problems: list[dict], max_new_tokens: int = 48) -> dict:
    """answer_scores() of the model's greedy answers."""
    prompts = [format_prompt(p["question"]) for p in problems]
    texts = [tokenizer.decode(ids, skip_special_tokens=True)
             for ids in greedy_generate(model, tokenizer, prompts, max_new_tokens)]
    return answer_scores(texts, problems)


@torch.no_grad()
def oracle_frequency(large, small, tokenizer, problems: list[dict], max_new_tokens: int = 48) -> float:
    """Share of the large model's greedy tokens where the small model's argmax differs.

    The small model is teacher-forced on prompt + the large model's output: this is oracle
    decoding's intervention rate (System 2 decides every token, interventions where they differ).
    """
    prompts = [format_prompt(p["question"]) for p in problems]
    generated = greedy_generate(large, tokenizer, prompts, max_new_tokens)
    vocab = len(tokenizer)
    disagreements = tokens = 0
    for prompt, gen in zip(prompts, generated):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        full = torch.tensor([ids + gen])                                   # [1, T]
        logits = small(input_ids=full).logits[0, :, :vocab]               # [T, V]
        # The logits at position t predict token t + 1: those predicting the generated tokens.
        predicted = logits[len(ids) - 1 : len(ids) - 1 + len(gen)].argmax(-1)  # [G]
        disagreements += int((predicted != torch.tensor(gen)).sum())
        tokens += len(gen)
    return disagreements / max(1, tokens)


@torch.no_grad()
def proxy_generate(large, small_base, small_tuned, tokenizer, prompts: list[str], alpha: float = 1.0,
                   max_new_tokens: int = 48, batch_size: int = 50) -> list[list[int]]:
    """Greedy proxy tuning: argmax of log p_large + α (log p_tuned − log p_base), full forwards.

    A slow obvious reference (no KV cache) used to check that the tuned variant's style carries
    over to the large model.
    """
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    outputs = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts[start : start + batch_size]]
        input_ids, attention_mask = left_padded(tokenizer, encoded)                             # [B, T]
        done = torch.zeros(len(encoded), dtype=torch.bool)                                      # [B]
        generated = []
        for _ in range(max_new_tokens):
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)                         # [B, T]
            def logp(model):
                logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
                return torch.log_softmax(logits[:, -1, :vocab].float(), dim=-1)                  # [B, V]
            scores = logp(large) + alpha * (logp(small_tuned) - logp(small_base))
            next_ids = torch.where(done, torch.full_like(done, tokenizer.pad_token_id, dtype=torch.long),
                                   scores.argmax(-1))                                           # [B]
            generated.append(next_ids)
            input_ids = torch.cat([input_ids, next_ids[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, (~done).long()[:, None]], dim=1)
            done |= next_ids == eos
            if done.all():
                break
        for row in torch.stack(generated, dim=1).tolist():
            outputs.append(row[: row.index(eos) + 1] if eos in row else row)
    return outputs


def proxy_accuracy(large, small_base, small_tuned, tokenizer, problems: list[dict], alpha: float = 1.0) -> dict:
    """answer_scores() of greedy proxy tuning."""
    prompts = [format_prompt(p["question"]) for p in problems]
    texts = [tokenizer.decode(ids, skip_special_tokens=True)
             for ids in proxy_generate(large, small_base, small_tuned, tokenizer, prompts, alpha)]
    return answer_scores(texts, problems)


# ---- proxy tuning against its reference: the large model tuned directly ------------------------

GAP_METRICS = ("tuned_style", "style_rate")


def proxy_gap_report(large, large_tuned, smalls: dict, tokenizer, problems: list[dict], alpha: float = 1.0) -> dict:
    """Proxy tuning of `large` with each (small_base, small_tuned) of `smalls` (name -> pair of
    models), against `large_tuned` (the large model fine-tuned on the same tuned data).

    Returns {"large": scores, "large_tuned": scores, "alpha": α, "pairs": {name: {"small_tuned":
    scores, "proxy": scores, "share": {metric: gap_share}, "share_interval": {metric: 95% bootstrap
    interval}, "strict_change": proxy strict − large strict, "tuned_style_change": proxy
    tuned_style − large strict}}}; scores = answer_scores() rates. The share is on `tuned_style`
    (exact match read from the tuned sentence: style and accuracy together) and `style_rate`;
    the two changes say whether accuracy is kept while the style moves (the strict gap between
    the large model and its tuned version is near 0, so a share of it would be noise).
    """
    def rates(result: dict) -> dict:
        return {k: v for k, v in result.items() if k not in ("samples", "hits")}

    large_scores, ref_scores = accuracy(large, tokenizer, problems), accuracy(large_tuned, tokenizer, problems)
    report = {"large": rates(large_scores), "large_tuned": rates(ref_scores), "alpha": alpha, "pairs": {}}
    for name, (small_base, small_tuned) in smalls.items():
        proxy = proxy_accuracy(large, small_base, small_tuned, tokenizer, problems, alpha)
        report["pairs"][name] = {
            "small_tuned": rates(accuracy(small_tuned, tokenizer, problems)),
            "proxy": rates(proxy),
            "share": {m: gap_share(large_scores[m], proxy[m], ref_scores[m]) for m in GAP_METRICS},
            "share_interval": {m: gap_share_interval(large_scores["hits"][m], proxy["hits"][m], ref_scores["hits"][m])
                               for m in GAP_METRICS},
            "strict_change": proxy["strict"] - large_scores["strict"],
            "tuned_style_change": proxy["tuned_style"] - large_scores["strict"],
        }
    return report


def proxy_gap_check(models_dir, test_jsonl, large: str = "arith-l", smalls=("arith-xs", "arith-s", "arith-m"),
                    alpha: float = 1.0, limit: int | None = None) -> dict:
    """proxy_gap_report() for trained family folders `<models_dir>/<name>` and `<name>-tuned`."""
    from pathlib import Path

    from transformers import LlamaForCausalLM

    from fsgen.demo.arith import read_jsonl
    from fsgen.models import load_tokenizer

    def load(name: str):
        folder = Path(models_dir) / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing: train {name} first (python -m fsgen.demo train {name} ...)")
        return LlamaForCausalLM.from_pretrained(str(folder)).eval()

    problems = read_jsonl(test_jsonl)[:limit]
    pairs = {s: (load(s), load(f"{s}-tuned")) for s in smalls}
    return proxy_gap_report(load(large), load(f"{large}-tuned"), pairs, load_tokenizer(str(Path(models_dir) / large)),
                            problems, alpha)


def check_family(models_dir, test_jsonl, names, limit=150, proxy_large="arith-l") -> dict:
    """Print (and return) accuracy per model, oracle frequency per pair, proxy style/accuracy."""
    from transformers import LlamaForCausalLM

    from fsgen.decoding.models import load_tokenizer
    from fsgen.demo.arith import read_jsonl

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
