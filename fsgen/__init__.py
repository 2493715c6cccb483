"""fsgen: collaborative decoding between a small (System 1) and a large (System 2) language model."""

__version__ = "0.1.0"
