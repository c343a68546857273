"""Experiment loggers (W&B offline, CSV, TensorBoard) and Hydra multiruns: a grid sweep, a
sweep with a failing job, an Optuna study; all offline, with tiny models."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, make_config

from birnn.cli.train import train

# a tiny model; with LR it learns something in one epoch (val F1 ~0.2 on the sample)
TINY = ("encoder.hidden_size=16", "model.embedding_dim=16", "encoder.num_layers=1",
        "trainer.max_epochs=1")
LR = "model.optimizer.lr=0.03"
QUIET = ("callbacks.progress_bar=null", "trainer.enable_progress_bar=false")
# sweeps: ten training batches per job, no experiment logger
CHEAP = (*TINY, *QUIET, "+trainer.limit_train_batches=10", "logger=none")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def offline_env(home: Path) -> dict:
    """The environment of a user without W&B credentials: no WANDB_* variables (so no
    WANDB_MODE either), HOME without a ~/.netrc, no Hub access, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", BIRNN_ROOT=str(ROOT))
    return env


def run_train(tmp_path: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python train.py ARGS` from tmp_path; stdout and stderr captured."""
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args],
                          cwd=tmp_path, env=offline_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# --------------------------------------------------------------------------- W&B offline


def wandb_records(path: Path):
    """The protobuf records of a `run-*.wandb` file (a LevelDB-style log: a 7-byte W&B header,
    then 32 KiB blocks of chunks, each with a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 2):  # full, first
            pending = chunk
        else:  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _items(updates) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in updates}


def test_wandb_default_logs_offline_without_credentials(tmp_path):
    run = tmp_path / "run"
    result = run_train(tmp_path, *TINY, LR, *QUIET, "encoder.merge=sum", f"hydra.run.dir={run}")
    check_ok(result)

    folders = list((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 1, list((run / "wandb").iterdir())
    folder = folders[0]
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert folder.name.endswith(f"-{run_id}")
    log_file = folder / f"run-{run_id}.wandb"
    assert log_file.is_file()

    config, history, summary = {}, {}, {}
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update(_items(record.config.update))
        elif kind == "history":
            for key, value in _items(record.history.item).items():
                history.setdefault(key, []).append(value)
        elif kind == "summary":
            summary.update(_items(record.summary.update))
    assert config["encoder"]["merge"] == "sum" and config["encoder"]["hidden_size"] == 16
    assert config["parameters"] > 0 and config["monitor"] == "val/f1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert history["val/f1"] and 0 < history["val/f1"][-1] <= 1
    assert summary["best/val/f1"] == pytest.approx(metrics["val"]["f1"])
    assert summary["final/test/f1"] == pytest.approx(metrics["test"]["f1"])
    for key in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"):
        assert key in history, key

    # how to upload it later, both in W&B's own output and in the run's log
    sync = f"wandb sync {folder}"
    assert sync in result.stderr
    assert sync in (run / "train.log").read_text()


# --------------------------------------------------------------------------- CSV, TensorBoard


def _compose_with_logger(tmp_path: Path, spec: str):
    return make_config(tmp_path, *TINY, LR, f"logger={spec}")


def _check_csv(out: Path) -> None:
    with (out / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    for key in ("val/f1", "train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"):
        assert key in columns, key
        values = [float(r[key]) for r in rows if r[key]]
        assert values and all(v == v for v in values), key  # present and not NaN
    assert max(float(r["train/tokens_per_s"]) for r in rows if r["train/tokens_per_s"]) > 0
    assert 0 < float([r for r in rows if r["val/f1"]][-1]["val/f1"]) <= 1


def _check_tensorboard(out: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(out.iterdir())
    accumulator = EventAccumulator(str(out / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"val/f1", "train/loss", "train/lr", "train/grad_norm"} <= tags, tags
    assert "test/test_f1_per_type" in accumulator.Tags()["images"]


@pytest.mark.parametrize("spec", ["csv", "tensorboard", "[csv,tensorboard]"])
def test_file_loggers(tmp_path, spec):
    train(_compose_with_logger(tmp_path, spec))
    has_csv = (tmp_path / "csv" / "metrics.csv").is_file()
    has_tb = (tmp_path / "tensorboard").is_dir()
    assert (has_csv, has_tb) == ("csv" in spec, "tensorboard" in spec)
    if has_csv:
        _check_csv(tmp_path)
    if has_tb:
        _check_tensorboard(tmp_path)
    assert not (tmp_path / "wandb").exists()


# --------------------------------------------------------------------------- multiruns


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _table_rows(markdown: str) -> list[str]:
    """The rows of the first table (one per job), without its header and |---| lines."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start + 2:end]


def test_grid_sweep_and_summary(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(tmp_path, "-m", "encoder.merge=concat,sum", "encoder.cell=lstm,gru",
                       *CHEAP, f"hydra.sweep.dir={sweep}")
    check_ok(result)
    jobs = _jobs(sweep)
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert 0 <= metrics["val"]["f1"] <= 1
        config = yaml.safe_load((job / "config.yaml").read_text())
        seen.add((config["encoder"]["merge"], config["encoder"]["cell"]))
        assert not (job / "error.txt").exists()
    assert seen == {(m, c) for m in ("concat", "sum") for c in ("lstm", "gru")}

    summary = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize_sweep.py"),
                              str(sweep)], capture_output=True, text=True, cwd=tmp_path,
                             env=offline_env(tmp_path), timeout=120)
    assert summary.returncode == 0, summary.stderr
    rows = _table_rows((sweep / "summary.md").read_text())
    assert len(rows) == 4 and all(row.rstrip(" |").endswith("ok") for row in rows), rows
    assert (sweep / "summary.png").read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {sweep / 'summary.md'}" in summary.stdout


def test_sweep_goes_on_after_a_failed_job(tmp_path):
    sweep = tmp_path / "sweep"
    # the failing job first: the one after it must still run
    result = run_train(tmp_path, "-m", "encoder.merge=bogus,sum", *CHEAP,
                       f"hydra.sweep.dir={sweep}")
    check_ok(result)
    failed, ok = _jobs(sweep)
    assert not (failed / "metrics.json").exists()
    error = (failed / "error.txt").read_text()
    assert "encoder.merge: must be one of concat, sum, mul, ave, none" in error
    assert json.loads((ok / "metrics.json").read_text())["val"]["f1"] >= 0
    assert not (ok / "error.txt").exists()
    assert "job 0 failed" in result.stdout + result.stderr

    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "summarize_sweep_logging_tests", ROOT / "scripts" / "summarize_sweep.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    assert summarize.main([str(sweep)]) == 0
    rows = _table_rows((sweep / "summary.md").read_text())
    assert len(rows) == 2
    assert rows[0].rstrip(" |").endswith("ok")
    assert "failed: encoder.merge: must be one of concat, sum, mul, ave, none" in rows[1]


def test_optuna_search(tmp_path):
    sweep = tmp_path / "sweep"
    # hidden_size and num_layers given on the command line are fixed, not searched; the
    # learning rate, dropout, merge and cell are
    result = run_train(tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                       *CHEAP, f"hydra.sweep.dir={sweep}")
    check_ok(result)
    output = result.stdout + result.stderr
    assert "Best value" in output and "Best parameters" in output
    jobs = _jobs(sweep)
    assert len(jobs) == 3
    scores = {}
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        scores[job.name] = (metrics["val"]["f1"], overrides)
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert config["encoder"]["hidden_size"] == 16 and config["encoder"]["num_layers"] == 1

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"model.optimizer.lr", "encoder.dropout",
                                           "encoder.merge", "encoder.cell"}
    best_value = max(score for score, _ in scores.values())
    assert results["best_value"] == pytest.approx(best_value)
    # the best trial's parameters are the overrides of a job that scored the best value
    assert any(score == pytest.approx(results["best_value"])
               and all(f"{k}={v}" in overrides for k, v in results["best_params"].items())
               for score, overrides in scores.values())


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep_as_subprocesses(tmp_path):
    """The launcher cluster sweeps use (`hydra/launcher=submitit_slurm`), in its local form."""
    sweep = tmp_path / "sweep"
    result = run_train(tmp_path, "-m", "hydra/launcher=submitit_local", "encoder.merge=sum,ave",
                       *CHEAP, f"hydra.sweep.dir={sweep}", timeout=600)
    check_ok(result)
    jobs = _jobs(sweep)
    assert [p.name for p in jobs] == ["0", "1"]
    merges = set()
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["test"]["f1"] >= 0
        merges.add(yaml.safe_load((job / "config.yaml").read_text())["encoder"]["merge"])
        # each job ran in its own process, whose submitit logs sit in the sweep folder
    assert merges == {"sum", "ave"}
    assert list(sweep.glob(".submitit/*/*_log.out"))
