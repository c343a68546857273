"""What training and evaluation both write and print: the predictions file and the score
table of one split."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from birnn.tags import get_spans


def predict_split(trainer, model, datamodule, split: str = "test",
                  ckpt_path: str | None = None) -> dict[int, dict]:
    """The model's predictions on a split through `trainer.predict` (the modules'
    `predict_step`), one record per sentence keyed by its position in the split: `tags` (tag
    ids) for tagging, `label` and `probability` for classification. `ckpt_path`: the
    checkpoint to predict with (read weights-only) instead of the model's current weights."""
    outputs = trainer.predict(model, dataloaders=datamodule.predict_loader(split),
                              ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    records: dict[int, dict] = {}
    for batch in outputs or []:
        fields = [k for k in batch if k != "index"]
        for j, i in enumerate(batch["index"]):
            records[i] = {k: batch[k][j] for k in fields}
    return records


def write_predictions(path: Path, datamodule, predictions: dict[int, dict],
                      split: str = "test") -> Path:
    """A split's predictions (`predict_split`): for tagging a column file (token, gold tag,
    predicted tag), for classification a TSV (gold label, predicted label, text). `path` gets
    the matching suffix; returns the path written."""
    data = datamodule.splits[split]
    labels = datamodule.labels.itos
    if datamodule.task == "tagging":
        path = path.with_suffix(".conll")
        with path.open("w", encoding="utf-8") as f:
            for i, (tokens, gold) in enumerate(zip(data.tokens, data.gold, strict=True)):
                if i not in predictions:  # not predicted (e.g. trainer.limit_predict_batches)
                    continue
                pred = [labels[j] for j in predictions[i]["tags"]]
                for row in zip(tokens, gold, pred, strict=True):
                    f.write(" ".join(row) + "\n")
                f.write("\n")
    else:
        path = path.with_suffix(".tsv")
        with path.open("w", encoding="utf-8") as f:
            f.write("label\tpredicted\tsentence\n")
            for i, (tokens, gold) in enumerate(zip(data.tokens, data.gold, strict=True)):
                if i in predictions:
                    f.write(f"{gold}\t{labels[predictions[i]['label']]}\t{' '.join(tokens)}\n")
    return path


def print_scores(scores: dict, datamodule, split: str = "test", summary: str = "") -> None:
    """Span P/R/F1 per type and micro (tagging), or accuracy and macro-F1 (classification),
    then the `summary` line."""
    table = Table(title=f"{split} ({datamodule.source})")
    data = datamodule.splits[split]
    if datamodule.task == "tagging":
        support: dict[str, int] = {}
        for tags in data.gold:
            for kind, _, _ in get_spans(tags):
                support[kind] = support.get(kind, 0) + 1
        for column in ("type", "precision", "recall", "f1", "support"):
            table.add_column(column, justify="left" if column == "type" else "right")
        for kind in sorted(support):
            table.add_row(kind, *(f"{100 * scores.get(f'{m}/{kind}', 0.0):.2f}"
                                  for m in ("precision", "recall", "f1")), str(support[kind]))
        table.add_row("micro", *(f"{100 * scores[m]:.2f}" for m in ("precision", "recall", "f1")),
                      str(sum(support.values())), style="bold")
    else:
        for column in ("accuracy", "macro f1", "sentences"):
            table.add_column(column, justify="right")
        table.add_row(f"{100 * scores['acc']:.2f}", f"{100 * scores['macro_f1']:.2f}",
                      str(len(data)))
    console = Console()
    console.print(table)
    if summary:
        console.print(summary)
