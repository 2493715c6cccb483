"""The pipeline's config: YAML loading (duplicate keys refused), the JSON schema, and defaults.

Every rejection is a `ConfigError("<key path>: <what is wrong>")`. The semantic checks beyond the
schema are in `fsgen.pipeline.checks`.
"""

from __future__ import annotations

import os

import yaml


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message starts with the key path."""


# ----------------------------------------------------------------------------------- loading
class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (libyaml's when available: DAG build time) that refuses duplicate mapping keys
    (plain YAML keeps the last one silently)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{key}: duplicate key (line {seen[key] + 1} and line {key_node.start_mark.line + 1}"
                f" of {loader.name}); each name may appear once"
            )
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_unique(path: str | os.PathLike) -> dict:
    """Load a YAML file, raising `ConfigError` on a duplicate key (e.g. a model named twice)."""
    with open(path, encoding="utf-8") as f:
        loader = _UniqueKeyLoader(f)
        loader.name = str(path)  # named in the duplicate-key message
        try:
            return loader.get_single_data() or {}
        finally:
            loader.dispose()


# ------------------------------------------------------------------------------ JSON schema
def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def validate_schema(config: dict, schema: dict) -> None:
    """Validate against the JSON schema; the first error (in key order) becomes a `ConfigError`."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        message = err.message
        if err.validator == "additionalProperties":
            # name the unexpected key itself: "modles: unknown key (...)"
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            if extra:
                path.append(extra[0])
                allowed = ", ".join(sorted(err.schema.get("properties", {})))
                message = f"unknown key (typo?); allowed here: {allowed}"
        raise ConfigError(f"{_key_path(path)}: {message}")


def fill_defaults(config, schema: dict):
    """Fill `default`s of the schema into the config in place (objects, named entries, lists)."""
    if isinstance(config, dict) and schema.get("type") == "object":
        for key, sub in schema.get("properties", {}).items():
            if key not in config and "default" in sub:
                config[key] = _copy(sub["default"])
            if key in config:
                fill_defaults(config[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in config.items():
                if key not in schema.get("properties", {}):
                    fill_defaults(value, extra)
    elif isinstance(config, list) and isinstance(schema.get("items"), dict):
        for item in config:
            fill_defaults(item, schema["items"])
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        if option.get("type") == "object" and isinstance(config, dict):
            fill_defaults(config, option)
        elif option.get("type") == "array" and isinstance(config, list):
            fill_defaults(config, option)
    return config


def _copy(value):
    return yaml.safe_load(yaml.safe_dump(value))
