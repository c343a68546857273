"""Evaluation metrics."""

from birnn.metrics.spans import SCHEMES, SpanF1, convert_tags, get_spans

__all__ = ["SCHEMES", "SpanF1", "convert_tags", "get_spans"]
