"""`evaluate.py` and `predict.py` on tiny models trained on the embedded samples: evaluation
reproduces the scores a training run reported, predictions scored independently (seqeval,
plain accuracy) give them too, and bad checkpoints and inputs are one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SAMPLE_NER, make_config
from hydra import compose, initialize_config_dir
from seqeval.metrics import f1_score

from birnn.cli.app import user_errors_exit
from birnn.cli.evaluate import evaluate
from birnn.cli.predict import looks_like_columns, predict, read_sentences
from birnn.cli.train import train
from birnn.data import read_column_file

SAMPLE_SENTIMENT = ROOT / "data" / "sample_sentiment"
# small and quick, but trained enough that the scores are not trivial (all-O, one class)
TINY = ("encoder.hidden_size=16", "model.embedding_dim=32", "model.optimizer.lr=0.01",
        "trainer.max_epochs=3")


def compose_cfg(name: str, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def eval_cfg(tmp_path, ckpt, *overrides):
    return compose_cfg("evaluate", f"ckpt={ckpt}", f"paths.output_dir={tmp_path}",
                       "trainer.enable_progress_bar=false", *overrides)


def predict_cfg(ckpt, source, *overrides):
    return compose_cfg("predict", f"ckpt={ckpt}", f"input={source}", *overrides)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    out = tmp_path_factory.mktemp("tagger")
    metrics = train(make_config(out, *TINY))
    assert metrics["test"]["f1"] > 0.05  # a model that finds some entities
    return out, metrics


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier")
    metrics = train(make_config(out, "task=classification", *TINY))
    return out, metrics


def test_evaluate_reproduces_the_reported_test_scores(tagger, tmp_path):
    run, reported = tagger
    result = evaluate(eval_cfg(tmp_path, run / "checkpoints" / "best.ckpt"))
    assert result["split"] == "test"
    assert set(result["test"]) == set(reported["test"])
    for key, value in reported["test"].items():
        assert result["test"][key] == pytest.approx(value, abs=1e-6), key
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["test"] == result["test"]
    assert (tmp_path / "test_predictions.conll").is_file()


def test_evaluate_other_split_and_named_data(tagger, tmp_path):
    # a run folder as ckpt; data named on the command line instead of the run's config.yaml
    run, reported = tagger
    result = evaluate(eval_cfg(tmp_path, run, "split=validation", "data=sample"))
    assert result["validation"]["f1"] == pytest.approx(reported["val"]["f1"], abs=1e-6)


def test_evaluate_encodes_with_the_checkpoint_vocabularies(tagger, tmp_path):
    # another folder whose train split differs: vocabularies rebuilt from it would shift every
    # word id; the checkpoint's keep the test scores exactly
    run, reported = tagger
    folder = tmp_path / "data"
    folder.mkdir()
    lines = (SAMPLE_NER / "train.txt").read_text().splitlines()
    (folder / "train.txt").write_text("\n".join(lines[: len(lines) // 7]) + "\n")
    for name in ("dev.txt", "test.txt"):
        (folder / name).write_text((SAMPLE_NER / name).read_text())
    result = evaluate(eval_cfg(tmp_path, run, f"data.dir={folder}", "predictions=false"))
    assert result["test"]["f1"] == pytest.approx(reported["test"]["f1"], abs=1e-6)
    assert not (tmp_path / "test_predictions.conll").exists()


def test_evaluate_classifier(classifier, tmp_path):
    run, reported = classifier
    result = evaluate(eval_cfg(tmp_path, run))
    for key in ("acc", "macro_f1"):
        assert result["test"][key] == pytest.approx(reported["test"][key], abs=1e-6)


def test_predict_column_file_gives_the_reported_f1(tagger, tmp_path):
    run, reported = tagger
    out = tmp_path / "tagged.conll"
    summary = predict(predict_cfg(run / "checkpoints" / "best.ckpt", SAMPLE_NER / "test.txt",
                                  f"output={out}", "batch_size=64"))
    assert summary["input_format"] == "columns" and summary["format"] == "conll"
    gold = list(read_column_file(SAMPLE_NER / "test.txt"))
    predicted = list(read_column_file(out, tag_column=1))
    assert [p["tokens"] for p in predicted] == [g["tokens"] for g in gold]
    f1 = f1_score([g["tags"] for g in gold], [p["tags"] for p in predicted])
    assert f1 == pytest.approx(reported["test"]["f1"], abs=1e-6)


def test_predict_plain_text_and_jsonl(tagger, tmp_path, capsys):
    run, _ = tagger
    gold = list(read_column_file(SAMPLE_NER / "test.txt"))[:40]
    lines = [" ".join(s["tokens"]) for s in gold]
    lines[5:5] = ["", "   "]  # empty sentences: empty output, never a crash
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(lines) + "\n")
    # the same sentences read from the column file: the reference tags
    columns = tmp_path / "columns.conll"
    columns.write_text("".join("".join(f"{t} {g}\n" for t, g in zip(s["tokens"], s["tags"],
                                                                      strict=True)) + "\n"
                               for s in gold))
    predict(predict_cfg(run, columns, f"output={tmp_path / 'ref.conll'}"))
    reference = [s["tags"] for s in read_column_file(tmp_path / "ref.conll", tag_column=1)]

    summary = predict(predict_cfg(run, text, "format=jsonl"))  # to stdout
    assert summary["input_format"] == "text"
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(lines)
    for empty in records[5:7]:  # (confidence fields beside them are tested elsewhere)
        assert empty["tokens"] == empty["tags"] == []
    del records[5:7]
    assert [r["tokens"] for r in records] == [s["tokens"] for s in gold]
    assert [r["tags"] for r in records] == reference

    predict(predict_cfg(run, text))  # CoNLL: a blank line after every sentence, empty ones too
    sentences, rows = [], []
    for row in capsys.readouterr().out.splitlines():
        if row:
            rows.append(row.split())
        else:
            sentences.append(rows)
            rows = []
    assert rows == [] and len(sentences) == len(lines)
    assert sentences[5] == sentences[6] == []
    del sentences[5:7]
    assert [[token for token, _ in s] for s in sentences] == [s["tokens"] for s in gold]
    assert [[tag for _, tag in s] for s in sentences] == reference


def test_predict_streams_large_inputs_in_input_order(tagger, tmp_path, monkeypatch):
    """Chunks of CHUNK sentences: the first is labelled before the rest of the file is read,
    and the output, in input order, equals one labelling of all sentences at once."""
    import birnn.cli.predict as command
    from birnn.inference import Predictor

    run, _ = tagger
    gold = list(read_column_file(SAMPLE_NER / "test.txt"))[:50]
    text = tmp_path / "sentences.txt"
    text.write_text("".join(" ".join(s["tokens"]) + "\n" for s in gold))
    whole = Predictor.from_checkpoint(run).predict([s["tokens"] for s in gold])

    calls = []  # per call: sentences given, and how much of the input had been read
    real = Predictor.predict

    def recording(self, sentences, *args, **kwargs):
        calls.append((len(sentences), sources[0].bytes_read))
        return real(self, sentences, *args, **kwargs)

    sources = []

    class Recorded(command.Input):
        def __init__(self, source):
            super().__init__(source)
            sources.append(self)

    monkeypatch.setattr(Predictor, "predict", recording)
    monkeypatch.setattr(command, "CHUNK", 7)
    monkeypatch.setattr(command, "Input", Recorded)
    out = tmp_path / "tagged.conll"
    # (input_format=auto would read 2000 lines ahead to tell the format)
    summary = predict(predict_cfg(run, text, f"output={out}", "batch_size=3",
                                  "input_format=text"))
    assert summary["sentences"] == 50
    assert [n for n, _ in calls] == [7] * 7 + [1]
    assert calls[0][1] < text.stat().st_size  # labelling began before the input was all read
    assert [s["tags"] for s in read_column_file(out, tag_column=1)] == whole


def test_predict_command_reads_stdin(tagger, tmp_path):
    run, _ = tagger
    result = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), f"ckpt={run}", "input=-", "format=jsonl"],
        input="EU rejects German call to boycott British lamb .\n\nPeter Blackburn\n",
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: records only
    assert [len(r["tags"]) for r in records] == [9, 0, 2]
    assert list(tmp_path.iterdir()) == []  # no run folder, no log file


def test_classifier_predictions_give_the_reported_accuracy(classifier, tmp_path, capsys):
    run, reported = classifier
    with (SAMPLE_SENTIMENT / "test.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    text = tmp_path / "sentences.txt"
    text.write_text("".join(r["sentence"] + "\n" for r in rows))
    predict(predict_cfg(run, text))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows)
    fields = [line.split("\t") for line in lines]
    assert [f[2] for f in fields] == [" ".join(r["sentence"].split()) for r in rows]
    accuracy = sum(f[0] == r["label"] for f, r in zip(fields, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(reported["test"]["acc"], abs=1e-6)

    text.write_text(rows[0]["sentence"] + "\n\n")
    predict(predict_cfg(run, text, "format=jsonl"))
    first, empty = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["label"] == fields[0][0] and 0.5 <= first["probability"] <= 1.0
    assert empty == {"tokens": [], "label": None, "probability": None}


def _bad_checkpoints(tmp_path, run):
    good = (run / "checkpoints" / "best.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.ckpt").write_bytes(b"this is not a checkpoint\n" * 40)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.ckpt")


BAD_CHECKPOINTS = [
    ("truncated.ckpt", "not a readable checkpoint: truncated or corrupt"),
    ("garbage.ckpt", "not a readable checkpoint"),
    ("empty.ckpt", "not a readable checkpoint (empty or truncated file)"),
    ("foreign.ckpt", "not a birnn checkpoint (no hyper_parameters, vocabularies)"),
    ("missing.ckpt", "checkpoint not found"),
]


@pytest.mark.parametrize(("name", "message"), BAD_CHECKPOINTS)
def test_bad_checkpoint_gives_one_line_and_exit_2(tagger, tmp_path, capsys, name, message):
    _bad_checkpoints(tmp_path, tagger[0])
    for command, cfg in ((predict, predict_cfg(tmp_path / name, SAMPLE_NER / "test.txt")),
                         (evaluate, eval_cfg(tmp_path, tmp_path / name))):
        with pytest.raises(SystemExit) as exit_info:
            user_errors_exit(command)(cfg)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.parametrize(("overrides", "message"), [
    (["input=/nonexistent.txt"], "/nonexistent.txt: cannot read the input"),
    (["format=tsv"], "format: 'tsv' is not an output of a tagger"),
    (["device=tpu"], "device: unknown 'tpu'"),
    (["input_format=csv"], "input_format: unknown 'csv'"),
])
def test_bad_predict_options(tagger, capsys, overrides, message):
    cfg = predict_cfg(tagger[0], SAMPLE_NER / "test.txt", *overrides)
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(predict)(cfg)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_needs_data_of_the_checkpoint_task(tagger, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(evaluate)(eval_cfg(tmp_path, tagger[0], "data=sample_sentiment"))
    assert exit_info.value.code == 2
    assert "the checkpoint is a tagging model" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "columns"), [
    ("EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n", True),
    ("-DOCSTART- O\n\nEU B-ORG\n", True),
    ("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n", True),  # one sentence, then a blank line
    ("EU rejects German call .\nPeter Blackburn\nBRUSSELS 1996-08-22\n", False),
    ("John runs\nMary walks\nthey sleep\n", False),  # equal lengths, but no blocks
    ("EU rejects\n\nthe call\n\n", False),  # blocks of one line: plain text with gaps
    ("single\n", False),
    ("", False),
])
def test_input_detection(tmp_path, text, columns):
    path = tmp_path / "input.txt"
    path.write_text(text)
    assert looks_like_columns(text.splitlines()) == columns
    sentences, found = read_sentences(str(path))
    assert found == ("columns" if columns else "text")
    if not columns:
        assert list(sentences) == [line.split() for line in text.splitlines()]
