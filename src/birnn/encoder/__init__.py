from birnn.encoder.birnn import CELLS, IMPLS, MERGES, BiRNN, merge_pair

__all__ = ["BiRNN", "CELLS", "IMPLS", "MERGES", "merge_pair"]
