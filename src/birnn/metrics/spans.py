"""Entity spans from tag sequences, tagging-scheme conversion, and a span-level F1 metric.

Span extraction follows the CoNLL-2000/2003 evaluation script ``conlleval`` (its
``startOfChunk``/``endOfChunk`` rules), which reads IOB1, IOB2 and IOBES tags with one set of
rules. That makes scores comparable with published CoNLL numbers and with ``seqeval`` in its
default mode, and it means an ill-formed prediction such as ``O I-PER`` still yields a span
instead of being silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["SCHEMES", "SpanF1", "convert_tags", "get_spans"]

SCHEMES = ("iob1", "iob2", "iobes")

_PREFIXES = frozenset("BIES")
# Tag prefixes each scheme may contain; "O" is allowed everywhere.
_SCHEME_PREFIXES = {"iob1": frozenset("BI"), "iob2": frozenset("BI"), "iobes": frozenset("BIES")}

# (prefix, type) of a tag; "O" parses to ("O", "") so no entity type ever equals it.
_Parsed = tuple[str, str]
_OUTSIDE: _Parsed = ("O", "")


@lru_cache(maxsize=4096)
def _parse_tag(tag: str) -> _Parsed:
    if tag == "O":
        return _OUTSIDE
    # Split on the first hyphen only, so types such as "geo-loc" survive intact.
    prefix, sep, type_ = tag.partition("-") if isinstance(tag, str) else ("", "", "")
    if not sep or prefix not in _PREFIXES or not type_:
        raise ValueError(
            f"invalid tag {tag!r}: expected 'O' or PREFIX-TYPE with PREFIX in B, I, E, S"
        )
    return prefix, type_


def _ends(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
    # conlleval's endOfChunk, minus its bracket and "." tags, which no scheme here uses.
    if prev_prefix in ("E", "S"):
        return True
    if prev_prefix in ("B", "I"):
        return prefix in ("B", "S", "O") or prev_type != type_
    return False


def _starts(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
    # conlleval's startOfChunk: I- and E- continue a chunk only after B-/I- of the same type.
    if prefix in ("B", "S"):
        return True
    if prefix in ("I", "E"):
        return prev_prefix not in ("B", "I") or prev_type != type_
    return False


def _spans_of_parsed(parsed: Sequence[_Parsed]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    start = -1
    prev_prefix, prev_type = _OUTSIDE
    for i, (prefix, type_) in enumerate(parsed):
        if start >= 0 and _ends(prev_prefix, prefix, prev_type, type_):
            spans.append((prev_type, start, i))
            start = -1
        if _starts(prev_prefix, prefix, prev_type, type_):
            start = i
        prev_prefix, prev_type = prefix, type_
    # The sentence end closes whatever chunk is still open, as an "O" would.
    if start >= 0:
        spans.append((prev_type, start, len(parsed)))
    return spans


def get_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Extracts the chunks of one sentence by the rules of ``conlleval``.

    The same rules read IOB1, IOB2 and IOBES: ``B-X`` always starts a chunk, ``S-X`` is a
    one-token chunk, ``E-X`` ends one, and an ``I-X`` (or ``E-X``) that does not follow a
    ``B-X``/``I-X`` of the same type starts a new chunk. The sentence end closes an open chunk.

    Args:
        tags: The sentence's tags, e.g. ``["B-PER", "I-PER", "O"]``. A type may contain
            hyphens: ``"B-geo-loc"`` has type ``"geo-loc"``.

    Returns:
        The chunks as ``(type, start, end)`` with ``end`` exclusive, in order of position.

    Raises:
        ValueError: A tag is neither ``"O"`` nor ``PREFIX-TYPE`` with ``PREFIX`` in B, I, E, S.

    Example:
        >>> get_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
        [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5)]
    """
    return _spans_of_parsed([_parse_tag(tag) for tag in tags])


def _check_scheme(name: str, role: str) -> str:
    if name not in SCHEMES:
        raise ValueError(f"unknown {role} scheme {name!r}; valid schemes: {', '.join(SCHEMES)}")
    return name


def _encode(spans: Sequence[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    tags = ["O"] * length
    prev_end, prev_type = -1, ""
    for type_, start, end in spans:
        if scheme == "iobes" and end - start == 1:
            tags[start] = f"S-{type_}"
        else:
            if scheme == "iob1":
                # IOB1 marks a chunk's first token B- only where it directly follows a chunk of
                # the same type; anywhere else I- alone already starts a chunk.
                adjacent = start == prev_end and type_ == prev_type
                first = "B" if adjacent else "I"
            else:
                first = "B"
            tags[start] = f"{first}-{type_}"
            for i in range(start + 1, end):
                tags[i] = f"I-{type_}"
            if scheme == "iobes":
                tags[end - 1] = f"E-{type_}"
        prev_end, prev_type = end, type_
    return tags


def convert_tags(tags: Sequence[str], source: str, target: str = "iob2") -> list[str]:
    """Converts one sentence's tags from one tagging scheme to another.

    The chunks are read with :func:`get_spans` and written back in ``target``, so
    ``get_spans`` gives the same chunks before and after. Ill-formed input (such as ``O I-X``
    in IOB2) is read as ``conlleval`` reads it and comes out well formed.

    Args:
        tags: The sentence's tags in scheme ``source``.
        source: The scheme of ``tags``: one of ``SCHEMES`` (``"iob1"``, ``"iob2"``,
            ``"iobes"``).
        target: The scheme to convert to, one of ``SCHEMES``.

    Returns:
        The tags in scheme ``target``, one per input tag.

    Raises:
        ValueError: An unknown scheme name, a malformed tag, or a tag whose prefix the
            ``source`` scheme does not use (``E-``/``S-`` in IOB1 or IOB2), which usually means
            the wrong ``source`` was given.

    Example:
        >>> convert_tags(["I-PER", "I-PER", "B-PER", "O"], "iob1", "iob2")
        ['B-PER', 'I-PER', 'B-PER', 'O']
    """
    _check_scheme(source, "source")
    _check_scheme(target, "target")
    parsed = [_parse_tag(tag) for tag in tags]
    allowed = _SCHEME_PREFIXES[source]
    for tag, (prefix, _) in zip(tags, parsed, strict=True):
        if prefix != "O" and prefix not in allowed:
            raise ValueError(f"tag {tag!r} is not valid in the {source} scheme")
    return _encode(_spans_of_parsed(parsed), len(tags), target)


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
        self._parsed = [_parse_tag(label) for label in self.labels]
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
            pred_spans = set(_spans_of_parsed([self._parsed[i] for i in pred_ids]))
            gold_spans = set(_spans_of_parsed([self._parsed[i] for i in gold_ids]))
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
