"""scripts/summarize_sweep.py on a fake Hydra multirun folder (no training involved)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "summarize_sweep.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_script():
    spec = importlib.util.spec_from_file_location("summarize_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


summarize = _load_script()

# job number -> (merge, cell, val f1, test f1, training tokens/s, parameters, wall time)
FINISHED = {
    0: ("concat", "lstm", 0.8100, 0.7900, 12000.0, 301234, 40.5),
    1: ("concat", "gru", 0.9300, 0.9100, 15500.0, 250000, 35.25),
    2: ("sum", "lstm", 0.8700, 0.8500, 13250.0, 201000, 38.0),
    3: ("sum", "gru", 0.7500, 0.7200, 17000.0, 180500, 30.0),
}
FAILED = 4
ERROR = "ConfigError: encoder.merge: unknown merge mode 'bogus'"
EXPECTED_ORDER = [1, 2, 0, 3, FAILED]  # by val f1 descending, the failed job last


def _write_job(folder: Path, merge: str, cell: str) -> None:
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"encoder.merge={merge}", f"encoder.cell={cell}"]
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    config = (
        f"encoder:\n  cell: {cell}\n  hidden_size: 128\n  num_layers: 2\n  merge: {merge}\n"
        "  dropout: 0.3\nseed: 42\nmonitor: val/f1\nmonitor_mode: max\n"
    )
    (folder / ".hydra" / "config.yaml").write_text(config)
    (folder / "config.yaml").write_text(config)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """multirun/DATE/TIME with 4 finished jobs (2 merges x 2 cells) and 1 failed job."""
    root = tmp_path / "multirun" / "2026-11-23" / "12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    for job, (merge, cell, val, test, rate, params, wall) in FINISHED.items():
        _write_job(root / str(job), merge, cell)
        metrics = {
            "monitor": "val/f1",
            "best_checkpoint": str(root / str(job) / "checkpoints" / "best.ckpt"),
            "epochs": 9,
            "val": {"f1": val, "precision": val, "recall": val, "loss": 0.5},
            "test": {"f1": test, "precision": test, "recall": test, "loss": 0.6},
            "parameters": params,
            "train_tokens_per_s": rate,
            "train_padded_fraction": 0.03,
            "wall_time_s": wall,
            "device": "cpu",
        }
        (root / str(job) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_job(root / str(FAILED), "bogus", "lstm")
    (root / str(FAILED) / "config.yaml").unlink()  # the encoder check fails before it is written
    (root / str(FAILED) / "error.txt").write_text(ERROR + "\n")
    return root


def _job_rows(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("| ")][1:]  # skip the header
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def _check_outputs(out: Path, sweep: Path) -> None:
    md = (out / "summary.md").read_text()
    header = md.splitlines()[0]
    assert "val/f1" in header and str(sweep) in header
    rows = _job_rows(md)
    assert [int(r[0]) for r in rows] == EXPECTED_ORDER
    for row in rows[:-1]:
        merge, cell, val, test, rate, params, wall = FINISHED[int(row[0])]
        assert row[1] == f"encoder.merge={merge} encoder.cell={cell}"
        assert row[2:7] == [f"{val:.4f}", f"{test:.4f}", f"{rate:,.0f}", f"{params:,}",
                            f"{wall:.1f}"]
        assert row[7] == "ok"
    assert rows[-1][1] == "encoder.merge=bogus encoder.cell=lstm"
    assert rows[-1][2:7] == ["–"] * 5
    assert rows[-1][7] == f"failed: {ERROR}"
    assert "15,500" in md and "0.9300" in md and "0.9100" in md

    png = out / "summary.png"
    data = png.read_bytes()
    assert png.stat().st_size > 1000 and data[:8] == PNG_MAGIC


def test_main_writes_summary_into_sweep_folder(sweep: Path, capsys) -> None:
    assert summarize.main([str(sweep)]) == 0
    _check_outputs(sweep, sweep)
    printed = capsys.readouterr().out
    assert str(sweep / "summary.md") in printed and str(sweep / "summary.png") in printed


def test_out_option(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert summarize.main([str(sweep), "--out", str(out)]) == 0
    _check_outputs(out, sweep)
    assert not (sweep / "summary.md").exists()


def test_load_jobs_records(sweep: Path) -> None:
    jobs = summarize.load_jobs(sweep)
    assert [j["job"] for j in jobs] == EXPECTED_ORDER
    best, failed = jobs[0], jobs[-1]
    assert (best["merge"], best["cell"], best["ok"], best["val"]) == ("concat", "gru", True, 0.93)
    assert (failed["ok"], failed["error"], failed["merge"]) == (False, ERROR, "bogus")


def test_traceback_and_min_mode(sweep: Path) -> None:
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n"
    (sweep / str(FAILED) / "error.txt").write_text(traceback)
    for job in FINISHED:
        config = sweep / str(job) / "config.yaml"
        config.write_text(config.read_text().replace("monitor_mode: max", "monitor_mode: min"))
    jobs = summarize.load_jobs(sweep)
    assert [j["job"] for j in jobs] == [3, 0, 2, 1, FAILED]
    assert jobs[-1]["error"] == "ValueError: boom"


def test_per_layer_lists_are_labelled_by_their_string(sweep: Path) -> None:
    config = sweep / "0" / "config.yaml"
    config.write_text(config.read_text().replace("merge: concat", "merge: [concat, sum]")
                      .replace("cell: lstm", "cell: [gru, lstm]"))
    job = next(j for j in summarize.load_jobs(sweep) if j["job"] == 0)
    assert (job["merge"], job["cell"]) == ("[concat, sum]", "[gru, lstm]")
    assert summarize.main([str(sweep)]) == 0
    assert (sweep / "summary.png").read_bytes()[:8] == PNG_MAGIC


def test_script_runs_as_a_command(sweep: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), str(sweep)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "summary.md" in result.stdout and "summary.png" in result.stdout
    _check_outputs(sweep, sweep)


def test_missing_folder_exits_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "multirun" / "nope"
    assert summarize.main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(missing) in err

    result = subprocess.run([sys.executable, str(SCRIPT), str(missing)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "no such sweep folder" in result.stderr and result.stdout == ""


def test_folder_without_jobs_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes").mkdir()
    assert summarize.main([str(tmp_path)]) == 2
    assert "no job folders" in capsys.readouterr().err
