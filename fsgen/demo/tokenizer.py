"""The demo family's tokenizer and prompt format: a byte-level BPE trained with `tokenizers`,
saved as a Hugging Face PreTrainedTokenizerFast folder. No torch here, so the tokenizer rule
starts in a fraction of the time the training rules take.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# Every digit is its own pre-token (with the space before it, if any), so numbers are spelled
# digit by digit and arithmetic is learnable; words and punctuation keep their leading space.
PRETOKEN_PATTERN = r"\s?\d|\s?[A-Za-z]+|\s?[^\sA-Za-z\d]+|\s+"


# ---- prompt format (identical to fsgen/harness/lm_eval_tasks/arith/arith.yaml) -----------------------------

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
    tmp = staging_dir(out_dir)
    fast.save_pretrained(str(tmp))
    replace_dir(tmp, out_dir)
    return fast


# ---- folders written whole ----------------------------------------------------------------------

def staging_dir(out_dir: Path) -> Path:
    """An empty sibling folder to write `out_dir`'s content into before `replace_dir`."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Put the finished folder in place: a reader never sees a half-written model or tokenizer."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
