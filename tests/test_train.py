"""End-to-end training on the embedded sample: the run folder, scores against independent
baselines, and the one-line errors of the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict

import pytest
import torch
from conftest import ROOT, SAMPLE_NER
from seqeval.metrics import f1_score

from birnn.cli.app import user_errors_exit
from birnn.cli.train import train
from birnn.data import read_column_file


def unigram_baseline_f1() -> float:
    """Span F1 on dev of tagging each word with its most frequent training tag (O if unseen):
    what a model without context gets."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for sent in read_column_file(SAMPLE_NER / "train.txt"):
        for token, tag in zip(sent["tokens"], sent["tags"], strict=True):
            counts[token][tag] += 1
    gold, pred = [], []
    for sent in read_column_file(SAMPLE_NER / "dev.txt"):
        gold.append(sent["tags"])
        pred.append([counts[t].most_common(1)[0][0] if t in counts else "O"
                     for t in sent["tokens"]])
    return f1_score(gold, pred)


@pytest.fixture(scope="module")
def baseline():
    return unigram_baseline_f1()


# concat and mul (the slowest to learn) in the default suite, about 20 s each; the other merges'
# arithmetic is checked against a hand merge in test_encoder.py, their training on demand
@pytest.mark.parametrize("merge", ["concat", "mul", *(pytest.param(m, marks=pytest.mark.slow)
                                                      for m in ("sum", "ave", "[concat,none]"))])
def test_sample_trains_above_baseline_for_each_merge(cfg_factory, merge, baseline):
    # 5 epochs at 2.5x the default rate: mul (a product of two tanh outputs, small gradients
    # at the start) is the slowest merge to learn on the sample (test F1 0.53 after 3 such
    # epochs, 0.87 after 5; the others 0.94-0.99)
    metrics = train(cfg_factory(f"encoder.merge={merge}", "trainer.max_epochs=5",
                                "model.optimizer.lr=0.005"))
    assert metrics["val"]["f1"] > max(0.5, baseline + 0.05), (metrics["val"], baseline)
    assert metrics["test"]["f1"] > max(0.5, baseline + 0.05)


def test_run_folder(cfg_factory, tmp_path):
    metrics = train(cfg_factory("trainer.max_epochs=2"))
    for name in ("config.yaml", "metrics.json", "test_predictions.conll",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["parameters"] == metrics["parameters"] > 0
    assert saved["train_tokens_per_s"] > 0
    assert 0 <= saved["train_padded_fraction"] < 0.5
    for split in ("val", "test"):
        assert {"f1", "precision", "recall"} <= set(saved[split])
    # the predictions file, scored independently, gives the reported test F1
    sentences = list(read_column_file(tmp_path / "test_predictions.conll", tag_column=1))
    preds = list(read_column_file(tmp_path / "test_predictions.conll", tag_column=2))
    test = list(read_column_file(SAMPLE_NER / "test.txt"))
    assert [s["tokens"] for s in sentences] == [s["tokens"] for s in test]
    assert [s["tags"] for s in sentences] == [s["tags"] for s in test]
    f1 = f1_score([s["tags"] for s in test], [p["tags"] for p in preds])
    assert f1 == pytest.approx(saved["test"]["f1"], abs=1e-6)
    # the checkpoint carries the vocabularies that prediction needs
    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    assert ckpt["vocabularies"]["labels"]["itos"][0] == "O"
    assert "<unk>" in ckpt["vocabularies"]["words"]["itos"]


def test_runs_cut_short_inside_an_epoch(cfg_factory, capsys, tmp_path):
    """`trainer.max_steps` inside the first epoch ends it without validating: the run still
    finishes and scores its last weights; inside the second, that epoch's line shows no
    validation scores (the trainer's metrics still hold the first epoch's)."""
    small = ("encoder.hidden_size=8", "model.embedding_dim=8", "+trainer.limit_train_batches=5",
             "+trainer.limit_val_batches=2", "trainer.max_epochs=3")
    for max_steps, validated in ((3, [False]), (8, [True, False])):
        metrics = train(cfg_factory(*small, f"trainer.max_steps={max_steps}"))
        ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == max_steps
        assert {"f1", "precision", "recall"} <= set(metrics["test"])
        lines = [line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("epoch ")]
        assert ["val/f1" in line for line in lines] == validated, lines


def test_mixed_stack(cfg_factory):
    cfg = cfg_factory("encoder.cell=[gru,lstm]", "encoder.hidden_size=[32,16]",
                      "encoder.merge=[concat,sum]", "trainer.max_epochs=1")
    metrics = train(cfg)
    assert metrics["parameters"] > 0 and metrics["test"]["f1"] >= 0


def _bad_file(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = (SAMPLE_NER / "dev.txt").read_text().splitlines()
    for name in ("train.txt", "dev.txt", "test.txt"):
        (folder / name).write_text("\n".join(good[:40]) + "\n")
    (folder / "dev.txt").write_text("EU B-ORG\nrejects O X\n\n")
    return folder


BAD_INPUTS = [
    (["encoder.merge=bogus"], "encoder.merge: must be one of concat, sum, mul, ave, none"),
    (["encoder.cell=tree"], "encoder.cell: must be one of lstm, gru, rnn"),
    (["encoder.merge=[none,concat]"], "'none' is only allowed on the last layer"),
    (["encoder.cell=[gru,lstm,lstm]"], "3 entries"),
    (["encoder.hidden_size=[8,8,8]", "encoder.num_layers=2"], "3 entries"),
    (["data.dir=/nonexistent/folder"], "data folder not found"),
    (["data.files.test=missing.txt"], "test split file not found"),
    (["data=conll"], "data.dir is required"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_2(cfg_factory, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(train)(cfg_factory(*overrides))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_column_file_names_file_and_line(cfg_factory, capsys, tmp_path):
    folder = _bad_file(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(train)(cfg_factory(f"data.dir={folder}"))
    assert exit_info.value.code == 2
    assert f"{folder / 'dev.txt'}:2: 3 columns" in capsys.readouterr().err


def test_command_line_error_exit_code(tmp_path):
    """The real `python train.py` prints the one-line error and exits 2, no traceback."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "encoder.merge=bogus",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 2
    assert "error: encoder.merge: must be one of concat, sum, mul, ave, none" in result.stderr
    assert "Traceback" not in result.stderr
