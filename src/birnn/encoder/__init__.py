"""The bidirectional RNN encoder: per-layer `Bidirectional` modules stacked by `BiRNN`."""
from birnn.config.encoder import IMPLS, MERGES
from birnn.encoder.birnn import BiRNN
from birnn.encoder.layer import CELLS, Bidirectional
from birnn.encoder.merge import merge_pair

__all__ = ["BiRNN", "Bidirectional", "CELLS", "IMPLS", "MERGES", "merge_pair"]
