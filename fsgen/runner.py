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
from transformers import DynamicCache

from fsgen.models import model_device


class CachedModel:
    """One causal LM, its KV cache and the per-row bookkeeping of a batch of B rows."""

    def __init__(self, model: torch.nn.Module, vocab_size: int, batch_size: int):
        self.model = model
        self.vocab_size = vocab_size  # logits past the shared tokenizer vocabulary are dropped
        self.device = model_device(model)
        self.cache = DynamicCache(config=model.config)
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
    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Append a right-aligned block and return float32 log-probabilities.

        tokens: [B, T] token ids (filler ids where `valid` is False)
        valid:  [B, T] bool, True for real tokens; each row's True entries are a suffix
        returns [B, T, V] log-softmax over the shared vocabulary; only positions where
                `valid` is True are meaningful.
        """
        tokens = tokens.to(self.device)
        valid = valid.to(self.device)
        block = valid.long()
        # positions of the real tokens continue each row's sequence; fillers get 0 (masked anyway)
        positions = (self.next_position[:, None] + block.cumsum(dim=1) - 1).clamp_min(0) * block
        past = self.slot_mask.shape[1]
        attention_mask = torch.cat([self.slot_mask, block], dim=1)  # [B, L + T]
        out = self.model(
            input_ids=tokens,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=self.cache,
            cache_position=torch.arange(past, past + tokens.shape[1], device=self.device),
            use_cache=True,
        )
        self.slot_mask = attention_mask
        self._last_block = block.sum(dim=1)
        self.next_position = self.next_position + self._last_block
        logits = out.logits[..., : self.vocab_size].float()
        return torch.log_softmax(logits, dim=-1)

    def discard_last(self, counts: torch.Tensor) -> None:
        """Roll back: forget the last `counts[b]` real tokens of each row.

        counts: [B] long, each ≤ the number of real tokens in the row's most recent block.
        The slots are masked out (a hole), and trailing slots no row uses are cropped.
        """
        counts = counts.to(self.device)
        if bool((counts > self._last_block).any()):
            raise ValueError("cannot discard more tokens than the last block appended")
        if not bool(counts.any()):
            return
        length = self.slot_mask.shape[1]
        # a slot is discarded when it is among the last `counts[b]` slots of the row
        # (the last block's real tokens are the row's last slots, right-aligned)
        slot_index = torch.arange(length, device=self.device)[None, :]
        discard = slot_index >= (length - counts[:, None])
        self.slot_mask = self.slot_mask.masked_fill(discard, 0)
        self.next_position = self.next_position - counts
        self._last_block = self._last_block - counts
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
