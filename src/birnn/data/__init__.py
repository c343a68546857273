"""Data sources, vocabularies, batching and the data modules of both tasks. Names are
imported on first use: reading a column file (`birnn.data.columns`) loads neither Lightning
nor `datasets`."""

import importlib

_WHERE = {
    "BucketBatchSampler": "birnn.data.sampler",
    "ClassificationDataModule": "birnn.data.classification",
    "SequenceDataModule": "birnn.data.datamodule",
    "TaggingDataModule": "birnn.data.tagging",
    "Vocab": "birnn.data.vocab",
    "read_column_file": "birnn.data.columns",
    "write_column_file": "birnn.data.columns",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'birnn.data' has no attribute {name!r}")
