"""The models under measure besides birnn's own: PyTorch's fused module and a hand-written
layer loop, plus `BiRNN` wrapped to return only its padded outputs, as they do."""

from __future__ import annotations

from torch import Tensor, nn

from birnn import BiRNN

CELL_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def merge_by_hand(forward: Tensor, backward: Tensor, mode: str) -> Tensor:
    """sum, mul or ave of two (B, T, H) halves (concat needs no merge: see `LayeredLoop`)."""
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    return (forward + backward) / 2  # ave


class LayeredLoop(nn.Module):
    """Baseline: single-layer bidirectional modules, merged by hand, on padded tensors."""

    def __init__(self, input_size: int, hidden: int, cells: list[str], merge: str):
        super().__init__()
        self.hidden, self.merge = hidden, merge
        self.rnns = nn.ModuleList()
        width = input_size
        for cell in cells:
            self.rnns.append(
                CELL_CLASSES[cell](width, hidden, batch_first=True, bidirectional=True)
            )
            width = 2 * hidden if merge == "concat" else hidden

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        for rnn in self.rnns:
            out, _ = rnn(x)  # (B, T, 2H): [forward ; backward]
            if self.merge == "concat":
                x = out
            else:  # (B, T, H)
                x = merge_by_hand(out[..., : self.hidden], out[..., self.hidden :], self.merge)
        return x


class TorchFused(nn.Module):
    """Baseline: PyTorch's multi-layer bidirectional module on the padded batch."""

    def __init__(self, input_size: int, hidden: int, cell: str, layers: int):
        super().__init__()
        self.rnn = CELL_CLASSES[cell](
            input_size, hidden, num_layers=layers, batch_first=True, bidirectional=True
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.rnn(x)[0]


class BiRNNOutputs(nn.Module):
    """`BiRNN` returning only its padded outputs, like the baselines."""

    def __init__(self, encoder: BiRNN):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.encoder(x, lengths)[0]
