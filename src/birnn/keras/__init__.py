"""Keras models in: `from_keras(model_or_path)` converts a Keras 3 model built of an
`Embedding`, `Bidirectional(LSTM|GRU|SimpleRNN, merge_mode=...)` layers and a softmax head into
the birnn module with identical outputs; `python -m birnn.keras MODEL.keras OUTDIR` writes a
run folder that `evaluate.py`, `predict.py` and `train.py` take. See docs/keras.md.

Needs the `keras` extra (`pip install -e '.[keras]'`); Keras is imported on first use, on its
torch backend unless `KERAS_BACKEND` says otherwise.
"""

from birnn.keras.convert import from_keras

__all__ = ["from_keras"]
