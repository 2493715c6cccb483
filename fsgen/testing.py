"""Tiny local model families for tests and benchmarks (no downloads).

Everything here goes through the same loading path users hit: the models are written with
`save_pretrained` and read back with `from_pretrained` on a folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers, decoders
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# A few hundred words of text so the BPE has something to learn from.
_CORPUS = [
    "Tom has 3 apples. He buys 4 more. 3 + 4 = 7. #### 7",
    "Ann had 12 pens and gave away 5. 12 - 5 = 7. #### 7",
    "A box holds 6 eggs. 4 boxes hold 6 * 4 = 24 eggs. #### 24",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Question: What is 9 times 8? Answer: 72",
    "Small models write most tokens; large models step in when needed.",
] * 20

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tokenizer(out_dir: str | Path, vocab_size: int = 200, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `corpus` and save it in Hugging Face format."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or _CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_model(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    vocab_pad: int = 0,
    init_std: float = 0.3,
) -> Path:
    """A randomly initialised Llama-type model, saved with its tokenizer.

    `init_std` is large so that next-token distributions are peaked (few near-ties in argmax);
    `vocab_pad` adds embedding rows beyond the tokenizer (like Qwen's padded vocabularies).
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + vocab_pad,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        initializer_range=init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_family(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """small, large (padded vocabulary), small_tuned: three tiny models sharing one tokenizer."""
    root = Path(root)
    tokenizer = build_tokenizer(root / "tokenizer")
    return {
        "small": build_model(root / "small", tokenizer, hidden_size=32, num_layers=2, seed=seed),
        "large": build_model(root / "large", tokenizer, hidden_size=64, num_layers=3, seed=seed + 1, vocab_pad=7),
        "small_tuned": build_model(root / "small_tuned", tokenizer, hidden_size=32, num_layers=2, seed=seed + 2),
    }


_GENERATION_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["Question:"]
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def write_generation_task(folder: str | Path, name: str, data: str | Path) -> Path:
    """A minimal lm-eval generate_until task over a local JSONL of {"question", "answer"}."""
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_GENERATION_TASK.format(name=name, data=data))
    return path


# ---------------------------------------------------------------- tokenizer variants

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
# ChatML, as Qwen1.5-Chat renders a conversation (system prompt only when one is given)
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_variant(source: str | Path, out_dir: str | Path, *, eos_token: str | None = None,
                      chat_template: str | None = None, swap: tuple[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A copy of the tokenizer saved in `source`, written to `out_dir`, with another EOS token,
    a chat template, or the ids of two vocabulary tokens swapped (same size, other ids)."""
    import json

    out_dir = Path(out_dir)
    tok = PreTrainedTokenizerFast.from_pretrained(str(source))
    if swap is not None:
        spec = json.loads(tok.backend_tokenizer.to_str())
        vocab = spec["model"]["vocab"]
        vocab[swap[0]], vocab[swap[1]] = vocab[swap[1]], vocab[swap[0]]
        special = dict(tok.special_tokens_map)
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), **special)
    if eos_token is not None:
        tok.eos_token = eos_token
    if chat_template is not None:
        tok.chat_template = chat_template
    tok.save_pretrained(str(out_dir))
    return tok


def build_chat_tokenizers(root: str | Path) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """A base tokenizer and its chat variant, as Qwen1.5 and Qwen1.5-Chat: one vocabulary (ChatML's
    `<|im_start|>` / `<|im_end|>` added to both); the chat one ends with `<|im_end|>` instead of
    `</s>` and has a ChatML chat template. Saved in root/base and root/chat."""
    root = Path(root)
    base = build_tokenizer(root / "base")
    base.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
    base.save_pretrained(str(root / "base"))
    chat = tokenizer_variant(root / "base", root / "chat", eos_token=CHAT_TOKENS[1], chat_template=CHATML_TEMPLATE)
    return PreTrainedTokenizerFast.from_pretrained(str(root / "base")), chat


# ------------------------------------------------------------ a stand-in for the Qwen1.5 family
# Qwen1.5's tokenizer has 151643 regular tokens and three special ones; its embedding matrices have
# 151936 rows up to 7B and 152064 from 14B on. The stand-ins keep that pattern, scaled down: rows
# padded to a multiple of ROW_MULTIPLE above the tokenizer, one ROW_MULTIPLE more from 14B on.
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ROW_MULTIPLE = 64
# size -> (hidden, layers, wider vocabulary rows); all tiny: the point is the shapes, not the sizes
QWEN15_STANDIN_SIZES = {"0.5B": (16, 1, False), "1.8B": (16, 2, False), "4B": (24, 1, False), "7B": (24, 2, False),
                        "14B": (32, 1, True), "32B": (32, 2, True), "72B": (48, 2, True)}
# Qwen1.5-Chat's own template: ChatML with a default system prompt when none is given
_CHATML_DEFAULT_SYSTEM = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
                          "assistant.<|im_end|>\n{% endif %}" + CHATML_TEMPLATE)


def build_qwen_tokenizers(corpus: list[str], vocab_size: int = 1000) -> dict[str, PreTrainedTokenizerFast]:
    """"base" and "chat" byte-level BPE tokenizers that map every string to the same ids and differ,
    like Qwen1.5's, only in special tokens (EOS <|endoftext|> vs <|im_end|>) and chat template
    (the chat one adds a default system prompt)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    eos = {"base": "<|endoftext|>", "chat": "<|im_end|>"}
    template = {"base": CHATML_TEMPLATE, "chat": _CHATML_DEFAULT_SYSTEM}
    return {kind: PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos[kind], pad_token="<|endoftext|>",
                                          chat_template=template[kind])
            for kind in ("base", "chat")}


def build_qwen_model(out_dir: str | Path, tokenizer: PreTrainedTokenizerFast, hidden_size: int, num_layers: int,
                     rows: int, seed: int, tie_word_embeddings: bool = False, init_std: float = 0.3,
                     eos_boost: float = 3.0) -> Path:
    """A random Qwen2-architecture model with `rows` embedding rows, saved with its tokenizer.

    `eos_boost` scales the output row of the tokenizer's EOS so that greedy generations of a random
    model mostly end within tens of tokens (without it nearly all run to the token budget: a 512-token
    budget then costs most of a test's time). No pad_token_id in the config, as Qwen1.5's (it would
    zero the pad token's embedding row, which is EOS's for the base tokenizer)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=rows, hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=num_layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192, initializer_range=init_std,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=tie_word_embeddings,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= eos_boost
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def build_qwen15_standin(root: str | Path, corpus: list[str] | None = None, sizes: dict | None = None) -> dict[str, Path]:
    """A model mirror (`model_mirror`, fsgen.pipeline.mirror) of the FS-GEN grid's 14 Qwen1.5
    models: hub id (`Qwen/Qwen1.5-7B`, `Qwen/Qwen1.5-7B-Chat`) -> folder root/<hub id>. Tiny random
    Qwen2-architecture models, base and -Chat of each size (other weights, same architecture,
    the tokenizers of `build_qwen_tokenizers`), padded vocabularies as Qwen1.5's, the 0.5B with tied
    embeddings. `corpus`: text the tokenizer learns its merges from (the benchmarks' documents keep
    prompts short)."""
    sizes = sizes or QWEN15_STANDIN_SIZES
    tokenizers = build_qwen_tokenizers((corpus or []) + _CORPUS)
    rows = -(-len(tokenizers["base"]) // ROW_MULTIPLE) * ROW_MULTIPLE
    out = {}
    for index, (size, (hidden, layers, wider)) in enumerate(sizes.items()):
        for kind, suffix in (("base", ""), ("chat", "-Chat")):
            hub_id = f"Qwen/Qwen1.5-{size}{suffix}"
            out[hub_id] = build_qwen_model(Path(root) / hub_id, tokenizers[kind], hidden, layers,
                                           rows + (ROW_MULTIPLE if wider else 0), seed=2 * index + (kind == "chat"),
                                           tie_word_embeddings=size == "0.5B")
    return out
