"""What a decode run is asked to do: the one home of the decoding settings and their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fsgen.decoding.methods import get_method

FORMULAS = ("blend", "standard")


@dataclass
class DecodeConfig:
    method: str = "oracle"  # a registered method (fsgen.decoding.methods.METHODS)
    router: str = "always"  # always | never | threshold:T | margin:T | entropy:T | learned:PATH
    alpha: float | None = None  # contrastive plausibility α (0.1) or proxy α (1.0); None = the method's default
    beta: float = 0.5  # contrastive β
    formula: str = "blend"  # contrastive: blend = s + β(l − s) (FS-GEN code); standard = (1+β)l − βs
    k: int = 5  # speculative: tokens drafted by System 1 per verification round
    temperature: float = 0.0  # speculative only: > 0 samples with lossless rejection sampling
    seed: int = 0  # sampling seed; row r uses seed + request_id so rows do not depend on the batch
    max_new_tokens: int = 256  # per request
    stop: tuple[str, ...] = field(default_factory=tuple)  # stop strings; text is cut before the first
    batch_size: int = 8  # prompts decoded together
    top_k: int = 0  # record System 1's top-k probabilities and ids in the trace (0 = off)
    progress: bool | None = None  # tqdm bar over batches; None = only when stderr is a TTY

    def __post_init__(self):
        self.stop = tuple(self.stop)
        method = get_method(self.method)  # ValueError naming the known methods
        if self.formula not in FORMULAS:
            raise ValueError(f"unknown formula {self.formula!r}; expected blend or standard")
        if self.alpha is None:
            self.alpha = method.defaults.get("alpha")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.k < 1:
            raise ValueError(f"k must be ≥ 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict, **overrides) -> DecodeConfig:
        """A config from a settings dict (pipeline params, lm-eval model_args); None means the default.

        Unknown keys are an error naming them, so a misspelt setting never passes silently.
        """
        merged = {k: v for k, v in {**settings, **overrides}.items() if v is not None}
        unknown = sorted(set(merged) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown decode settings {unknown}; expected some of {', '.join(FIELDS)}")
        return cls(**merged)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DecodeConfig))
DEFAULTS = DecodeConfig()  # the defaults, to look up (e.g. DEFAULTS.batch_size) instead of repeating them
