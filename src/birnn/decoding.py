"""Decoding a linear-chain lattice in NumPy: Viterbi, marginals and span probabilities.

One lattice serves both heads. With a CRF it holds the CRF's transition, start and end scores,
forbidden moves already penalised (`birnn.models.crf`), so Viterbi, the marginals and the span
probabilities all read the very lattice the CRF was trained on. A softmax head is the lattice
with no transitions (`Lattice.independent`): its marginals are the per-token softmax and its
Viterbi path the per-token argmax.

Everything is batched over padded emissions (B, T, L) and lengths (B,), computed in float64 in
log space, and needs neither PyTorch nor the model: the ONNX runtime path
(`birnn.export.runtime`) decodes with it, and so does the checkpoint path, on the emissions it
copies to the CPU.

A span's confidence is the probability, under the lattice, of the event that the tag sequence
holds that exact chunk, read by the ``conlleval`` rules (`birnn.tags.get_spans`): a chunk of
type X from `start` to `end` (exclusive) starts there (``B-X``, or ``I-X`` not after a
``B-X``/``I-X``), continues with ``I-X`` and is not continued by an ``I-X`` after its end. It is a
sum over all the paths that contain the chunk, computed from the forward and backward messages,
not a product of independent per-token probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from birnn.tags import get_spans, parse_tag

Span = tuple[str, int, int]  # (type, start, end), end exclusive


@dataclass(frozen=True)
class Lattice:
    """Scores of a linear chain over L labels, forbidden moves included as large penalties.

    Attributes:
        transitions: (L, L) score of moving from label i (row) to label j (column).
        start: (L,) score of starting with each label.
        end: (L,) score of ending with each label.
    """

    transitions: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @classmethod
    def independent(cls, num_labels: int) -> Lattice:
        """No transitions: each token's label is independent (a softmax head)."""
        return cls(np.zeros((num_labels, num_labels)), np.zeros(num_labels),
                   np.zeros(num_labels))

    @classmethod
    def from_crf(cls, crf) -> Lattice:
        """The lattice of a `birnn.models.crf.CRF`, with its constraint penalties."""
        transitions, start, end = (p.detach().double().cpu().numpy() for p in crf._params())
        return cls(transitions, start, end)

    @classmethod
    def of_tagger(cls, model) -> Lattice:
        """The lattice a `birnn.models.TokenTagger` decodes with: its CRF's, or independent
        tokens for a softmax head."""
        if getattr(model, "crf", None) is not None:
            return cls.from_crf(model.crf)
        return cls.independent(len(model.labels))

    def to_dict(self) -> dict:
        """Plain lists, for JSON."""
        return {"transitions": self.transitions.tolist(), "start": self.start.tolist(),
                "end": self.end.tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> Lattice:
        return cls(*(np.asarray(state[k], dtype=np.float64)
                     for k in ("transitions", "start", "end")))


@dataclass
class Decoded:
    """One sentence's decoding.

    Attributes:
        tags: the best label id per token (Viterbi).
        token_scores: the marginal probability of each token's label in `tags`.
        spans: the chunks of `tags` as `(type, start, end, probability)`, end exclusive.
    """

    tags: list[int]
    token_scores: list[float]
    spans: list[tuple[str, int, int, float]]

    def named(self, labels: Sequence[str]) -> dict:
        """`{"tags": [names], "scores": [per token], "spans": [{"type", "start", "end",
        "score"}]}`, as prediction outputs write it (JSON-ready)."""
        return {"tags": [labels[i] for i in self.tags], "scores": self.token_scores,
                "spans": [{"type": t, "start": s, "end": e, "score": p}
                          for t, s, e, p in self.spans]}


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    if x.shape[axis] == 0:
        return np.full(np.delete(x.shape, axis), -np.inf)
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):  # log(0) = -inf for an empty (fully masked) sum
        return np.squeeze(peak, axis) + np.log(np.sum(np.exp(x - peak), axis=axis))


def _check(emissions: np.ndarray, lengths: np.ndarray, lattice: Lattice) -> tuple:
    emissions = np.asarray(emissions, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if emissions.ndim != 3 or emissions.shape[-1] != lattice.start.shape[0]:
        raise ValueError(f"emissions must be (B, T, {lattice.start.shape[0]}), "
                         f"got {emissions.shape}")
    if lengths.shape != emissions.shape[:1] or (lengths < 1).any() \
            or (lengths > emissions.shape[1]).any():
        raise ValueError(f"lengths must be {emissions.shape[0]} values in "
                         f"[1, {emissions.shape[1]}], got {lengths.tolist()}")
    return emissions, lengths


def viterbi(emissions: np.ndarray, lengths: np.ndarray, lattice: Lattice) -> list[list[int]]:
    """The best label sequence of each sentence, trimmed to its length.

    Args:
        emissions: (B, T, L) label scores per token, padded after each length.
        lengths: (B,) real tokens per sentence, each in [1, T].
        lattice: the transition, start and end scores.
    """
    emissions, lengths = _check(emissions, lengths, lattice)
    batch, steps, _ = emissions.shape
    score = lattice.start + emissions[:, 0]  # (B, L)
    history = []  # history[t - 1][b, j]: the best label at t - 1 given label j at t
    for t in range(1, steps):
        candidates = score[:, :, None] + lattice.transitions  # (B, L from, L to)
        history.append(candidates.argmax(1))
        best = candidates.max(1) + emissions[:, t]
        score = np.where((t < lengths)[:, None], best, score)
    paths = []
    for b in range(batch):
        n = int(lengths[b])
        cur = int((score[b] + lattice.end).argmax())
        path = [cur]
        for t in range(n - 1, 0, -1):
            cur = int(history[t - 1][b, cur])
            path.append(cur)
        paths.append(path[::-1])
    return paths


def forward_backward(emissions: np.ndarray, lengths: np.ndarray,
                     lattice: Lattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward and backward messages in log space.

    Returns:
        alpha: (B, T, L) log-sum of the scores of every prefix ending at t with label l,
            emission at t included.
        beta: (B, T, L) log-sum of the scores of every continuation after t given label l at
            t (the end score included; emission at t excluded).
        log_z: (B,) the log partition function.
        Padding positions hold zeros.
    """
    emissions, lengths = _check(emissions, lengths, lattice)
    batch, steps, labels = emissions.shape
    trans = lattice.transitions
    alpha = np.zeros((batch, steps, labels))
    beta = np.zeros((batch, steps, labels))
    alpha[:, 0] = lattice.start + emissions[:, 0]
    for t in range(1, steps):
        nxt = _logsumexp(alpha[:, t - 1, :, None] + trans, axis=1) + emissions[:, t]
        alpha[:, t] = np.where((t < lengths)[:, None], nxt, 0.0)
    for t in range(steps - 1, -1, -1):
        if t + 1 < steps:
            # (B, L from, L to): move to each next label, emit it, continue from it
            after = trans + (emissions[:, t + 1] + beta[:, t + 1])[:, None, :]
            inner = _logsumexp(after, axis=2)
        else:
            inner = np.zeros((batch, labels))
        last = (t == lengths - 1)[:, None]
        beta[:, t] = np.where(last, lattice.end, np.where((t < lengths - 1)[:, None], inner, 0.0))
    final = alpha[np.arange(batch), lengths - 1]  # (B, L)
    log_z = _logsumexp(final + lattice.end, axis=1)
    return alpha, beta, log_z


def marginals(emissions: np.ndarray, lengths: np.ndarray, lattice: Lattice) -> np.ndarray:
    """(B, T, L) probability of each label at each token over all paths; zero at padding."""
    alpha, beta, log_z = forward_backward(emissions, lengths, lattice)
    lengths = np.asarray(lengths)
    real = np.arange(alpha.shape[1])[None, :] < lengths[:, None]  # (B, T)
    return np.exp(alpha + beta - log_z[:, None, None]) * real[..., None]


def _label_ids(labels: Sequence[str]) -> dict[str, int] | None:
    """Label name -> id when every label is O, B-X or I-X (else there are no chunks)."""
    try:
        if all(parse_tag(label)[0] in ("O", "B", "I") for label in labels):
            return {label: i for i, label in enumerate(labels)}
    except ValueError:
        pass
    return None


def _span_log_prob(emissions: np.ndarray, n: int, alpha: np.ndarray, beta: np.ndarray,
                   log_z: float, lattice: Lattice, ids: dict[str, int], span: Span) -> float:
    """log P(the chunk `span` is in the tag sequence) of one sentence (emissions (T, L))."""
    type_, start, end = span
    begin, inside = ids.get(f"B-{type_}"), ids.get(f"I-{type_}")
    trans = lattice.transitions
    if not 0 <= start < end <= n or (end - start > 1 and inside is None):
        return -np.inf  # no path holds it
    not_inside = np.ones(trans.shape[0], dtype=bool)
    if inside is not None:
        not_inside[inside] = False

    def closing(last: int) -> float:
        # the chunk's end: the sentence ends, or the next label is anything but I-X
        if end == n:
            return lattice.end[last]
        return _logsumexp((trans[last] + emissions[end] + beta[end])[not_inside], axis=0)

    terms = []
    # the chunk starts with B-X after anything, or with I-X after anything but B-X/I-X
    for first, barred in ((begin, ()), (inside, (begin, inside))):
        if first is None:
            continue
        path = [first] + [inside] * (end - start - 1)
        inner = sum(emissions[start + k, label] for k, label in enumerate(path))
        inner += sum(trans[a, b] for a, b in zip(path[:-1], path[1:], strict=True))
        if start == 0:
            opening = lattice.start[first]
        else:
            keep_before = np.ones(trans.shape[0], dtype=bool)
            keep_before[[i for i in barred if i is not None]] = False
            opening = _logsumexp((alpha[start - 1] + trans[:, first])[keep_before], axis=0)
        terms.append(opening + inner + closing(path[-1]) - log_z)
    return float(_logsumexp(np.array(terms), axis=0)) if terms else -np.inf


def span_probabilities(emissions: np.ndarray, lengths: np.ndarray, lattice: Lattice,
                       labels: Sequence[str], spans: Sequence[Sequence[Span]]) -> list[list[float]]:
    """The probability of each given chunk under the lattice (see the module docstring).

    Args:
        emissions: (B, T, L) label scores, padded.
        lengths: (B,) sentence lengths.
        lattice: the transition, start and end scores.
        labels: the L label names (IOB2: O, B-X, I-X).
        spans: per sentence, the chunks `(type, start, end)` to score (any chunks, not only
            predicted ones).

    Returns:
        Per sentence, one probability per chunk, in order.

    Raises:
        ValueError: the labels are not IOB2.
    """
    ids = _label_ids(labels)
    if ids is None:
        raise ValueError("span probabilities need IOB2 labels (O, B-X, I-X), got "
                         f"{list(labels)[:6]}")
    alpha, beta, log_z = forward_backward(emissions, lengths, lattice)
    emissions = np.asarray(emissions, dtype=np.float64)
    return [[float(np.exp(_span_log_prob(emissions[b], int(lengths[b]), alpha[b], beta[b],
                                         float(log_z[b]), lattice, ids, span)))
             for span in sentence]
            for b, sentence in enumerate(spans)]


def decode(emissions: np.ndarray, lengths: np.ndarray, lattice: Lattice,
           labels: Sequence[str]) -> list[Decoded]:
    """Viterbi tags, their marginals and the probability of each predicted chunk.

    Labels that are not IOB2 (e.g. POS tags) have no chunks: `spans` stays empty.

    Args:
        emissions: (B, T, L) label scores, padded.
        lengths: (B,) sentence lengths, each in [1, T].
        lattice: the CRF's lattice, or `Lattice.independent(L)` for a softmax head.
        labels: the L label names.
    """
    paths = viterbi(emissions, lengths, lattice)
    alpha, beta, log_z = forward_backward(emissions, lengths, lattice)
    probs = np.exp(alpha + beta - log_z[:, None, None])  # (B, T, L), garbage at padding
    emissions = np.asarray(emissions, dtype=np.float64)
    ids = _label_ids(labels)
    out = []
    for b, path in enumerate(paths):
        scores = probs[b, np.arange(len(path)), path].tolist()
        spans = []
        if ids is not None:
            for span in get_spans([labels[i] for i in path]):
                p = np.exp(_span_log_prob(emissions[b], len(path), alpha[b], beta[b],
                                          float(log_z[b]), lattice, ids, span))
                spans.append((*span, float(p)))
        out.append(Decoded(path, scores, spans))
    return out
