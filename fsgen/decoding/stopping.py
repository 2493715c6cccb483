"""When a generated sequence is finished, and what text it yields."""

from __future__ import annotations

from collections.abc import Iterable


class StopCriteria:
    """EOS tokens, stop strings and a token budget, checked on one row's generated ids.

    A sequence is finished at the first of: an EOS token (kept in `token_ids`, not in the text),
    the token that completes a stop string (kept; the text is cut before the stop string, as
    lm-eval's `until` expects), or `max_new_tokens` tokens.
    """

    def __init__(self, tokenizer, eos_token_ids: Iterable[int], stop: Iterable[str], max_new_tokens: int):
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.stop = tuple(s for s in stop if s)
        self.max_new_tokens = max_new_tokens

    def finished_length(self, token_ids: list[int], checked: int = 0) -> int | None:
        """Number of tokens to keep if the row is finished, else None.

        `checked`: how many leading tokens are already known not to finish the row, so a
        speculative round that appends several tokens at once finds the earliest stop.
        """
        for end in range(checked + 1, len(token_ids) + 1):
            if token_ids[end - 1] in self.eos_token_ids:
                return end
            if self.stop and self._has_stop(token_ids[:end]):
                return end
            if end >= self.max_new_tokens:
                return end
        return None

    def _has_stop(self, token_ids: list[int]) -> bool:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return any(s in text for s in self.stop)

    def text(self, token_ids: list[int]) -> str:
        """Decoded text, cut before the first stop string."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in self.stop if s in text), default=len(text))
        return text[:cut]


def eos_token_ids(tokenizer, *models) -> set[int]:
    """The tokenizer's EOS plus every model's generation_config EOS (which may be a list)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for model in models:
        if model is None:
            continue
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids
