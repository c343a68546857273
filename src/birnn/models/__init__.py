from birnn.models.tagger import TokenTagger

__all__ = ["TokenTagger"]
