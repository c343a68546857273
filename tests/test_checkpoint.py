"""`birnn.checkpoint`: weights-only reading with one-line errors, and the fallback of a resume
whose `last.ckpt` is unreadable; training (`ckpt_path=`, `resume=true`) gets the same errors."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_config

from birnn.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_model,
    read_checkpoint,
    resumable,
)
from birnn.cli.app import user_errors_exit
from birnn.cli.train import train
from birnn.errors import CheckpointError
from birnn.models import SentenceClassifier, TokenTagger

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
TINY = ("encoder.hidden_size=8", "model.embedding_dim=8", "encoder.num_layers=1",
        "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=1")


def bad_checkpoints(folder: Path) -> dict[str, str]:
    """Unfit checkpoint files, each with the message it must give."""
    good = (FIXTURES / "tagger.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (folder / "garbage.ckpt").write_bytes(b"this is not a checkpoint\n" * 40)
    (folder / "empty.ckpt").write_bytes(b"")
    checkpoint = torch.load(FIXTURES / "tagger.ckpt", weights_only=True)
    torch.save({**checkpoint, "args": argparse.Namespace(lr=0.1)}, folder / "pickled.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, folder / "foreign.ckpt")
    torch.save({**checkpoint, "vocabularies": {**checkpoint["vocabularies"], "task": "parsing"}},
               folder / "other_task.ckpt")
    torch.save([1, 2, 3], folder / "list.ckpt")
    return {
        "truncated.ckpt": "not a readable checkpoint: truncated or corrupt",
        "garbage.ckpt": "not a readable checkpoint",
        "empty.ckpt": "not a readable checkpoint (empty or truncated file)",
        "pickled.ckpt": "holds objects other than tensors and plain Python values",
        "foreign.ckpt": "not a birnn checkpoint (no hyper_parameters, vocabularies)",
        "other_task.ckpt": "not a birnn checkpoint (unknown task 'parsing'",
        "list.ckpt": "not a birnn checkpoint (not a Lightning checkpoint dictionary)",
        "missing.ckpt": "checkpoint not found",
    }


def test_unfit_files_give_one_line_naming_the_file(tmp_path):
    for name, message in bad_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(checkpoint_path(tmp_path / name))
        text = str(info.value)
        assert "\n" not in text and text.startswith(str(tmp_path / name)), text
        assert message in text, (name, text)


def test_read_is_weights_only(tmp_path, monkeypatch):
    # a pickled object is refused even where unpickling it would be harmless
    bad_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path / "pickled.ckpt")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    read_checkpoint(FIXTURES / "tagger.ckpt")
    assert calls == [{"map_location": "cpu", "weights_only": True}]


@pytest.mark.parametrize(("name", "cls"), [("tagger", TokenTagger),
                                           ("classifier", SentenceClassifier)])
def test_load_model_matches_lightning_loading(name, cls):
    # independent of birnn.checkpoint: Lightning's own loader of the same file
    model, vocabularies = load_model(FIXTURES / f"{name}.ckpt")
    reference = cls.load_from_checkpoint(FIXTURES / f"{name}.ckpt", map_location="cpu",
                                         weights_only=True)
    assert type(model) is cls and not model.training
    assert vocabularies == torch.load(FIXTURES / f"{name}.ckpt",
                                      weights_only=True)["vocabularies"]
    for (k, a), (j, b) in zip(model.state_dict().items(), reference.state_dict().items(),
                              strict=True):
        assert k == j and torch.equal(a, b)


def test_run_folder_means_its_best_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(FIXTURES / "tagger.ckpt", tmp_path / "checkpoints" / "best.ckpt")
    assert checkpoint_path(tmp_path) == tmp_path / "checkpoints" / "best.ckpt"


def test_resumable_falls_back_to_the_newest_readable(tmp_path, caplog):
    bad_checkpoints(tmp_path)
    older, newer = tmp_path / "older.ckpt", tmp_path / "newer.ckpt"
    shutil.copy(FIXTURES / "tagger.ckpt", older)
    shutil.copy(FIXTURES / "tagger.ckpt", newer)
    os.utime(older, (1, 1))
    os.utime(newer, (2, 2))
    os.utime(tmp_path / "garbage.ckpt", (3, 3))  # the newest file, but unreadable
    with caplog.at_level(logging.WARNING, logger="birnn"):
        path, checkpoint = resumable(tmp_path / "truncated.ckpt", tmp_path)
    assert path == newer and "state_dict" in checkpoint
    lines = [r.getMessage() for r in caplog.records]
    assert any("truncated.ckpt: not a readable checkpoint" in m for m in lines)
    assert any(f"continuing from {newer}" in m for m in lines)
    assert all("\n" not in m for m in lines)


def test_resumable_without_a_readable_checkpoint_is_an_error(tmp_path):
    bad_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="no readable checkpoint to continue from"):
        resumable(tmp_path / "truncated.ckpt", tmp_path)


# ------------------------------------------------------------------------------ training


def test_train_from_a_pickled_checkpoint_is_one_line(tmp_path, capsys):
    bad_checkpoints(tmp_path)
    cfg = make_config(tmp_path / "again", *TINY, f"ckpt_path={tmp_path / 'pickled.ckpt'}")
    with pytest.raises(SystemExit) as info:
        user_errors_exit(train)(cfg)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "weights_only" in err, err


def test_resume_from_a_truncated_last_checkpoint_continues_from_another(tmp_path, capsys,
                                                                        caplog):
    folder = tmp_path / "run"
    train(make_config(folder, *TINY, "trainer.max_epochs=2"))  # best.ckpt and last.ckpt
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    best = folder / "checkpoints" / "best.ckpt"
    saved_epoch = torch.load(best, weights_only=True)["epoch"]  # the epoch it was saved in
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="birnn"):
        metrics = train(make_config(folder, *TINY, "trainer.max_epochs=3", "resume=true"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("last.ckpt: not a readable checkpoint" in m for m in warnings), warnings
    assert any(f"continuing from {best}" in m for m in warnings), warnings
    # the epochs trained after the resume: those after the one best.ckpt was saved in
    trained = [int(line.split("|")[0].split()[1]) for line in capsys.readouterr().out.splitlines()
               if line.startswith("epoch ")]
    assert trained == list(range(saved_epoch + 1, 3)), trained
    assert metrics["epochs"] == 3
