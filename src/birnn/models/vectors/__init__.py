"""Pretrained word vectors for the word tables (`TokenEmbeddings.init_pretrained`) and for
the vocabulary's extension (`extension_words`, which training gives the data module).

Sources (`model.embeddings.pretrained`): a named source (`named.NAMED`: `glove-6b-50d`, from
the `vectors` extra) or a GloVe/word2vec text file, `.gz` too (`text`), parsed once and then
read from a `.npy` cache (`cache`). `lookup` matches words to vectors and fills the tables.
"""

from birnn.models.vectors.lookup import (
    Vectors,
    extension_words,
    init_embedding,
    load_vectors,
    read_vectors,
)
from birnn.models.vectors.named import NAMED
from birnn.models.vectors.text import KEY

__all__ = ["KEY", "NAMED", "Vectors", "extension_words", "init_embedding", "load_vectors",
           "read_vectors"]
