"""Summarize a Hydra multirun sweep of `python train.py -m ...` as a table and a chart.

Usage::

    python scripts/summarize_sweep.py multirun/DATE/TIME [--out DIR]

The sweep folder holds one numbered folder per job (``0/``, ``1/``, ...; or any folder with
``.hydra/overrides.yaml``, for multiruns that share one folder). From each job it reads

- ``.hydra/overrides.yaml``: the job's override strings;
- ``config.yaml`` (the resolved config; ``.hydra/config.yaml`` when it is missing):
  ``encoder.cell``, ``encoder.merge``, ``monitor`` and ``monitor_mode``;
- ``metrics.json`` when the job finished: the monitored validation score (key ``monitor``
  without its ``val/`` prefix), the same key on the test split, training tokens/s, parameters
  and wall time;
- ``error.txt`` when it failed (no ``metrics.json``): its first line is the status shown. A
  job folder with neither file is counted as unfinished (still running, or killed), not as
  failed.

It writes into ``--out`` (default: the sweep folder itself)

- ``summary.md``: one row per job, best validation score first (lowest first when the sweep's
  ``monitor_mode`` is ``min``), failed jobs last; below it two sections:

  - "Mean over seeds": jobs whose override strings are the same once any ``seed=...`` override
    is dropped form one group; per group the number of finished seeds and of failed jobs, the
    mean ± sample std (ddof=1; just the mean for a single seed) of the validation score, the test
    score and training tokens/s, and the mean wall time. Failed jobs are counted, not averaged;
  - "Merge mode × cell": when merge mode and/or cell type vary (resolved config labels) and no
    other override does (``seed`` aside), a pivot of "dev mean ± std / test mean ± std" with one
    row per merge mode (concat, sum, mul, ave, then others) and one column per cell type (lstm,
    gru, then others, per-layer lists by their string); scores in percent with one decimal when
    the monitored metric is f1 / acc / accuracy with values in [0, 1], else as stored. A second
    pivot gives the mean training tokens/s in thousands ("12.3k"). Otherwise one line says why
    there is no pivot;
- ``summary.png``: test score against training tokens/s, one marker shape per merge mode and one
  colour per cell type (per-layer lists shown as their string); failed jobs are left out;

and prints the tables and the paths written. Per-job scores are printed as stored in
``metrics.json``.
Exit status 2, with one line on stderr, when the folder does not exist or holds no job folders.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

import yaml

MD_NAME = "summary.md"
PNG_NAME = "summary.png"
DEFAULT_MONITOR = "val/f1"

# Fixed styles for the documented choices; anything else (per-layer lists, new modes) takes the
# next unused style from the spare lists.
MERGE_MARKERS = {"concat": "o", "sum": "s", "mul": "^", "ave": "D", "none": "X"}
SPARE_MARKERS = ["v", "P", "*", "<", ">", "h", "p", "8", "d", "H"]
CELL_COLOURS = {"lstm": "tab:blue", "gru": "tab:orange", "rnn": "tab:green"}
SPARE_COLOURS = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                 "tab:gray"]


class SweepError(Exception):
    """A sweep folder that cannot be summarized (missing, or without job folders)."""


# --------------------------------------------------------------------------- loading


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


def _label(value) -> str:
    """`lstm` -> 'lstm'; a per-layer list `[gru, lstm]` -> '[gru, lstm]'; missing -> '?'."""
    if value is None:
        return "?"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _override_value(overrides: list[str], key: str):
    """The value an override such as `encoder.merge=sum` (or `+`/`++` forms) gives `key`."""
    for item in overrides:
        name, sep, value = item.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


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
    """One job folder as a flat record (see `load_jobs`)."""
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
    cell = encoder.get("cell", _override_value(overrides, "encoder.cell"))
    merge = encoder.get("merge", _override_value(overrides, "encoder.merge"))
    return {
        "job": int(path.name) if path.name.isdigit() else path.name,
        "order": order,  # position among the sweep's job folders
        "path": path,
        "overrides": overrides,
        "cell": _label(cell),
        "merge": _label(merge),
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


def sort_jobs(jobs: list[dict]) -> list[dict]:
    """Best monitored validation score first, jobs without a score next, failed jobs last."""
    def key(job: dict):
        if not job["ok"]:
            return (2, 0.0, job["order"])
        if job["val"] is None:
            return (1, 0.0, job["order"])
        score = job["val"] if job["mode"] == "min" else -job["val"]
        return (0, score, job["order"])

    return sorted(jobs, key=key)


def load_jobs(folder: Path | str) -> list[dict]:
    """Read every job folder of a sweep; records sorted by `sort_jobs`.

    Each record has: job (int), path, overrides (list of str), cell, merge (str labels), monitor
    (e.g. 'val/f1'), mode ('max'/'min'), ok (bool), unfinished (bool: neither metrics.json nor
    error.txt), val, test, tokens_per_s, parameters, wall_time_s (float or None) and error
    (str for a failed or unfinished job, else None).
    Raises `SweepError` when the folder does not exist or holds no job folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SweepError(f"no such sweep folder: {folder}")
    paths = job_folders(folder)
    if not paths:
        raise SweepError(f"no job folders (0/, 1/, ...) in {folder}")
    return sort_jobs([load_job(p, k) for k, p in enumerate(paths)])


# --------------------------------------------------------------------------- table


COLUMNS = ("job", "overrides", "val {m}", "test {m}", "train tokens/s", "parameters",
           "wall time (s)", "status")
RIGHT = {"job", "val {m}", "test {m}", "train tokens/s", "parameters", "wall time (s)"}


def monitors(jobs: list[dict]) -> list[str]:
    """The monitored metric(s) of the sweep, in order of appearance (normally just one)."""
    return list(dict.fromkeys(job["monitor"] for job in jobs))


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table_rows(jobs: list[dict]) -> list[list[str]]:
    """The summary table as strings, one list per job, in the columns of `COLUMNS`."""
    rows = []
    for job in jobs:
        status = "ok" if job["ok"] else (
            f"unfinished: {job['error']}" if job["unfinished"] else f"failed: {job['error']}")
        rows.append([
            str(job["job"]),
            " ".join(job["overrides"]) or "(none)",
            _fmt(job["val"], ".4f"),
            _fmt(job["test"], ".4f"),
            _fmt(job["tokens_per_s"], ",.0f"),
            _fmt(job["parameters"], ",.0f"),
            _fmt(job["wall_time_s"], ".1f"),
            status,
        ])
    return rows


def column_names(jobs: list[dict]) -> list[str]:
    names = monitors(jobs)
    metric = names[0].removeprefix("val/") if len(names) == 1 else "score"
    return [c.format(m=metric) for c in COLUMNS]


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(jobs: list[dict], folder: Path | str) -> str:
    """summary.md's text: a header line, a count line, the per-job table, then the sections of
    `seed_markdown` (mean over seeds; merge mode × cell)."""
    names = monitors(jobs)
    modes = {job["mode"] for job in jobs}
    order = "lower is better" if modes == {"min"} else "higher is better"
    ok = sum(job["ok"] for job in jobs)
    unfinished = sum(job["unfinished"] for job in jobs)
    counts = f"{len(jobs)} jobs: {ok} ok, {len(jobs) - ok - unfinished} failed"
    if unfinished:
        counts += f", {unfinished} unfinished (still running, or killed)"
    lines = [
        f"# Sweep `{folder}`: monitored metric `{', '.join(names)}` ({order})",
        "",
        f"{counts}. Best validation score first, failed and unfinished jobs last; scores as in "
        "each job's metrics.json.",
        "",
    ]
    header = column_names(jobs)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if c in RIGHT else "---" for c in COLUMNS) + "|")
    for row in table_rows(jobs):
        lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n\n" + seed_markdown(jobs)


def write_markdown(jobs: list[dict], folder: Path | str, path: Path) -> Path:
    """Write `markdown(jobs, folder)` to `path`; returns the path."""
    path.write_text(markdown(jobs, folder), encoding="utf-8")
    return path


def print_table(jobs: list[dict], folder: Path | str) -> None:
    """The summary on stdout: rich tables on a terminal, else the Markdown text of summary.md."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or redirected: plain, greppable Markdown
        print(markdown(jobs, folder), end="")
        return
    table = Table(title=f"{folder} ({', '.join(monitors(jobs))})")
    for name, column in zip(column_names(jobs), COLUMNS, strict=True):
        table.add_column(name, justify="right" if column in RIGHT else "left",
                         no_wrap=column in RIGHT, overflow="fold")
    for job, row in zip(jobs, table_rows(jobs), strict=True):
        table.add_row(*(escape(cell) for cell in row), style=None if job["ok"] else "red")
    console.print(table)
    _print_seed_sections(jobs, console)


# --------------------------------------------------------------------------- seeds and pivot


SEED_KEY = "seed"
MERGE_KEY = "encoder.merge"
CELL_KEY = "encoder.cell"
MERGE_ORDER = ("concat", "sum", "mul", "ave")
CELL_ORDER = ("lstm", "gru")
PERCENT_METRICS = {"f1", "acc", "accuracy"}
SEED_COLUMNS = ("overrides (seed aside)", "seeds", "failed", "val {m}", "test {m}",
                "train tokens/s", "wall time (s)")
SEED_RIGHT = {"seeds", "failed", "val {m}", "test {m}", "train tokens/s", "wall time (s)"}


def _override_name(item: str) -> str | None:
    """`+seed=3` -> 'seed'; an override without `=` (e.g. `~seed`) -> None."""
    name, sep, _ = item.lstrip("+~").partition("=")
    return name if sep else None


def group_key(job: dict) -> tuple[str, ...]:
    """A job's override strings without its `seed=...` override(s): jobs that differ only in
    their seed share a key."""
    return tuple(o for o in job["overrides"] if _override_name(o) != SEED_KEY)


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof=1) of the values that are not None; std is None below two."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(jobs: list[dict]) -> dict:
    """Statistics over the finished jobs of `jobs` (failed and unfinished ones are only
    counted).

    Returns n (finished jobs), failed (with error.txt), unfinished (neither metrics.json nor
    error.txt: still running, or killed), val_mean/val_std, test_mean/test_std,
    tokens_mean/tokens_std, wall_mean (float or None; the stds None below two values).
    """
    done = [j for j in jobs if j["ok"]]
    unfinished = sum(j["unfinished"] for j in jobs)
    record = {"n": len(done), "failed": len(jobs) - len(done) - unfinished,
              "unfinished": unfinished}
    for name, field in (("val", "val"), ("test", "test"), ("tokens", "tokens_per_s")):
        record[f"{name}_mean"], record[f"{name}_std"] = _stats([j[field] for j in done])
    record["wall_mean"] = _stats([j["wall_time_s"] for j in done])[0]
    return record


def seed_groups(jobs: list[dict]) -> list[dict]:
    """Jobs grouped by `group_key`, each group an `aggregate` record plus overrides (the key as
    a list), jobs (the group's job numbers), merge, cell and mode (from its first job).

    Best mean validation score first (lowest first in `min` mode), groups without a score next,
    groups with no finished job last; ties in order of their first job.
    """
    grouped: dict[tuple[str, ...], list[dict]] = {}
    for job in sorted(jobs, key=lambda j: j["order"]):
        grouped.setdefault(group_key(job), []).append(job)
    groups = []
    for key, members in grouped.items():
        first = members[0]
        groups.append({"overrides": list(key), "jobs": [j["job"] for j in members],
                       "merge": first["merge"], "cell": first["cell"], "mode": first["mode"],
                       **aggregate(members)})

    def order(group: dict):
        if group["n"] == 0:
            return (2, 0.0, group["jobs"][0])
        if group["val_mean"] is None:
            return (1, 0.0, group["jobs"][0])
        score = group["val_mean"] if group["mode"] == "min" else -group["val_mean"]
        return (0, score, group["jobs"][0])

    return sorted(groups, key=order)


def _mean_std(mean: float | None, std: float | None, spec: str, scale: float = 1.0) -> str:
    """'0.8100 ± 0.0141'; just the mean when there is no std (a single value); '–' for none."""
    if mean is None:
        return "–"
    text = format(mean * scale, spec)
    return text if std is None else f"{text} ± {format(std * scale, spec)}"


def seed_table_rows(groups: list[dict]) -> list[list[str]]:
    """The mean-over-seeds table as strings, one list per group, in `SEED_COLUMNS` order."""
    return [[
        " ".join(g["overrides"]) or "(none)",
        str(g["n"]),
        str(g["failed"]) + (f" (+{g['unfinished']} unfinished)" if g["unfinished"] else ""),
        _mean_std(g["val_mean"], g["val_std"], ".4f"),
        _mean_std(g["test_mean"], g["test_std"], ".4f"),
        _mean_std(g["tokens_mean"], g["tokens_std"], ",.0f"),
        _fmt(g["wall_mean"], ".1f"),
    ] for g in groups]


def _ordered(labels, preferred: tuple[str, ...]) -> list[str]:
    present = list(dict.fromkeys(labels))
    return [p for p in preferred if p in present] + [p for p in present if p not in preferred]


def pivot_skip_reason(jobs: list[dict]) -> str | None:
    """Why the merge × cell pivot is not drawn for this sweep, or None when it is.

    It is drawn when merge mode and/or cell type (resolved labels) vary and every override other
    than `encoder.merge`, `encoder.cell` and `seed` is the same in all jobs.
    """
    others: list[dict[str, str]] = []
    for job in jobs:
        rest = {}
        for item in job["overrides"]:
            name = _override_name(item)
            if name not in (SEED_KEY, MERGE_KEY, CELL_KEY):
                rest[name if name is not None else item] = item
        others.append(rest)
    names = dict.fromkeys(name for rest in others for name in rest)
    varying = [n for n in names if len({rest.get(n) for rest in others}) > 1]
    if varying:
        return ("Merge × cell pivot skipped: overrides other than encoder.merge, encoder.cell "
                f"and seed also vary ({', '.join(f'`{n}`' for n in varying)}).")
    if len({j["merge"] for j in jobs}) < 2 and len({j["cell"] for j in jobs}) < 2:
        return "Merge × cell pivot skipped: neither encoder.merge nor encoder.cell varies."
    return None


def _percent(jobs: list[dict]) -> bool:
    """Scores shown as percentages: one monitored metric, named f1 / acc / accuracy (alone or as
    a `_`-separated part, e.g. `f1_macro`), and every finished score within [0, 1]."""
    names = monitors(jobs)
    if len(names) != 1:
        return False
    parts = set(re.split(r"[_\-/]", names[0].removeprefix("val/").lower()))
    values = [j[k] for j in jobs if j["ok"] for k in ("val", "test") if j[k] is not None]
    return bool(parts & PERCENT_METRICS) and all(0.0 <= v <= 1.0 for v in values)


def pivot(jobs: list[dict]) -> dict:
    """The merge × cell pivot: merges (rows: concat, sum, mul, ave, then others), cells (columns:
    lstm, gru, then others), percent (bool), cells {(merge, cell): `aggregate` record} for the
    combinations with at least one job. Call only when `pivot_skip_reason` is None."""
    jobs = sorted(jobs, key=lambda j: j["order"])
    cells: dict[tuple[str, str], list[dict]] = {}
    for job in jobs:
        cells.setdefault((job["merge"], job["cell"]), []).append(job)
    return {
        "merges": _ordered((j["merge"] for j in jobs), MERGE_ORDER),
        "cells": _ordered((j["cell"] for j in jobs), CELL_ORDER),
        "percent": _percent(jobs),
        "stats": {key: aggregate(members) for key, members in cells.items()},
    }


def _common_n(table: dict) -> int | None:
    counts = Counter(s["n"] for s in table["stats"].values() if s["n"])
    return counts.most_common(1)[0][0] if counts else None


def pivot_score_rows(table: dict) -> list[list[str]]:
    """'dev mean ± std / test mean ± std' per merge (row) and cell (column); a cell whose number
    of finished seeds differs from the most common one, or with failed jobs, says so."""
    scale, spec = (100.0, ".1f") if table["percent"] else (1.0, ".4f")
    common = _common_n(table)
    rows = []
    for merge in table["merges"]:
        row = [merge]
        for cell in table["cells"]:
            s = table["stats"].get((merge, cell))
            if s is None:
                row.append("–")
                continue
            text = "–" if s["n"] == 0 else (
                f"{_mean_std(s['val_mean'], s['val_std'], spec, scale)} / "
                f"{_mean_std(s['test_mean'], s['test_std'], spec, scale)}")
            notes = ([f"n={s['n']}"] if s["n"] and s["n"] != common else []) + (
                [f"{s['failed']} failed"] if s["failed"] else []) + (
                [f"{s['unfinished']} unfinished"] if s["unfinished"] else [])
            row.append(text + (f" ({', '.join(notes)})" if notes else ""))
        rows.append(row)
    return rows


def pivot_speed_rows(table: dict) -> list[list[str]]:
    """Mean training tokens/s per merge (row) and cell (column), in thousands: '12.3k'."""
    rows = []
    for merge in table["merges"]:
        row = [merge]
        for cell in table["cells"]:
            s = table["stats"].get((merge, cell))
            mean = None if s is None else s["tokens_mean"]
            row.append("–" if mean is None else f"{mean / 1000:.1f}k")
        rows.append(row)
    return rows


def seed_sections(jobs: list[dict]) -> list[tuple[str, object]]:
    """The '## Mean over seeds' and '## Merge mode × cell' sections as blocks:
    ('heading', text), ('text', text) or ('table', (header, right-aligned flags, rows))."""
    names = monitors(jobs)
    metric = names[0].removeprefix("val/") if len(names) == 1 else "score"
    groups = seed_groups(jobs)
    blocks: list[tuple[str, object]] = [
        ("heading", "Mean over seeds"),
        ("text", f"{len(groups)} group{'s' * (len(groups) != 1)} of jobs that differ only in "
                 "`seed`: mean ± sample std (ddof=1) over the finished seeds (just the mean "
                 "when there is one), mean wall time; failed and unfinished jobs are counted, "
                 "not averaged."),
        ("table", ([c.format(m=metric) for c in SEED_COLUMNS],
                   [c in SEED_RIGHT for c in SEED_COLUMNS], seed_table_rows(groups))),
        ("heading", "Merge mode × cell"),
    ]
    reason = pivot_skip_reason(jobs)
    if reason is not None:
        blocks.append(("text", reason))
        return blocks
    table = pivot(jobs)
    common = _common_n(table)
    unit = " (%)" if table["percent"] else ""
    seeds = f"n={common} seed{'s' * (common != 1)} per cell" if common else "no finished seeds"
    header = ["merge \u2193 cell \u2192", *table["cells"]]
    right = [False] + [True] * len(table["cells"])
    blocks += [
        ("text", f"Validation / test {metric}{unit}: mean ± sample std over {seeds} (other "
                 "counts and failed jobs noted in the cell)."),
        ("table", (header, right, pivot_score_rows(table))),
        ("text", "Training tokens/s (mean over seeds, thousands):"),
        ("table", (header, right, pivot_speed_rows(table))),
    ]
    return blocks


def seed_markdown(jobs: list[dict]) -> str:
    """The Markdown text of `seed_sections` (appended to summary.md below the per-job table)."""
    lines: list[str] = []
    for kind, content in seed_sections(jobs):
        if kind == "heading":
            lines += [f"## {content}", ""]
        elif kind == "text":
            lines += [str(content), ""]
        else:
            header, right, rows = content
            lines.append("| " + " | ".join(_md_cell(c) for c in header) + " |")
            lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _print_seed_sections(jobs: list[dict], console) -> None:
    """`seed_sections` on a terminal, as rich tables."""
    from rich.markup import escape
    from rich.table import Table

    for kind, content in seed_sections(jobs):
        if kind == "heading":
            console.print()
            console.rule(escape(str(content)))
        elif kind == "text":
            console.print(str(content), markup=False, highlight=False)
        else:
            header, right, rows = content
            table = Table()
            for name, flag in zip(header, right, strict=True):
                table.add_column(escape(name), justify="right" if flag else "left",
                                 overflow="fold")
            for row in rows:
                table.add_row(*(escape(cell) for cell in row))
            console.print(table)


# --------------------------------------------------------------------------- chart


def _styles(labels: list[str], fixed: dict[str, str], spare: list[str]) -> dict[str, str]:
    styles: dict[str, str] = {}
    free = [s for s in spare if s not in fixed.values()]
    for label in dict.fromkeys(labels):
        if label in fixed:
            styles[label] = fixed[label]
        else:
            styles[label] = free[sum(k not in fixed for k in styles) % len(free)]
    return styles


def sweep_name(folder: Path | str) -> str:
    """`multirun/2026-11-23/12-00-00` -> '2026-11-23/12-00-00' (DATE/TIME)."""
    path = Path(folder).resolve()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def write_chart(jobs: list[dict], folder: Path | str, path: Path) -> Path:
    """Test score against training tokens/s as a PNG; failed (or unmeasured) jobs are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    points = [j for j in jobs if j["ok"] and j["test"] is not None
              and j["tokens_per_s"] is not None]
    names = monitors(jobs)
    metric = names[0].removeprefix("val/") if len(names) == 1 else "score"
    markers = _styles([j["merge"] for j in points], MERGE_MARKERS, SPARE_MARKERS)
    colours = _styles([j["cell"] for j in points], CELL_COLOURS, SPARE_COLOURS)

    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    for job in points:
        ax.scatter(job["tokens_per_s"], job["test"], marker=markers[job["merge"]],
                   color=colours[job["cell"]], s=70, edgecolors="black", linewidths=0.5,
                   zorder=3)
        ax.annotate(str(job["job"]), (job["tokens_per_s"], job["test"]), fontsize=8,
                    xytext=(5, 5), textcoords="offset points")
    if points:
        merge_handles = [Line2D([], [], linestyle="", marker=m, color="0.4", markersize=8,
                                label=label) for label, m in markers.items()]
        cell_handles = [Line2D([], [], linestyle="", marker="o", color=c, markersize=8,
                               label=label) for label, c in colours.items()]
        first = ax.legend(handles=merge_handles, title="merge", loc="upper left",
                          bbox_to_anchor=(1.01, 1.0))
        ax.add_artist(first)
        ax.legend(handles=cell_handles, title="cell", loc="lower left",
                  bbox_to_anchor=(1.01, 0.0))
    else:
        ax.text(0.5, 0.5, "no finished jobs", transform=ax.transAxes, ha="center",
                va="center")
    skipped = len(jobs) - len(points)
    ax.set_xlabel("training tokens/s")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"sweep {sweep_name(folder)}: test {metric} vs training speed"
                 + (f" ({skipped} job{'s' * (skipped != 1)} not shown)" if skipped else ""))
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Summarize a Hydra multirun sweep folder (multirun/DATE/TIME) as "
                    f"{MD_NAME} and {PNG_NAME}.")
    parser.add_argument("folder", type=Path, help="the sweep folder, e.g. multirun/DATE/TIME")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the summary (default: the sweep folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the sweep, write summary.md and summary.png, print the table; returns the exit code."""
    args = parse_args(argv)
    try:
        jobs = load_jobs(args.folder)
    except SweepError as e:
        print(f"summarize_sweep: error: {e}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else args.folder
    out.mkdir(parents=True, exist_ok=True)
    md = write_markdown(jobs, args.folder, out / MD_NAME)
    png = write_chart(jobs, args.folder, out / PNG_NAME)
    print_table(jobs, args.folder)
    print(f"wrote {md}")
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
