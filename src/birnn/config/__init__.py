"""Typed schemas for every config group, checked once before any work starts:
`birnn.config.validate(cfg)` checks a composed training config."""

from birnn.config.base import Schema, check, describe

__all__ = ["Schema", "check", "describe", "validate"]


def __getattr__(name: str):
    # imported on first use: the group schemas import the encoder, which imports this
    # package's base for its own schema
    if name == "validate":
        from birnn.config.train import validate

        return validate
    raise AttributeError(f"module 'birnn.config' has no attribute {name!r}")
