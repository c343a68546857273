"""Reading a Hydra multirun folder into a DataFrame with one row per job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from birnn.errors import DataError

DEFAULT_MONITOR = "val/f1"
SEED_KEY = "seed"
# columns read from metrics.json (None when missing), as floats so that pandas skips them
NUMBERS = ("val", "test", "tokens_per_s", "parameters", "wall_time_s")


def _read_yaml(path: Path):
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def label(value) -> str:
    """`lstm` -> 'lstm'; a per-layer list `[gru, lstm]` -> '[gru, lstm]'; missing -> '?'."""
    if value is None:
        return "?"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def override_name(item: str) -> str | None:
    """`+seed=3` -> 'seed'; an override without `=` (e.g. `~seed`) -> None."""
    name, sep, _ = item.lstrip("+~").partition("=")
    return name if sep else None


def _override_value(overrides: list[str], key: str):
    """The value an override such as `encoder.merge=sum` (or `+`/`++` forms) gives `key`."""
    for item in overrides:
        if override_name(item) == key:
            return item.partition("=")[2]
    return None


def group_key(overrides: list[str]) -> tuple[str, ...]:
    """The override strings without the `seed=...` one(s): jobs that differ only in their seed
    share a key."""
    return tuple(o for o in overrides if override_name(o) != SEED_KEY)


def _error_line(path: Path) -> str:
    """The first line of error.txt; for a full traceback its last line (the exception) instead."""
    if not path.is_file():
        return "no metrics.json (still running, or killed)"
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace")
             .splitlines() if line.strip()]
    if not lines:
        return "empty error.txt"
    if lines[0].startswith("Traceback") and len(lines) > 1:
        return lines[-1]
    return lines[0]


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def job_folders(folder: Path) -> list[Path]:
    """The job folders of a sweep: numbered folders (Hydra's default `hydra.sweep.subdir`) in
    job order, then any other folder holding `.hydra/overrides.yaml` (a custom subdir, e.g.
    `hydra.sweep.subdir=seed${seed}_${hydra.job.num}` when several multiruns share one sweep
    folder), by name."""
    numbered = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name))
    named = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.isdigit()
                   and (p / ".hydra" / "overrides.yaml").is_file())
    return numbered + named


def load_job(path: Path, order: int = 0) -> dict:
    """One job folder as a flat record: a row of `load_jobs`' frame."""
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    config = _read_yaml(path / "config.yaml")
    if not isinstance(config, dict):
        config = _read_yaml(path / ".hydra" / "config.yaml")
    config = config if isinstance(config, dict) else {}
    encoder = config.get("encoder") if isinstance(config.get("encoder"), dict) else {}
    metrics = _read_json(path / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else None

    monitor = str((metrics or {}).get("monitor") or config.get("monitor") or DEFAULT_MONITOR)
    key = monitor.removeprefix("val/")
    val = (metrics or {}).get("val") or {}
    test = (metrics or {}).get("test") or {}
    return {
        "job": int(path.name) if path.name.isdigit() else path.name,
        "order": order,  # position among the sweep's job folders: the tie-breaker
        "path": str(path),
        "overrides": overrides,
        "group": group_key(overrides),
        "cell": label(encoder.get("cell", _override_value(overrides, "encoder.cell"))),
        "merge": label(encoder.get("merge", _override_value(overrides, "encoder.merge"))),
        "monitor": monitor,
        "mode": str(config.get("monitor_mode") or "max"),
        "ok": metrics is not None,
        # neither metrics.json nor error.txt: still running, or killed without a trace
        "unfinished": metrics is None and not (path / "error.txt").is_file(),
        "val": _number(val.get(key)),
        "test": _number(test.get(key)),
        "tokens_per_s": _number((metrics or {}).get("train_tokens_per_s")),
        "parameters": _number((metrics or {}).get("parameters")),
        "wall_time_s": _number((metrics or {}).get("wall_time_s")),
        "error": None if metrics is not None else _error_line(path / "error.txt"),
    }


def ranked(frame: pd.DataFrame, done: pd.Series, score: str, first: str) -> pd.DataFrame:
    """`frame` sorted best `score` first (lowest first where its `mode` is 'min'), rows without
    a score next, rows that are not `done` last; ties by `first`. Jobs and seed groups are
    ordered by this one rule."""
    values = frame[score]
    tier = np.where(~done.to_numpy(bool), 2, np.where(values.isna(), 1, 0))
    key = values.where(frame["mode"] == "min", -values).fillna(0.0)
    order = pd.DataFrame({"tier": tier, "key": key, "first": frame[first]}, index=frame.index)
    return frame.loc[order.sort_values(["tier", "key", "first"], kind="stable").index]


def load_jobs(folder: Path | str) -> pd.DataFrame:
    """Read every job folder of a sweep into a frame, best validation score first, jobs without
    a score next, failed and unfinished jobs last.

    Columns: job (int, or the folder name), order, path, overrides (list of str), group (the
    overrides without seed, a tuple), cell, merge (str labels), monitor (e.g. 'val/f1'), mode
    ('max'/'min'), ok (bool: metrics.json), unfinished (bool: neither metrics.json nor
    error.txt), val, test, tokens_per_s, parameters, wall_time_s (float, NaN when missing) and
    error (str for a failed or unfinished job, else missing).

    Raises:
        DataError: the folder does not exist or holds no job folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such sweep folder", path=folder)
    paths = job_folders(folder)
    if not paths:
        raise DataError("no job folders (0/, 1/, ...)", path=folder)
    jobs = pd.DataFrame.from_records([load_job(p, k) for k, p in enumerate(paths)])
    jobs = jobs.astype(dict.fromkeys(NUMBERS, float) | {"ok": bool, "unfinished": bool})
    return ranked(jobs, jobs["ok"], "val", "order").reset_index(drop=True)


def monitors(jobs: pd.DataFrame) -> list[str]:
    """The monitored metric(s) of the sweep, in order of appearance (normally just one)."""
    return list(dict.fromkeys(jobs.sort_values("order")["monitor"]))


def metric_name(jobs: pd.DataFrame) -> str:
    """The monitored metric without `val/` ('f1'), or 'score' when jobs monitor different ones."""
    names = monitors(jobs)
    return names[0].removeprefix("val/") if len(names) == 1 else "score"
