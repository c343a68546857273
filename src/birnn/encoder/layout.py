"""How a batch is laid out while it runs through the layers, chosen once per forward call.

- packed: the real tokens only, as PyTorch's ``PackedSequence`` rows (N, W) with
  N = sum(lengths), time-major over the sequences sorted by length; padded once at the end.
- padded, reversed within lengths: (B, T, W) as given. The forward direction reads each
  sequence's real tokens first and its padding after them, so its outputs at real tokens are
  exact; the backward direction runs over each sequence reversed *within its length*
  (padding stays at the end, `index`) and its outputs are reversed back. Padding positions
  are computed and zeroed at the end.
- padded as is: a batch whose sequences all have the full length.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from birnn.encoder.merge import Merged


class Layout:
    """One batch's layout: `x` (B, T, W) with `lengths` (B,) on the CPU; `pack` or `reverse`
    as the plan says (neither: a full batch, padded as is).

    Attributes:
        data: what the first layer reads: packed rows (N, W), or `x`.
        packed: the packing (batch sizes, sort order), or None.
        index: (B*T,) for `ReverseWithin`: position t of sequence b reads position
            lengths[b] - 1 - t, padding stays put; None unless reversing.
        last: (B,) each sequence's last position, on `x`'s device; None unless reversing.
    """

    def __init__(self, x: Tensor, lengths: Tensor, pack: bool, reverse: bool):
        self.batch, self.total = x.shape[:2]
        self.lengths = lengths
        self.packed: PackedSequence | None = None
        self.index = self.last = None
        self.data = x
        if pack:
            self.packed = pack_padded_sequence(x, lengths, batch_first=True,
                                               enforce_sorted=False)
            self.data = self.packed.data  # (N, W)
        if reverse:
            steps = torch.arange(self.total)
            source = lengths.unsqueeze(1) - 1 - steps  # (B, T)
            source = torch.where(source >= 0, source, steps)
            self.index = (source + self.total * torch.arange(self.batch).unsqueeze(1)
                          ).reshape(-1).to(x.device)
            self.last = (lengths - 1).to(x.device)

    def sequences(self) -> Tensor | None:
        """Packed rows' sequence indices (N,) in the packed (sorted) order, for locked
        dropout; None for padded data."""
        if self.packed is None:
            return None
        sizes = self.packed.batch_sizes  # rows are time-major over the sorted sequences
        starts = torch.cumsum(sizes, 0) - sizes
        return (torch.arange(int(sizes.sum())) - starts.repeat_interleave(sizes)).to(
            self.data.device)

    def restore(self, data: Merged) -> Merged:
        """The last layer's output back to (B, T, W) in the caller's order, zero at padding
        (each tensor of a `none` pair)."""
        if isinstance(data, tuple):
            return tuple(self.restore(d) for d in data)
        if self.packed is not None:
            # packed rows (N, W) -> (B, T, W), zeros after each end
            return pad_packed_sequence(self.packed._replace(data=data), batch_first=True,
                                       total_length=self.total)[0]
        if self.index is not None:
            padding = (torch.arange(self.total) >= self.lengths.unsqueeze(1)).unsqueeze(-1)
            return data.masked_fill(padding.to(data.device), 0)  # (B, T, 1) mask
        return data


class ReverseWithin(torch.autograd.Function):
    """Rows of a (B, T, W) tensor gathered by `index` (B*T,) into the batch-major flattening.

    Used with a permutation that is its own inverse (each sequence reversed within its
    length), so the gradient is gathered by the same index: no scatter-add.
    """

    @staticmethod
    def forward(ctx, data: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return data.reshape(-1, data.size(-1)).index_select(0, index).view(data.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.reshape(-1, grad.size(-1)).index_select(0, index).view(grad.shape), None
