"""The decoding engine: every collaborative method over batched KV caches, with a per-token trace.

    from fsgen.decoding import DecodeConfig, load_systems, decode
    systems = load_systems("oracle", small="org/small", large="org/large")
    result = decode(systems, ["Question: 2 + 3 =", ...], DecodeConfig(method="oracle", max_new_tokens=64))
    result.generations, result.trace, result.metadata

Modules: `config` (DecodeConfig, the only home of decode defaults), `methods` (scoring rules and
the method registry), `routers` (when System 2 is consulted; the one router-spec parser),
`engine` (Systems, load_systems, decode, decode_ids, method_logprobs), `steploop`, `oracle_fast`,
`speculative` (the three decoding loops), `kvcache` (batched KV cache with holes), `models`
(loading, tokenizer checks), `distributions`, `stopping`, `resumable` (decode with a resume cache).

The config and the registry load without torch (the pipeline reads them when it builds the DAG);
the engine's names load torch on first use.
"""

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.methods import METHODS, Method, get_method, register_method

_ENGINE = ("Systems", "DecodeResult", "load_systems", "decode", "decode_ids", "method_logprobs")


def __getattr__(name):
    if name in _ENGINE:
        from fsgen.decoding import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'fsgen.decoding' has no attribute {name!r}")


__all__ = ["DecodeConfig", "METHODS", "Method", "get_method", "register_method", *_ENGINE]
