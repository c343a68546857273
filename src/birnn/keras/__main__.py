"""`python -m birnn.keras MODEL.keras OUTDIR [--vocab words.txt --labels labels.txt]`:
convert a Keras model into a birnn run folder (see docs/keras.md)."""

from __future__ import annotations

import argparse
import sys
import warnings

from birnn.errors import BirnnError

EXIT_USER_ERROR = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m birnn.keras",
        description="Convert a Keras Bidirectional model into a birnn run folder "
                    "(checkpoints/best.ckpt, config.yaml) for evaluate.py, predict.py and "
                    "train.py.")
    parser.add_argument("model", help="a .keras file (or a legacy .h5 that Keras 3 loads)")
    parser.add_argument("outdir", help="the run folder to write")
    parser.add_argument("--vocab", help="word vocabulary: one entry per line, Embedding index "
                                        "order (not needed with a TextVectorization layer)")
    parser.add_argument("--labels", help="label names, one per line, in the head's output "
                                         "order")
    parser.add_argument("--oov", help="the vocabulary's out-of-vocabulary entry (default: the "
                                      "first of [UNK], <unk>, UNK, [OOV], ... found)")
    parser.add_argument("--lower", action="store_true",
                        help="the Keras tokenizer lower-cased words")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a checkpoint already in OUTDIR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from birnn.keras.convert import from_keras
    from birnn.keras.layers import ConversionWarning
    from birnn.keras.runfolder import train_overrides, write_run_folder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.labels is None:
                raise BirnnError("--labels is required: the label names, one per line, in "
                                 "the order of the head's outputs")
            module = from_keras(args.model, words=args.vocab, labels=args.labels,
                                oov=args.oov, lower=args.lower)
            if module.vocabularies is None:
                raise BirnnError("--vocab is required: the model has no TextVectorization "
                                 "layer, so the word vocabulary must be given (one entry per "
                                 "line, in Embedding index order)")
            ckpt = write_run_folder(module, args.outdir, args.model, force=args.force)
        except BirnnError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
    for w in caught:
        if issubclass(w.category, ConversionWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"wrote {ckpt}")
    print(f"predict:   python predict.py ckpt={args.outdir} input=FILE")
    print(f"fine-tune: python train.py ckpt_path={ckpt} data=... "
          + " ".join(train_overrides(module)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
