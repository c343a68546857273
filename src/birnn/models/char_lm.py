"""A character language model co-trained with the tagger (Liu et al. 2018, LM-LSTM-CRF).

A sentence becomes one character stream: a separator, then each word's characters followed
by a separator (``_John_Smith_._`` with `_` the separator). A forward LSTM reads the stream
left to right and a backward LSTM right to left; each predicts the next character in its
direction. Word t's features are the forward state at the separator after it and the
backward state at the separator before it, so the language-model loss shapes vectors the
tagger reads. The characters are embedded by the character encoder's table
(`CharEncoder.embedding`), which has one extra row, the last, for the separator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from birnn.encoder.policy import AUTO_REVERSE_DEVICES, exporting


def char_stream(chars: Tensor, lengths: Tensor, separator: int,
                bound: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each sentence's character stream, packed left.

    Args:
        chars: character ids (B, T, W), 0 = padding, each word's characters packed left.
        lengths: words per sentence (B,).
        separator: the separator's id (no character has it).
        bound: size the stream by the shapes alone (1 + T * (W + 1)), not by the longest
            stream, so that a traced graph (ONNX export) reads no value out of a tensor.

    Returns:
        stream (B, S) (0 after each sentence's end), stream lengths (B,), and per word (B, T)
        the position of the separator after it (`ends`) and of its first character
        (`starts`; the separator before it is at `starts - 1`). Padding words get the
        positions of their sentence's last separator.
    """
    batch, steps, width = chars.shape
    lengths = lengths.to(chars.device)
    real = torch.arange(steps, device=chars.device)[None, :] < lengths[:, None]  # (B, T)
    is_char = (chars > 0) & real[..., None]  # (B, T, W)
    word_lengths = is_char.sum(-1)  # (B, T)
    span = (word_lengths + 1) * real  # (B, T): a word's characters and its separator
    ends = span.cumsum(1)  # (B, T): position 0 holds the leading separator
    starts = ends - word_lengths  # (B, T)
    stream_lengths = 1 + span.sum(1)  # (B,)
    size = 1 + steps * (width + 1) if bound else int(stream_lengths.max())
    # every character's position, then the separator after each real word; everything else
    # is written to an extra column, `size`, cut off below
    offsets = torch.arange(width, device=chars.device)
    positions = torch.cat([starts[..., None] + offsets, ends[..., None]], -1)  # (B, T, W+1)
    keep = torch.cat([is_char, real[..., None]], -1)  # (B, T, W+1)
    positions = torch.where(keep, positions, torch.full_like(positions, size))
    values = torch.cat([chars, torch.full_like(chars[..., :1], separator)], -1)  # (B, T, W+1)
    stream = chars.new_zeros(batch, size + 1)
    stream = stream.scatter(1, positions.reshape(batch, -1), values.reshape(batch, -1))
    stream[:, 0] = separator
    return stream[:, :size], stream_lengths, ends, starts  # (B, S), (B,), (B, T), (B, T)


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """x (B, S, ...) with each row's first `lengths` entries reversed; the rest as it was."""
    steps = x.size(1)
    positions = torch.arange(steps, device=x.device)[None, :]  # (1, S)
    source = lengths.to(x.device)[:, None] - 1 - positions  # (B, S)
    source = torch.where(source >= 0, source, positions.expand_as(source))
    index = source.view(*source.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class CharLM(nn.Module):
    """Forward and backward character LSTMs over the sentence stream, with a softmax each.

    Args:
        dim: character embedding width (that of the shared table).
        hidden_size: units of each direction's LSTM; word features are 2 * hidden_size wide.
        num_classes: the shared table's rows (characters and the separator); None until the
            character vocabulary is known (`set_num_classes`).
    """

    def __init__(self, dim: int, hidden_size: int, num_classes: int | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.output_size = 2 * hidden_size
        self.forward_rnn = nn.LSTM(dim, hidden_size, batch_first=True)
        self.backward_rnn = nn.LSTM(dim, hidden_size, batch_first=True)
        self.forward_out: nn.Linear | None = None
        self.backward_out: nn.Linear | None = None
        # `auto`: as the encoder's policy (docs/performance.md, "How `auto` chooses"), padded
        # on CPU, where oneDNN's LSTM kernel takes padded input only and trains several times
        # faster than PyTorch's loop over packed rows, and while exporting; packed elsewhere
        # (cuDNN). `pack` or `reverse` force one; both give the same features and loss.
        self.ragged = "auto"
        if num_classes is not None:
            self.set_num_classes(num_classes)

    def set_num_classes(self, num_classes: int) -> None:
        self.forward_out = nn.Linear(self.hidden_size, num_classes)
        self.backward_out = nn.Linear(self.hidden_size, num_classes)

    def _packed(self, device: torch.device) -> bool:
        if self.ragged != "auto":
            return self.ragged == "pack"
        return device.type not in AUTO_REVERSE_DEVICES and not exporting()

    def _run(self, rnn: nn.LSTM, x: Tensor, lengths: Tensor, packed: bool) -> Tensor:
        """(B, S, dim) -> states (B, S, hidden). Padded, a row's states after its length
        read its padding, but no state within its length does."""
        if not packed:
            return rnn(x)[0]
        rows = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = rnn(rows)
        return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]

    def forward(self, embedding: nn.Embedding, chars: Tensor, lengths: Tensor,
                with_loss: bool = False) -> tuple[Tensor, Tensor | None]:
        """Word features (B, T, 2 * hidden) for character ids (B, T, W) of sentences of
        `lengths` words, and with `with_loss` the language-model loss: the mean
        cross-entropy of every next-character prediction of both directions."""
        separator = embedding.num_embeddings - 1
        # a traced graph sizes the stream by the input's shapes (no value read from a tensor)
        stream, stream_lengths, ends, starts = char_stream(chars, lengths, separator,
                                                           bound=exporting())
        backward_stream = reverse_within(stream, stream_lengths)  # (B, S), right to left
        packed = self._packed(chars.device)
        forward = self._run(self.forward_rnn, embedding(stream), stream_lengths,
                            packed)  # (B, S, H)
        backward = self._run(self.backward_rnn, embedding(backward_stream), stream_lengths,
                             packed)  # (B, S, H), in the reversed stream's order
        # word t: forward at its separator `ends`; backward at the separator before it,
        # `starts - 1`, which sits at `length - starts` in the reversed stream
        hidden = forward.size(-1)
        after = forward.gather(1, ends[..., None].expand(-1, -1, hidden))  # (B, T, H)
        before_index = stream_lengths.to(starts.device)[:, None] - starts  # (B, T)
        before = backward.gather(1, before_index[..., None].expand(-1, -1, hidden))  # (B, T, H)
        real = torch.arange(chars.size(1), device=chars.device)[None, :] \
            < lengths.to(chars.device)[:, None]  # (B, T)
        features = torch.cat([after, before], -1) * real[..., None]  # (B, T, 2H)
        if not with_loss:
            return features, None
        return features, self.loss(stream, backward_stream, stream_lengths, forward, backward)

    def loss(self, stream: Tensor, backward_stream: Tensor, stream_lengths: Tensor,
             forward: Tensor, backward: Tensor) -> Tensor:
        """Mean cross-entropy of position i predicting i + 1 in each direction's stream."""
        # (B, S - 1): positions with a next character in their sentence
        predicts = torch.arange(stream.size(1) - 1, device=stream.device)[None, :] \
            < (stream_lengths.to(stream.device) - 1)[:, None]
        logits = torch.cat([self.forward_out(forward[:, :-1][predicts]),
                            self.backward_out(backward[:, :-1][predicts])])  # (2n, classes)
        targets = torch.cat([stream[:, 1:][predicts], backward_stream[:, 1:][predicts]])
        if targets.numel() == 0:  # only empty sentences: nothing to predict
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets)
