"""Evaluation metrics (the tag schemes and spans they read: `birnn.tags`)."""

from birnn.metrics.spans import SpanF1

__all__ = ["SpanF1"]
