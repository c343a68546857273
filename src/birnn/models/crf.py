"""A linear-chain CRF, batched over sentences of mixed lengths: negative log-likelihood by the
forward algorithm in log space and Viterbi decoding, with optional IOB2 constraints."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# added to forbidden transitions: finite (no NaN in log-sum-exp over all-forbidden rows), and
# far below any reachable difference of emission scores, so Viterbi never picks one
FORBIDDEN = -10000.0


def iob2_constraints(labels: list[str]) -> tuple[Tensor, Tensor] | None:
    """Allowed transitions (L, L) [from, to] and allowed start tags (L,) for IOB2 labels:
    `I-X` only after `B-X` or `I-X`, never first. None when the labels are not all `O`,
    `B-*` or `I-*` (e.g. POS tags): no constraints then."""
    if not labels or not all(t == "O" or t[:2] in ("B-", "I-") for t in labels):
        return None
    n = len(labels)
    allowed = torch.ones(n, n, dtype=torch.bool)
    start = torch.ones(n, dtype=torch.bool)
    for j, to in enumerate(labels):
        if to.startswith("I-"):
            start[j] = False
            for i, frm in enumerate(labels):
                allowed[i, j] = frm[2:] == to[2:] and frm[:2] in ("B-", "I-")
    return allowed, start


def is_valid_iob2(tags: list[str]) -> bool:
    """No `I-X` at the start, after `O`, or after a `B-Y`/`I-Y` with Y != X."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            return False
        previous = tag
    return True


class CRF(nn.Module):
    """Transition, start and end scores over `num_tags` tags.

    Args:
        num_tags: number of tags.
        constraints: `(allowed (L, L), allowed_start (L,))` boolean masks (see
            `iob2_constraints`); forbidden moves get a fixed FORBIDDEN score.
    """

    def __init__(self, num_tags: int, constraints: tuple[Tensor, Tensor] | None = None):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        trans_penalty = torch.zeros(num_tags, num_tags)
        start_penalty = torch.zeros(num_tags)
        if constraints is not None:
            allowed, allowed_start = constraints
            trans_penalty = trans_penalty.masked_fill(~allowed, FORBIDDEN)
            start_penalty = start_penalty.masked_fill(~allowed_start, FORBIDDEN)
        self.register_buffer("trans_penalty", trans_penalty, persistent=False)
        self.register_buffer("start_penalty", start_penalty, persistent=False)

    def _params(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.transitions + self.trans_penalty, self.start + self.start_penalty, self.end

    @staticmethod
    def _mask(emissions: Tensor, lengths: Tensor) -> Tensor:
        steps = torch.arange(emissions.size(1), device=emissions.device)
        return steps[None, :] < lengths.to(emissions.device)[:, None]  # (B, T)

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """log Z (B,) of emissions (B, T, L); every length must be >= 1."""
        emissions = emissions.float()
        trans, start, end = self._params()
        mask = self._mask(emissions, lengths)
        alpha = start + emissions[:, 0]  # (B, L)
        for t in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=-1)

    def score(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Score (B,) of the tag sequences `tags` (B, T); padding positions are not read."""
        emissions = emissions.float()
        trans, start, end = self._params()
        mask = self._mask(emissions, lengths)
        lengths = lengths.to(emissions.device)
        tags = tags.masked_fill(~mask, 0)
        emit = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        total = start[tags[:, 0]] + (emit * mask).sum(1)
        total = total + (trans[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]).sum(1)
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        return total + end[last]

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Mean negative log-likelihood over the batch's sentences."""
        log_z = self.log_partition(emissions, lengths)
        return (log_z - self.score(emissions, tags, lengths)).mean()

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        """The best tag sequence of each sentence (trimmed to its length)."""
        emissions = emissions.float()
        trans, start, end = self._params()
        mask = self._mask(emissions, lengths)
        lengths = lengths.to(emissions.device)
        batch, steps, _ = emissions.shape
        score = start + emissions[:, 0]
        history = []  # history[t-1][b, j]: best tag at t-1 given tag j at t
        for t in range(1, steps):
            best, index = (score.unsqueeze(2) + trans).max(dim=1)
            history.append(index)
            score = torch.where(mask[:, t, None], best + emissions[:, t], score)
        cur = (score + end).argmax(-1)  # (B,): the tag at each sentence's last position
        paths = torch.zeros(batch, steps, dtype=torch.long, device=emissions.device)
        for t in reversed(range(steps)):
            if t < steps - 1:
                back = history[t].gather(1, cur.unsqueeze(1)).squeeze(1)
                cur = torch.where(t + 1 <= lengths - 1, back, cur)
            paths[:, t] = cur
        return [p[:n] for p, n in zip(paths.tolist(), lengths.tolist(), strict=True)]
