"""Robust to real text: the robustness report of `evaluate.py robustness=true` against
scoring hand-perturbed copies of the file, and `data.bad_lines` for malformed column files."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE_NER, recased_copy
from hydra import compose, initialize_config_dir

from birnn.cli.app import user_errors_exit
from birnn.cli.evaluate import evaluate
from birnn.data import TaggingDataModule, read_column_file
from birnn.errors import DataError
from birnn.metrics.robustness import perturbed_split, split_seed

TAGGER = ROOT / "tests" / "fixtures" / "checkpoints" / "tagger.ckpt"


def eval_cfg(out: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[
            f"ckpt={TAGGER}", f"paths.output_dir={out}", "trainer.enable_progress_bar=false",
            "predictions=false", *overrides])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The first 150 sentences or so of each file of the NER sample."""
    folder = tmp_path_factory.mktemp("small")
    for name in ("train.txt", "dev.txt", "test.txt"):
        text = (SAMPLE_NER / name).read_text().splitlines()[:2000]
        (folder / name).write_text("\n".join(text) + "\n\n")
    return folder


# ----------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report(tmp_path_factory, small):
    out = tmp_path_factory.mktemp("report")
    return out, evaluate(eval_cfg(out, "data=sample", f"data.dir={small}", "robustness=true"))


def test_a_perturbation_scores_as_a_perturbed_file_evaluated_normally(report, small, tmp_path):
    _, metrics = report
    lowered = recased_copy(small, tmp_path / "lower", str.lower)
    plain = evaluate(eval_cfg(tmp_path / "eval", "data=sample", f"data.dir={lowered}"))
    reported = metrics["robustness"]["scores"]["lower"]
    assert set(reported) == set(plain["test"])
    for key, value in plain["test"].items():
        assert reported[key] == pytest.approx(value, abs=1e-9), key
    # not a vacuous comparison: the model finds entities, and lower-casing changes its scores
    assert plain["test"]["precision"] > 0
    assert reported["f1"] != metrics["robustness"]["scores"]["as is"]["f1"]


def test_report_files_and_metrics(report, small):
    out, metrics = report
    rob = metrics["robustness"]
    saved = json.loads((out / "metrics.json").read_text())["robustness"]
    assert saved["f1"] == rob["f1"]
    kinds = ["as is", "lower", "upper", "title", "typo", "keyboard", "ocr"]
    assert list(rob["f1"]) == kinds
    assert rob["f1"]["as is"] == pytest.approx(metrics["test"]["f1"])
    assert (rob["rate"], rob["ocr_rate"]) == (0.05, 0.3)
    # the seed comes from the split's text: the same file gives the same seed
    tokens = [s["tokens"] for s in read_column_file(small / "test.txt")]
    assert rob["seed"] == split_seed(tokens)
    assert split_seed([*tokens[:-1], [*tokens[-1][:-1], "x"]]) != rob["seed"]
    # the table: one row per input, its score and the change from the split as is
    rows = re.findall(r"^\| (\S[^|]*?) \| ([\d.]+) \| ([-+\d.]*) \|", (out / "robustness.md")
                      .read_text(), flags=re.M)
    assert [r[0] for r in rows] == kinds
    clean = round(100 * rob["f1"]["as is"], 2)
    for kind, value, change in rows:
        assert float(value) == round(100 * rob["f1"][kind], 2)
        if kind != "as is":
            assert float(change) == pytest.approx(float(value) - clean, abs=0.011)
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_same_split_same_perturbed_copies(small):
    tokens = [s["tokens"] for s in read_column_file(small / "test.txt")]
    seed = split_seed(tokens)
    for kind in ("typo", "keyboard", "ocr"):
        copy = perturbed_split(kind, tokens, seed, 0.05, 0.3)
        assert copy == perturbed_split(kind, tokens, split_seed(tokens), 0.05, 0.3)
        assert copy != tokens and [len(s) for s in copy] == [len(s) for s in tokens]


@pytest.mark.parametrize(("override", "message"), [
    ("noise.rate=0.7", "noise.rate: must be a number in (0, 0.5], got 0.7"),
    ("robustness=yes", "robustness: must be true or false, got 'yes'"),
])
def test_bad_robustness_options_are_one_line(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as e:
        user_errors_exit(evaluate)(eval_cfg(tmp_path, "data=sample", override))
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


# ------------------------------------------------------------------------- malformed lines

GOOD = "EU B-ORG\nrejects O\n\n"
SPACED = "o tt O\nbank O\n\n"  # a token with a space inside: one column too many


def column_file(path: Path, sentences: list[str]) -> Path:
    path.write_text("".join(sentences))
    return path


def test_bad_lines_error_by_default_names_file_and_line(tmp_path):
    path = column_file(tmp_path / "x.txt", [GOOD, SPACED, GOOD])
    with pytest.raises(DataError, match=r"x\.txt:4: 3 columns where the file's first token "
                                        r"line has 2: 'o tt O'"):
        list(read_column_file(path))


def test_bad_lines_skip_leaves_out_the_sentence_and_records_its_line(tmp_path):
    other = "Peter B-PER\nBlack\xff B-PER\n\n".encode("latin-1")  # not UTF-8 on line 2
    path = tmp_path / "x.txt"
    path.write_bytes((GOOD + SPACED + GOOD).encode() + other + b"last O\n")
    skipped: list[int] = []
    got = list(read_column_file(path, bad_lines="skip", skipped=skipped))
    assert got == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}] * 2 + [
        {"tokens": ["last"], "tags": ["O"]}]
    assert skipped == [4, 11]


def test_skipped_sentences_counted_in_one_warning(tmp_path, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    # 7 bad sentences in train, the first at line 4 (3 + 3 * k for k = 1..7)
    column_file(folder / "train.txt", [GOOD] + [SPACED] * 7 + [GOOD])
    for name in ("dev.txt", "test.txt"):
        column_file(folder / name, [GOOD])
    dm = TaggingDataModule(dir=str(folder), bad_lines="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.splits["train"]) == 2
    warnings = [r.getMessage() for r in caplog.records if "bad_lines" in r.getMessage()]
    train = folder / "train.txt"
    places = ", ".join(f"{train}:{n}" for n in (4, 7, 10, 13, 16))
    assert warnings == [f"data: train.txt: 7 sentences with a malformed line skipped "
                        f"(data.bad_lines=skip): {places} and 2 more"]
    with pytest.raises(DataError, match=r"train\.txt:4:"):
        TaggingDataModule(dir=str(folder)).setup("fit")
