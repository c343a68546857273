from birnn.models.base import BiRNNModule
from birnn.models.classifier import SentenceClassifier
from birnn.models.tagger import TokenTagger

__all__ = ["BiRNNModule", "SentenceClassifier", "TokenTagger"]
