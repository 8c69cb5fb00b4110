"""specguard: a pytest suite that checks, every night, that vLLM speculative decoding still pays."""

__version__ = "0.1.0"
