"""The decoding methods: their per-step scoring rules and the registry that says what each needs.

Scoring rules are pure functions over [B, V] float32 log-softmax tensors over the shared
vocabulary: `l` from the large model (System 2), `s` from the small model (System 1). The chosen
token is the argmax of the score.

`METHODS` is the one home of what a method is: which models it loads (roles), whose argmax is
System 1's choice, which models System 2's side reads when it is consulted, how their
distributions combine, and which decoding loop runs it. Everything else (the engine, the CLI,
the lm-eval model, the pipeline's config checks and job expansion) looks methods up here; adding
a method is one `register_method(Method(...))` call plus its scoring function.

This module imports no torch at load time: the pipeline reads the registry when it builds the DAG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fsgen.decoding.config import DecodeConfig

# ---------------------------------------------------------------------------- scoring rules


def plausible_mask(l: torch.Tensor, alpha: float) -> torch.Tensor:
    """Tokens the large model finds plausible: log p_l ≥ log α + max log p_l. [B, V] bool."""
    return l >= math.log(alpha) + l.max(dim=-1, keepdim=True).values


def contrastive_scores(
    l: torch.Tensor, s: torch.Tensor, alpha: float = 0.1, beta: float = 0.5, formula: str = "blend"
) -> torch.Tensor:
    """Contrastive decoding scores [B, V]; implausible tokens are -inf.

    blend:    s + β(l − s)     (the FS-GEN code's form)
    standard: (1 + β)l − βs    (Li et al.'s contrastive objective with an amateur weight β)
    """
    if formula == "blend":
        score = s + beta * (l - s)
    elif formula == "standard":
        score = (1 + beta) * l - beta * s
    else:
        raise ValueError(f"unknown contrastive formula {formula!r}; expected blend or standard")
    return score.masked_fill(~plausible_mask(l, alpha), float("-inf"))


def proxy_scores(l: torch.Tensor, s_tuned: torch.Tensor, s_base: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Proxy tuning scores [B, V]: l + α(s_tuned − s_base)."""
    return l + alpha * (s_tuned - s_base)


# The registry's `score` functions: (config, System 1 log-probs, System 2 side log-probs) -> scores.
# Each tensor is [..., V]; the last dimension is the vocabulary.


def _large_decides(config: DecodeConfig, s1: torch.Tensor, s2_side: list[torch.Tensor]) -> torch.Tensor:
    return s2_side[0]


def _contrastive(config: DecodeConfig, s1: torch.Tensor, s2_side: list[torch.Tensor]) -> torch.Tensor:
    return contrastive_scores(s2_side[0], s1, config.alpha, config.beta, config.formula)


def _proxy(config: DecodeConfig, s1: torch.Tensor, s2_side: list[torch.Tensor]) -> torch.Tensor:
    large, small_base = s2_side
    return proxy_scores(large, s1, small_base, config.alpha)


# --------------------------------------------------------------------------------- registry

ScoreFn = Callable[["DecodeConfig", "torch.Tensor", "list[torch.Tensor]"], "torch.Tensor"]


@dataclass(frozen=True)
class Method:
    """What a decoding method is, for every part of fsgen that runs or plans it."""

    name: str
    roles: tuple[str, ...]  # models it loads: CLI flags --<role>, lm-eval model_args, pipeline models
    system1: str  # the role whose argmax is System 1's choice (trace column s1_token_id)
    system2: tuple[str, ...] = ()  # roles read when System 2 is consulted; () = never consulted
    score: ScoreFn | None = None  # token choice when consulted: argmax of score(config, s1, system2 side)
    normalize: bool = False  # the score is not a distribution: loglikelihood renormalises it
    loop: str = "steploop"  # "steploop" (token by token) or "speculative" (draft and verify)
    fast_path: bool = False  # with the `always` router the output is the large model's greedy output
    routed: bool = False  # takes a router (when to consult System 2)
    pair: bool = True  # runs on a (large, small) pair; False: one model alone (a baseline)
    params: tuple[str, ...] = ()  # the method-specific DecodeConfig settings it reads (alpha, k, ...)
    defaults: dict = field(default_factory=dict)  # method-specific DecodeConfig defaults

    @property
    def consults_system2(self) -> bool:
        return bool(self.system2)

    @property
    def needs_tuned_small(self) -> bool:
        """The pipeline loads the small model's tuned variant for this method (proxy tuning)."""
        return "small_tuned" in self.roles

    def distribution(self, config: DecodeConfig, logprobs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The method's next-token log-probs from each role's log-probs [..., V] (loglikelihood).

        Where System 2 is consulted (the router does not apply here): the combined score,
        renormalised when it is not already a distribution; a lone model's own log-probs.
        """
        s1 = logprobs[self.system1]
        if self.score is None:
            return s1
        scores = self.score(config, s1, [logprobs[role] for role in self.system2])
        return scores.log_softmax(dim=-1) if self.normalize else scores


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method to the registry (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.system1 not in method.roles or any(role not in method.roles for role in method.system2):
        raise ValueError(f"method {method.name!r}: system1/system2 roles must be among its roles {method.roles}")
    if method.loop not in ("steploop", "speculative"):
        raise ValueError(f"method {method.name!r}: unknown loop {method.loop!r}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method `name`; ValueError listing the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None


def pair_methods() -> tuple[str, ...]:
    """Methods the pipeline runs on pairs (a config's `methods.<variant>.method`)."""
    return tuple(name for name, m in METHODS.items() if m.pair)


def method_specific_params() -> dict[str, tuple[str, ...]]:
    """Setting -> the methods that read it (a setting given to another method is a config error)."""
    takers: dict[str, list[str]] = {}
    for name, m in METHODS.items():
        for param in m.params:
            takers.setdefault(param, []).append(name)
    return {param: tuple(names) for param, names in takers.items()}


register_method(Method("single", roles=("model",), system1="model", pair=False))
register_method(Method("oracle", roles=("small", "large"), system1="small", system2=("large",),
                       score=_large_decides, fast_path=True, routed=True))
register_method(Method("contrastive", roles=("small", "large"), system1="small", system2=("large",),
                       score=_contrastive, normalize=True, routed=True, params=("alpha", "beta", "formula"),
                       defaults={"alpha": 0.1}))
register_method(Method("proxy", roles=("small", "large", "small_tuned"), system1="small_tuned",
                       system2=("large", "small"), score=_proxy, normalize=True, routed=True, params=("alpha",),
                       defaults={"alpha": 1.0}))
register_method(Method("speculative", roles=("small", "large"), system1="small", system2=("large",),
                       score=_large_decides, loop="speculative", params=("k", "temperature")))
