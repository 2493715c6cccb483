"""When System 2 is consulted: router specs, decisions, and the learned router.

A router looks at System 1's next-token distribution (a `fsgen.decoding.distributions.Summary`) and
returns, per row, whether System 2 is consulted for this position.

Specs: `always`, `never`, `threshold:T` (top-1 probability < T), `margin:T` (top-1 − top-2
probability < T), `entropy:T` (entropy in nats > T), `learned:PATH` (a scikit-learn classifier
over System 1's top-k probabilities saved by `train_learned_router`; consult when the predicted
probability of an intervention exceeds the threshold stored with it, 0.5 by default).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fsgen.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fsgen.decoding.distributions import Summary


class Router:
    name = "router"
    top_k = 0  # how many of System 1's top probabilities the router needs in the summary

    def consult(self, summary: Summary) -> torch.Tensor:  # [B] bool
        raise NotImplementedError


class AlwaysRouter(Router):
    name = "always"

    def consult(self, summary: Summary) -> torch.Tensor:
        return summary.argmax.new_ones(summary.argmax.shape, dtype=bool)


class NeverRouter(Router):
    name = "never"

    def consult(self, summary: Summary) -> torch.Tensor:
        return summary.argmax.new_zeros(summary.argmax.shape, dtype=bool)


@dataclass
class ThresholdRouter(Router):
    t: float  # consult when System 1's top-1 probability < t

    def consult(self, summary: Summary) -> torch.Tensor:
        return summary.top1_prob < self.t


@dataclass
class MarginRouter(Router):
    t: float  # consult when top-1 − top-2 probability < t

    def consult(self, summary: Summary) -> torch.Tensor:
        return (summary.top1_prob - summary.top2_prob) < self.t


@dataclass
class EntropyRouter(Router):
    t: float  # consult when System 1's entropy (nats) > t

    def consult(self, summary: Summary) -> torch.Tensor:
        return summary.entropy > self.t


class LearnedRouter(Router):
    """A classifier over System 1's top-k probabilities predicting an intervention."""

    def __init__(self, path: str | os.PathLike):
        import joblib

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"learned router file not found: {path}")
        saved = joblib.load(path)
        if not isinstance(saved, dict) or "model" not in saved or "top_k" not in saved:
            raise ValueError(f"{path} is not a router saved by fsgen.decoding.routers.train_learned_router")
        self.path = str(path)
        self.model = saved["model"]
        self.top_k = int(saved["top_k"])
        self.threshold = float(saved.get("threshold", 0.5))

    def consult(self, summary: Summary) -> torch.Tensor:
        if summary.topk_probs is None or summary.topk_probs.shape[1] < self.top_k:
            raise ValueError(f"learned router {self.path} needs System 1's top-{self.top_k} probabilities")
        features = summary.topk_probs[:, : self.top_k].float().cpu().numpy()
        p_intervene = self.model.predict_proba(features)[:, 1]
        import torch

        return torch.from_numpy(p_intervene > self.threshold).to(summary.argmax.device)


ROUTER_KINDS = ("always", "never", "threshold", "margin", "entropy", "learned")
_THRESHOLD_KINDS = {"threshold": ThresholdRouter, "margin": MarginRouter, "entropy": EntropyRouter}


@dataclass(frozen=True)
class RouterSpec:
    """A parsed router spec: its kind and its argument (a threshold, or a learned router's path)."""

    kind: str  # one of ROUTER_KINDS
    threshold: float | None = None  # threshold, margin, entropy
    path: str | None = None  # learned
    text_arg: str = ""  # the threshold as written in the spec (kept for the slug: '0.50' stays '0.50')

    @property
    def slug(self) -> str:
        """Path-safe suffix naming the router: 'entropy:0.5' -> 'entropy0.5', 'learned:r/x.joblib' -> 'learnedx'."""
        arg = Path(self.path).stem if self.kind == "learned" else self.text_arg
        return re.sub(r"[^A-Za-z0-9._-]", "-", self.kind + arg)


def parse_router_spec(spec) -> RouterSpec:
    """Check a router spec without loading anything; ValueError saying what is wrong with it.

    always | never | threshold:T | margin:T | entropy:T (T a finite number ≥ 0) | learned:PATH
    """
    if not isinstance(spec, str):
        raise ValueError(f"router must be a string like 'entropy:1.0', got {spec!r}")
    kind, sep, arg = spec.strip().partition(":")
    if kind not in ROUTER_KINDS:
        raise ValueError(f"unknown router {kind!r} in {spec!r}; expected one of {', '.join(ROUTER_KINDS)}")
    if kind in ("always", "never"):
        if sep:
            raise ValueError(f"router {kind!r} takes no argument, got {spec!r}")
        return RouterSpec(kind)
    if kind == "learned":
        if not arg:
            raise ValueError("router 'learned' needs a path, e.g. 'learned:results/router.joblib'")
        return RouterSpec(kind, path=arg)
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"malformed threshold {arg!r} in router {spec!r}; expected a number, e.g. '{kind}:0.5'") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold in router {spec!r} must be a finite number ≥ 0")
    return RouterSpec(kind, threshold=value, text_arg=arg)


def build_router(spec: str | RouterSpec) -> Router:
    """The router a spec names (a learned router is loaded from its file)."""
    parsed = spec if isinstance(spec, RouterSpec) else parse_router_spec(spec)
    if parsed.kind == "always":
        return AlwaysRouter()
    if parsed.kind == "never":
        return NeverRouter()
    if parsed.kind == "learned":
        return LearnedRouter(parsed.path)
    return _THRESHOLD_KINDS[parsed.kind](parsed.threshold)


def router_features(trace_df, top_k: int) -> np.ndarray:
    """[N, top_k] System 1 top-k probabilities from a trace's `s1_topk_probs` column."""
    if "s1_topk_probs" not in trace_df.columns:
        raise ValueError("trace has no s1_topk_probs column; decode with top_k > 0 to train a learned router")
    rows = [np.asarray(p, dtype=np.float32) for p in trace_df["s1_topk_probs"]]
    short = [len(p) for p in rows if len(p) < top_k]
    if short:
        raise ValueError(f"trace records top-{short[0]} probabilities; the router needs top_k={top_k}")
    return np.stack([p[:top_k] for p in rows]) if rows else np.zeros((0, top_k), np.float32)


def train_learned_router(trace_df, path: str | os.PathLike, top_k: int = 10, seed: int = 0, threshold: float = 0.5):
    """Fit a logistic regression P(intervention | System 1's top-k probs) and save it with joblib.

    Trained on the positions where System 2 was consulted (only there is an intervention
    observable). Written atomically; returns the saved dict {"model", "top_k", "threshold"}.
    """
    import joblib
    from sklearn.linear_model import LogisticRegression

    seen = trace_df[trace_df["s2_called"].astype(bool)]
    if len(seen) == 0:
        raise ValueError("no trace rows with s2_called; a learned router needs positions where System 2 was consulted")
    labels = seen["intervened"].astype(bool).to_numpy()
    if labels.all() or not labels.any():
        raise ValueError("trace rows have only one class of 'intervened'; cannot train a learned router")
    model = LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(router_features(seen, top_k), labels)
    saved = {"model": model, "top_k": int(top_k), "threshold": float(threshold)}
    with atomic_path(path) as tmp:
        joblib.dump(saved, tmp)
    return saved
