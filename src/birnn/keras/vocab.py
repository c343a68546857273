"""The vocabularies of a converted model: from a `TextVectorization` layer in the model, or
from files with one entry per line in index order.

Index i of the Keras `Embedding` stays index i of birnn's word table, so ids mean the same on
both sides. Two entries are renamed to birnn's specials: index 0 becomes `<pad>` when it is
padding (`mask_zero=True`, or TextVectorization's empty mask token), and the out-of-vocabulary
entry (TextVectorization's `[UNK]`, or in a file the one named by `oov`, by default the first
of `OOV_NAMES` found) becomes `<unk>`, the id birnn gives every word not in the table, as
Keras' lookup layers give such words their OOV index.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from birnn.data.vocab import PAD, UNK, Vocab
from birnn.errors import DataError
from birnn.keras.layers import ConversionWarning, refuse

OOV_NAMES = ("[UNK]", "<unk>", "<UNK>", "UNK", "[OOV]", "<oov>", "<OOV>", "OOV")
PAD_NAMES = ("", "<pad>", "[PAD]", "<PAD>", "PAD")


def read_entries(path: str | Path) -> list[str]:
    """One entry per line, in index order (an empty line is an entry: index 0's padding in
    TextVectorization's exported vocabularies)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read the vocabulary: {e.strerror or e}", path) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not valid utf-8 ({e.reason})", path) from None
    lines = text.split("\n")
    if text.endswith("\n"):  # the last line's end, not an empty entry after it
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def word_vocab(entries: list[str], input_dim: int, mask_zero: bool, source: str,
               oov: str | None = None, lower: bool = False) -> Vocab:
    """birnn's word vocabulary for an Embedding of `input_dim` rows."""
    if len(entries) != input_dim:
        raise DataError(f"the word vocabulary has {len(entries)} entries but the Embedding "
                        f"has input_dim={input_dim} (one entry per line, index order)", source)
    itos = list(entries)
    if mask_zero and itos[0] not in PAD_NAMES:
        warnings.warn(f"{source}: entry 0 is {itos[0]!r}, but with mask_zero=True index 0 "
                      "is padding, so it becomes <pad>", ConversionWarning, stacklevel=2)
    if mask_zero or itos[0] in PAD_NAMES:
        itos[0] = PAD
    names = (oov,) if oov is not None else OOV_NAMES
    where = next((i for i, e in enumerate(itos) if e in names), None)
    if where is None:
        wanted = repr(oov) if oov is not None else ", ".join(OOV_NAMES)
        raise DataError(f"the word vocabulary has no out-of-vocabulary entry ({wanted}), "
                        "which words outside it need; name it with --oov TOKEN", source)
    itos[where] = UNK
    seen: dict[str, int] = {}
    for i, entry in enumerate(itos):
        if entry in seen:
            raise DataError(f"entry {entry!r} appears twice (lines {seen[entry] + 1} and "
                            f"{i + 1}); entries must be unique", source)
        seen[entry] = i
    return Vocab(itos, unk=UNK, lower=lower)


def label_vocab(entries: list[str], units: int, source: str) -> Vocab:
    """The label vocabulary for a head of `units` labels (2 for a 1-unit sigmoid Dense:
    the negative label first)."""
    if len(entries) != units:
        raise DataError(f"{len(entries)} labels but the model's head has {units} outputs "
                        "(one label per line, in output order)", source)
    if len(set(entries)) != len(entries) or "" in entries:
        raise DataError("labels must be unique and not empty", source)
    return Vocab(list(entries), unk=None)


def placeholder_labels(task: str, units: int) -> list[str]:
    """Label names when none are given: valid IOB2 tags for a tagger, numbers otherwise."""
    if task == "tagging":
        return [f"B-L{i}" for i in range(units)]
    return [str(i) for i in range(units)]


def vectorizer_vocab(layer, input_dim: int) -> Vocab:
    """birnn's word vocabulary from a Keras `TextVectorization` layer, after checking that
    it splits text into words as birnn's whitespace tokens do."""
    config = layer.get_config()
    if config.get("output_mode", "int") != "int" or config.get("ngrams"):
        raise refuse(layer, "birnn reads token ids: output_mode must be 'int' with no ngrams")
    if config.get("split", "whitespace") != "whitespace":
        raise refuse(layer, f"split={config.get('split')!r}; birnn splits on whitespace")
    standardize = config.get("standardize")
    if standardize not in (None, "lower", "lower_and_strip_punctuation", "strip_punctuation"):
        raise refuse(layer, f"standardize={standardize!r} has no birnn equivalent")
    if standardize and "strip_punctuation" in standardize:
        warnings.warn(f"keras layer '{layer.name}': standardize={standardize!r} strips "
                      "punctuation, which birnn does not: give it text with punctuation "
                      "split off or removed", ConversionWarning, stacklevel=2)
    entries = list(layer.get_vocabulary(include_special_tokens=True))
    if len(entries) != input_dim:
        raise refuse(layer, f"its vocabulary has {len(entries)} entries but the Embedding "
                            f"has input_dim={input_dim}")
    lower = standardize in ("lower", "lower_and_strip_punctuation")
    return word_vocab(entries, input_dim, mask_zero=entries[0] == "", source=layer.name,
                      oov=config.get("oov_token", "[UNK]"), lower=lower)

