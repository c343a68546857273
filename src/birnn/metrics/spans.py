"""A span-level F1 metric (torchmetrics), scored by the rules of ``conlleval``; the spans
themselves are read by `birnn.tags`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from birnn.tags import parse_tag, spans_of_parsed

__all__ = ["SpanF1"]


class SpanF1(Metric):
    """Span-level (entity-level) precision, recall and F1, as ``conlleval`` computes them.

    A predicted span counts as correct only when a gold span has the same type, start and end.
    Counts per entity type are kept in summed states, so they synchronise across DDP processes.

    Args:
        labels: The tag names indexed by id, e.g. ``["O", "B-PER", "I-PER"]``. The entity
            types are the sorted set of types among them.
        ignore_index: A target id marking positions to leave out (such as non-first subword
            tokens). Those positions are removed from both the prediction and the target before
            spans are read, so the remaining tokens are scored as one sequence.

    Raises:
        ValueError: A label is not a valid tag.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    tp: Tensor
    n_pred: Tensor
    n_gold: Tensor

    def __init__(self, labels: Sequence[str], ignore_index: int = -100, **kwargs) -> None:
        super().__init__(**kwargs)
        self.labels = tuple(labels)
        self.ignore_index = ignore_index
        self._parsed = [parse_tag(label) for label in self.labels]
        self.types = tuple(sorted({type_ for prefix, type_ in self._parsed if prefix != "O"}))
        self._type_index = {type_: i for i, type_ in enumerate(self.types)}
        n = len(self.types)
        self.add_state("tp", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_pred", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_gold", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, lengths: Tensor | None = None) -> None:
        """Adds a batch of sentences.

        Args:
            preds: Predicted tag ids, shape ``(B, T)``.
            target: Gold tag ids, shape ``(B, T)``.
            lengths: Each sentence's length, shape ``(B,)``; positions from ``lengths[i]`` on
                are padding and are not read. ``None`` means every sentence has length ``T``.

        Raises:
            ValueError: Mismatched shapes, a length outside ``[0, T]``, or a tag id (outside
                padding and ignored positions) that is not an index into ``labels``.
        """
        if preds.dim() != 2 or preds.shape != target.shape:
            raise ValueError(
                f"preds and target must have the same shape (B, T); got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        batch, steps = target.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},); got {tuple(lengths.shape)}")

        # One transfer per tensor; everything after is plain Python over small ints.
        pred_rows = preds.tolist()
        gold_rows = target.tolist()
        length_list = lengths.tolist()

        n_labels = len(self._parsed)
        tp = [0] * len(self.types)
        n_pred = [0] * len(self.types)
        n_gold = [0] * len(self.types)
        for pred_row, gold_row, length in zip(pred_rows, gold_rows, length_list, strict=True):
            if not 0 <= length <= steps:
                raise ValueError(f"length {length} is outside [0, {steps}]")
            pred_ids: list[int] = []
            gold_ids: list[int] = []
            for p, g in zip(pred_row[:length], gold_row[:length], strict=True):
                if g == self.ignore_index:
                    continue
                pred_ids.append(p)
                gold_ids.append(g)
            # A negative id would silently index from the end of the label list.
            for i in (*pred_ids, *gold_ids):
                if not 0 <= i < n_labels:
                    raise ValueError(f"tag id {i} is not in [0, {n_labels})")
            pred_spans = set(spans_of_parsed([self._parsed[i] for i in pred_ids]))
            gold_spans = set(spans_of_parsed([self._parsed[i] for i in gold_ids]))
            for type_, _, _ in pred_spans:
                n_pred[self._type_index[type_]] += 1
            for type_, _, _ in gold_spans:
                n_gold[self._type_index[type_]] += 1
            for type_, _, _ in pred_spans & gold_spans:
                tp[self._type_index[type_]] += 1

        device = self.tp.device
        self.tp += torch.tensor(tp, dtype=torch.long, device=device)
        self.n_pred += torch.tensor(n_pred, dtype=torch.long, device=device)
        self.n_gold += torch.tensor(n_gold, dtype=torch.long, device=device)

    def compute(self) -> dict[str, Tensor]:
        """Returns micro-averaged and per-type scores.

        Returns:
            ``"precision"``, ``"recall"`` and ``"f1"`` micro-averaged over all spans, and
            ``"precision/<TYPE>"``, ``"recall/<TYPE>"``, ``"f1/<TYPE>"`` for each type. A ratio
            with a zero denominator is 0.
        """
        result = _scores(self.tp.sum(), self.n_pred.sum(), self.n_gold.sum())
        per_type = _scores(self.tp, self.n_pred, self.n_gold)
        for i, type_ in enumerate(self.types):
            for name, values in per_type.items():
                result[f"{name}/{type_}"] = values[i]
        return result

    def span_counts(self) -> dict[str, tuple[int, int, int]]:
        """Returns ``{type: (true positives, predicted spans, gold spans)}`` so far.

        Useful for a per-type report that also shows support. On DDP these are the local
        process's counts unless called after ``compute()`` has synchronised the states.
        """
        return {
            type_: (int(self.tp[i]), int(self.n_pred[i]), int(self.n_gold[i]))
            for i, type_ in enumerate(self.types)
        }


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # float32 rather than float64: MPS has no float64, and counts stay exact below 2**24.
    num = num.float()
    den = den.float()
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def _scores(tp: Tensor, n_pred: Tensor, n_gold: Tensor) -> dict[str, Tensor]:
    precision = _safe_div(tp, n_pred)
    recall = _safe_div(tp, n_gold)
    # 2PR/(P+R) equals 2TP/(pred+gold), which avoids a second rounding and a 0/0 when TP is 0.
    f1 = _safe_div(2 * tp, n_pred + n_gold)
    return {"precision": precision, "recall": recall, "f1": f1}
