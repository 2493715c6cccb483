"""A model with a batched KV cache whose rows may hold masked-out slots ("holes").

Every decoding method is built from one operation: feed each row of the batch a block of new
tokens and read the next-token logits. Rows need different numbers of new tokens (a prompt of
another length, System 2 catching up on the tokens it skipped, a speculative round that
accepted fewer drafts), so a block is right-aligned: row b's real tokens sit at the end of the
block and the filler slots before them are masked out of attention. Rolling back a speculative
round masks the rejected slots instead of recomputing anything, and trailing slots that no row
uses any more are cropped off the cache.

Positions are tracked per row (`next_position`), so a row's rotary positions, and therefore its
logits, do not depend on how many holes its cache has or what else is in the batch.
"""

from __future__ import annotations

import torch
import inspect

from transformers import DynamicCache

from fsgen.decoding.models import model_device


class CachedModel:
    """One causal LM, its KV cache and the per-row bookkeeping of a batch of B rows."""

    def __init__(self, model: torch.nn.Module, vocab_size: int, batch_size: int):
        self.model = model
        self.vocab_size = vocab_size  # logits past the shared tokenizer vocabulary are dropped
        self.device = model_device(model)
        self.cache = DynamicCache(config=model.config)
        # transformers ≥ 5.2x renamed forward's `past_key_values` to `cache`; older and
        # remote-code models still take `past_key_values`
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._takes_logits_to_keep = "logits_to_keep" in params
        # slot_mask[b, j] == 1 when cache slot j holds a real token of row b   # [B, L]
        self.slot_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)
        # logical position of the next token of each row (0-based)             # [B]
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        # length of the real part of each row's most recent block, for rollback  # [B]
        self._last_block = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    @property
    def batch_size(self) -> int:
        return self.slot_mask.shape[0]

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, valid: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Append a right-aligned block and return float32 log-probabilities.

        tokens: [B, T] token ids (filler ids where `valid` is False)
        valid:  [B, T] bool, True for real tokens; each row's True entries are a suffix
        last_only: compute logits for the block's last slot only (every row's last real token)
        returns [B, T, V] (or [B, 1, V] with last_only) log-softmax over the shared vocabulary;
                only positions where `valid` is True are meaningful.
        """
        tokens = tokens.to(self.device)
        valid = valid.to(self.device)
        block = valid.long()
        # positions of the real tokens continue each row's sequence; fillers get 0 (masked anyway)
        positions = (self.next_position[:, None] + block.cumsum(dim=1) - 1).clamp_min(0) * block
        past = self.slot_mask.shape[1]
        attention_mask = torch.cat([self.slot_mask, block], dim=1)  # [B, L + T]
        extra = {"logits_to_keep": 1} if last_only and self._takes_logits_to_keep else {}
        out = self.model(
            input_ids=tokens,
            attention_mask=attention_mask,
            position_ids=positions,
            cache_position=torch.arange(past, past + tokens.shape[1], device=self.device),
            use_cache=True,
            **{self._cache_kwarg: self.cache},
            **extra,
        )
        self.slot_mask = attention_mask
        self._last_block = block.sum(dim=1)
        self.next_position = self.next_position + self._last_block
        logits = out.logits[..., : self.vocab_size].float()
        if last_only:
            logits = logits[:, -1:]
        return torch.log_softmax(logits, dim=-1)

    def discard_last(self, counts: torch.Tensor) -> None:
        """Roll back: forget the last `counts[b]` real tokens of each row.

        counts: [B] long, each ≤ the number of real slots at the end of the row's cache: the
        last block's real tokens, and earlier blocks' too when no filler or hole lies between
        (speculative decoding rolls back drafts appended by several one-token forwards).
        The slots are masked out (a hole), and trailing slots no row uses are cropped.
        """
        counts = counts.to(self.device)
        # real slots at the end of each row: the run of ones ending at the last slot   # [B]
        trailing_real = self.slot_mask.flip(1).cumprod(dim=1).sum(dim=1)
        if bool((counts > trailing_real).any()):
            raise ValueError("cannot discard more tokens than the row's trailing real slots")
        if not bool(counts.any()):
            return
        length = self.slot_mask.shape[1]
        # a slot is discarded when it is among the last `counts[b]` slots of the row
        # (the last block's real tokens are the row's last slots, right-aligned)
        slot_index = torch.arange(length, device=self.device)[None, :]
        discard = slot_index >= (length - counts[:, None])
        self.slot_mask = self.slot_mask.masked_fill(discard, 0)
        self.next_position = self.next_position - counts
        self._last_block = (self._last_block - counts).clamp_min(0)
        used = self.slot_mask.any(dim=0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else 0
        if keep < length:
            self.cache.crop(keep - length)  # transformers ≥ 5 takes the number to remove, negated
            self.slot_mask = self.slot_mask[:, :keep]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given rows (finished rows leave the batch). rows: [B'] long."""
        rows = rows.to(self.device)
        self.cache.batch_select_indices(rows)
        self.slot_mask = self.slot_mask[rows]
        self.next_position = self.next_position[rows]
        self._last_block = self._last_block[rows]
        # drop leading slots that no remaining row uses
        used = self.slot_mask.any(dim=0).nonzero()
        if used.numel() and int(used.min()) > 0:
            start = int(used.min())
            for layer in self.cache.layers:
                layer.keys = layer.keys[..., start:, :]
                layer.values = layer.values[..., start:, :]
            self.slot_mask = self.slot_mask[:, start:]


def right_align(sequences: list[list[int]], filler: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack token lists into a right-aligned block.

    returns tokens [B, T] (filler on the left) and valid [B, T] bool.
    """
    width = max(1, max(len(s) for s in sequences))
    tokens = torch.full((len(sequences), width), filler, dtype=torch.long)
    valid = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        if seq:
            tokens[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            valid[row, width - len(seq):] = True
    return tokens, valid
