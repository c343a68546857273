"""Summarize a Hydra multirun sweep of `python train.py -m ...` as a table and a chart.

Usage::

    python scripts/summarize_sweep.py multirun/DATE/TIME [--out DIR]

The sweep folder holds one numbered folder per job (``0/``, ``1/``, ...). From each job it reads

- ``.hydra/overrides.yaml``: the job's override strings;
- ``config.yaml`` (the resolved config; ``.hydra/config.yaml`` when it is missing):
  ``encoder.cell``, ``encoder.merge``, ``monitor`` and ``monitor_mode``;
- ``metrics.json`` when the job finished: the monitored validation score (key ``monitor``
  without its ``val/`` prefix), the same key on the test split, training tokens/s, parameters
  and wall time;
- ``error.txt`` when it failed (no ``metrics.json``): its first line is the status shown.

It writes into ``--out`` (default: the sweep folder itself)

- ``summary.md``: one row per job, best validation score first (lowest first when the sweep's
  ``monitor_mode`` is ``min``), failed jobs last;
- ``summary.png``: test score against training tokens/s, one marker shape per merge mode and one
  colour per cell type (per-layer lists shown as their string); failed jobs are left out;

and prints the table and the paths written. Scores are printed as stored in ``metrics.json``.
Exit status 2, with one line on stderr, when the folder does not exist or holds no job folders.
"""

from __future__ import annotations

import argparse
import json
import sys
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
        return "no metrics.json"
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
    """The numbered job folders of a sweep, in job order."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def load_job(path: Path) -> dict:
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
        "job": int(path.name),
        "path": path,
        "overrides": overrides,
        "cell": _label(cell),
        "merge": _label(merge),
        "monitor": monitor,
        "mode": str(config.get("monitor_mode") or "max"),
        "ok": metrics is not None,
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
            return (2, 0.0, job["job"])
        if job["val"] is None:
            return (1, 0.0, job["job"])
        score = job["val"] if job["mode"] == "min" else -job["val"]
        return (0, score, job["job"])

    return sorted(jobs, key=key)


def load_jobs(folder: Path | str) -> list[dict]:
    """Read every job folder of a sweep; records sorted by `sort_jobs`.

    Each record has: job (int), path, overrides (list of str), cell, merge (str labels), monitor
    (e.g. 'val/f1'), mode ('max'/'min'), ok (bool), val, test, tokens_per_s, parameters,
    wall_time_s (float or None) and error (str for a failed job, else None).
    Raises `SweepError` when the folder does not exist or holds no numbered job folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SweepError(f"no such sweep folder: {folder}")
    paths = job_folders(folder)
    if not paths:
        raise SweepError(f"no job folders (0/, 1/, ...) in {folder}")
    return sort_jobs([load_job(p) for p in paths])


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
        status = "ok" if job["ok"] else f"failed: {job['error']}"
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
    """summary.md's text: a header line, a count line, and the table."""
    names = monitors(jobs)
    modes = {job["mode"] for job in jobs}
    order = "lower is better" if modes == {"min"} else "higher is better"
    ok = sum(job["ok"] for job in jobs)
    lines = [
        f"# Sweep `{folder}`: monitored metric `{', '.join(names)}` ({order})",
        "",
        f"{len(jobs)} jobs: {ok} ok, {len(jobs) - ok} failed. Best validation score first, "
        "failed jobs last; scores as in each job's metrics.json.",
        "",
    ]
    header = column_names(jobs)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if c in RIGHT else "---" for c in COLUMNS) + "|")
    for row in table_rows(jobs):
        lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(jobs: list[dict], folder: Path | str, path: Path) -> Path:
    """Write `markdown(jobs, folder)` to `path`; returns the path."""
    path.write_text(markdown(jobs, folder), encoding="utf-8")
    return path


def print_table(jobs: list[dict], folder: Path | str) -> None:
    """The summary table on stdout: a rich table on a terminal, else the Markdown text."""
    from rich.console import Console
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
        table.add_row(*row, style=None if job["ok"] else "red")
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
