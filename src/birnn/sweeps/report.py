"""The sweep summary as text: blocks (headings, lines, tables of strings) rendered as Markdown
for summary.md, or as rich tables on a terminal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from birnn.sweeps.jobs import metric_name, monitors
from birnn.sweeps.stats import (
    common_n,
    percent,
    pivot_axes,
    pivot_cells,
    pivot_skip_reason,
    seed_groups,
)

MISSING = "–"


@dataclass(frozen=True)
class Table:
    """A table of strings; `right` names the right-aligned columns, `alert` marks rows (failed
    jobs) that a terminal shows in red."""

    frame: pd.DataFrame
    right: frozenset[str]
    alert: tuple[bool, ...] = ()


def fmt(values: pd.Series, spec: str) -> pd.Series:
    """Each value formatted with `spec`; '–' for a missing one."""
    return values.map(lambda v: MISSING if pd.isna(v) else format(v, spec)).astype(object)


def mean_std(mean: pd.Series, std: pd.Series, spec: str, scale: float = 1.0) -> pd.Series:
    """'0.8100 ± 0.0141'; just the mean where there is no std (a single value); '–' for none."""
    text = fmt(mean * scale, spec)
    both = mean.notna() & std.notna()
    return text.where(~both, text + " ± " + fmt(std * scale, spec))


def _overrides(values: pd.Series) -> pd.Series:
    return values.map(lambda items: " ".join(items) or "(none)").astype(object)


# --------------------------------------------------------------------------- per job


def job_table(jobs: pd.DataFrame) -> Table:
    """One row per job, in the frame's order, with its scores as stored and its status."""
    m = metric_name(jobs)
    error = jobs["error"].astype(object).where(jobs["error"].notna(), "").astype(str)
    status = ("failed: " + error).where(~jobs["unfinished"], "unfinished: " + error)
    frame = pd.DataFrame({
        "job": jobs["job"].astype(str),
        "overrides": _overrides(jobs["overrides"]),
        f"val {m}": fmt(jobs["val"], ".4f"),
        f"test {m}": fmt(jobs["test"], ".4f"),
        "train tokens/s": fmt(jobs["tokens_per_s"], ",.0f"),
        "parameters": fmt(jobs["parameters"], ",.0f"),
        "wall time (s)": fmt(jobs["wall_time_s"], ".1f"),
        "status": status.where(~jobs["ok"], "ok"),
    })
    right = frozenset(frame.columns) - {"overrides", "status"}
    return Table(frame, right, tuple(~jobs["ok"]))


# --------------------------------------------------------------------------- seeds and pivot


def seed_table(jobs: pd.DataFrame) -> Table:
    """One row per `seed_groups` group: finished seeds, failed jobs, mean ± std of the scores
    and tokens/s, mean wall time."""
    m = metric_name(jobs)
    g = seed_groups(jobs)
    unfinished = g["unfinished"].map(lambda k: f" (+{k} unfinished)" if k else "")
    frame = pd.DataFrame({
        "overrides (seed aside)": _overrides(g["group"]),
        "seeds": g["n"].astype(str),
        "failed": g["failed"].astype(str) + unfinished,
        f"val {m}": mean_std(g["val_mean"], g["val_std"], ".4f"),
        f"test {m}": mean_std(g["test_mean"], g["test_std"], ".4f"),
        "train tokens/s": mean_std(g["tokens_mean"], g["tokens_std"], ",.0f"),
        "wall time (s)": fmt(g["wall_mean"], ".1f"),
    })
    return Table(frame, frozenset(frame.columns[1:]))


def _cell_notes(cell, common: int | None) -> str:
    notes = ([f"n={cell.n}"] if cell.n and cell.n != common else []) + (
        [f"{cell.failed} failed"] if cell.failed else []) + (
        [f"{cell.unfinished} unfinished"] if cell.unfinished else [])
    return f" ({', '.join(notes)})" if notes else ""


def _pivot_table(cells: pd.DataFrame, values: str, jobs: pd.DataFrame) -> Table:
    """`cells[values]` spread as merge (rows) x cell (columns); '–' where no job ran."""
    merges, cell_names = pivot_axes(jobs)
    wide = (cells.pivot(index="merge", columns="cell", values=values)
            .reindex(index=merges, columns=cell_names).astype(object).fillna(MISSING))
    corner = "merge \u2193 cell \u2192"
    frame = wide.rename_axis(index=corner, columns=None).reset_index()
    return Table(frame, frozenset(cell_names))


def pivot_tables(jobs: pd.DataFrame) -> tuple[str, Table, Table]:
    """The pivot's caption, its 'dev mean ± std / test mean ± std' table (a cell whose number
    of finished seeds differs from the most common one, or with failed jobs, says so) and its
    mean training tokens/s table in thousands ('12.3k')."""
    cells = pivot_cells(jobs)
    shown_as_percent = percent(jobs)
    scale, spec = (100.0, ".1f") if shown_as_percent else (1.0, ".4f")
    common = common_n(cells)
    scores = (mean_std(cells["val_mean"], cells["val_std"], spec, scale) + " / "
              + mean_std(cells["test_mean"], cells["test_std"], spec, scale))
    cells["score"] = scores.where(cells["n"] > 0, MISSING) + [
        _cell_notes(cell, common) for cell in cells.itertuples()]
    cells["speed"] = fmt(cells["tokens_mean"] / 1000, ".1f").map(
        lambda t: t if t == MISSING else t + "k")
    seeds = f"n={common} seed{'s' * (common != 1)} per cell" if common else "no finished seeds"
    caption = (f"Validation / test {metric_name(jobs)}{' (%)' if shown_as_percent else ''}: "
               f"mean ± sample std over {seeds} (other counts and failed jobs noted in the "
               "cell).")
    return caption, _pivot_table(cells, "score", jobs), _pivot_table(cells, "speed", jobs)


# --------------------------------------------------------------------------- blocks


def sections(jobs: pd.DataFrame, folder: Path | str) -> list[tuple[str, object]]:
    """summary.md as blocks: ('title' | 'heading' | 'text', str) or ('table', `Table`)."""
    names = monitors(jobs)
    order = "lower is better" if set(jobs["mode"]) == {"min"} else "higher is better"
    ok, unfinished = int(jobs["ok"].sum()), int(jobs["unfinished"].sum())
    counts = f"{len(jobs)} jobs: {ok} ok, {len(jobs) - ok - unfinished} failed"
    if unfinished:
        counts += f", {unfinished} unfinished (still running, or killed)"
    groups = len(seed_groups(jobs))
    blocks: list[tuple[str, object]] = [
        ("title", f"Sweep `{folder}`: monitored metric `{', '.join(names)}` ({order})"),
        ("text", f"{counts}. Best validation score first, failed and unfinished jobs last; "
                 "scores as in each job's metrics.json."),
        ("table", job_table(jobs)),
        ("heading", "Mean over seeds"),
        ("text", f"{groups} group{'s' * (groups != 1)} of jobs that differ only in `seed`: "
                 "mean ± sample std (ddof=1) over the finished seeds (just the mean when there "
                 "is one), mean wall time; failed and unfinished jobs are counted, not "
                 "averaged."),
        ("table", seed_table(jobs)),
        ("heading", "Merge mode × cell"),
    ]
    reason = pivot_skip_reason(jobs)
    if reason is not None:
        return [*blocks, ("text", reason)]
    caption, scores, speeds = pivot_tables(jobs)
    return [*blocks, ("text", caption), ("table", scores),
            ("text", "Training tokens/s (mean over seeds, thousands):"), ("table", speeds)]


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    """The table's Markdown lines (`DataFrame.to_markdown` would need `tabulate`)."""
    columns = [str(c) for c in table.frame.columns]
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |",
             "|" + "|".join("---:" if c in table.right else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |"
              for row in table.frame.itertuples(index=False)]
    return lines


def markdown(jobs: pd.DataFrame, folder: Path | str) -> str:
    """summary.md's text: a title, a count line, the per-job table, then the sections "Mean
    over seeds" and "Merge mode × cell"."""
    lines: list[str] = []
    for kind, content in sections(jobs, folder):
        if kind == "table":
            lines += markdown_table(content)
        else:
            lines.append({"title": "# ", "heading": "## "}.get(kind, "") + str(content))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def print_summary(jobs: pd.DataFrame, folder: Path | str) -> None:
    """The summary on stdout: rich tables on a terminal, else the Markdown text of summary.md."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    console = Console()
    if not console.is_terminal:  # piped or redirected: plain, greppable Markdown
        print(markdown(jobs, folder), end="")
        return
    for kind, content in sections(jobs, folder):
        if kind in ("title", "heading"):
            console.print()
            console.rule(escape(str(content)))
        elif kind == "text":
            console.print(str(content), markup=False, highlight=False)
        else:
            table = RichTable()
            for name in content.frame.columns:
                right = name in content.right
                table.add_column(escape(str(name)), justify="right" if right else "left",
                                 no_wrap=right, overflow="fold")
            alert = content.alert or (False,) * len(content.frame)
            for row, red in zip(content.frame.itertuples(index=False), alert, strict=True):
                table.add_row(*(escape(str(v)) for v in row), style="red" if red else None)
            console.print(table)
