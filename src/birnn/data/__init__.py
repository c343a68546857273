from birnn.data.classification import ClassificationDataModule
from birnn.data.columns import read_column_file, write_column_file
from birnn.data.datamodule import SequenceDataModule
from birnn.data.sampler import BucketBatchSampler
from birnn.data.tagging import TaggingDataModule
from birnn.data.vocab import Vocab

__all__ = [
    "BucketBatchSampler",
    "ClassificationDataModule",
    "SequenceDataModule",
    "TaggingDataModule",
    "Vocab",
    "read_column_file",
    "write_column_file",
]
