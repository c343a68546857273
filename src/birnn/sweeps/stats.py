"""Statistics over a sweep's jobs: the mean over seeds per group and the merge x cell pivot."""

from __future__ import annotations

import re

import pandas as pd

from birnn.sweeps.jobs import SEED_KEY, monitors, override_name, ranked

MERGE_KEY = "encoder.merge"
CELL_KEY = "encoder.cell"
MERGE_ORDER = ("concat", "sum", "mul", "ave")
CELL_ORDER = ("lstm", "gru")
PERCENT_METRICS = {"f1", "acc", "accuracy"}


def aggregate(jobs: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """One row per value of `by`, in order of each group's first job.

    Columns: jobs (the group's job labels), merge, cell, mode (from its first job), first (its
    first job's order), n (finished jobs), failed (with error.txt), unfinished (neither
    metrics.json nor error.txt), val_mean/val_std, test_mean/test_std, tokens_mean/tokens_std
    and wall_mean. Means and sample stds (ddof=1) are over the finished jobs with a value: NaN
    when there is none, and the std NaN below two values. Failed and unfinished jobs have no
    scores, so they are counted, never averaged.
    """
    by_list = [by] if isinstance(by, str) else list(by)
    rest = {"merge": ("merge", "first"), "cell": ("cell", "first")}
    groups = jobs.sort_values("order").groupby(by_list, sort=False).agg(
        jobs=("job", list), **{k: v for k, v in rest.items() if k not in by_list},
        mode=("mode", "first"), first=("order", "first"), size=("order", "size"),
        n=("ok", "sum"), unfinished=("unfinished", "sum"),
        val_mean=("val", "mean"), val_std=("val", "std"),
        test_mean=("test", "mean"), test_std=("test", "std"),
        tokens_mean=("tokens_per_s", "mean"), tokens_std=("tokens_per_s", "std"),
        wall_mean=("wall_time_s", "mean"),
    )
    groups["failed"] = groups["size"] - groups["n"] - groups["unfinished"]
    return groups.drop(columns="size").reset_index()


def seed_groups(jobs: pd.DataFrame) -> pd.DataFrame:
    """`aggregate` over jobs whose overrides are the same once `seed=...` is dropped (column
    `group`, a tuple of override strings), best mean validation score first (lowest first in
    `min` mode), groups without a score next, groups with no finished job last; ties in order
    of their first job."""
    groups = aggregate(jobs, "group")
    return ranked(groups, groups["n"] > 0, "val_mean", "first").reset_index(drop=True)


def pivot_skip_reason(jobs: pd.DataFrame) -> str | None:
    """Why the merge x cell pivot is not drawn for this sweep, or None when it is.

    It is drawn when merge mode and/or cell type (resolved labels) vary and every override other
    than `encoder.merge`, `encoder.cell` and `seed` is the same in all jobs.
    """
    # one column per other override name (an override without `=` is its own name), NaN in
    # the jobs that lack it: a column with more than one value (NaN counted) varies
    others = pd.DataFrame.from_records(
        [{(override_name(o) or o): o for o in overrides
          if override_name(o) not in (SEED_KEY, MERGE_KEY, CELL_KEY)}
         for overrides in jobs.sort_values("order")["overrides"]],
        index=range(len(jobs)))
    varying = [name for name, count in others.nunique(dropna=False).items() if count > 1]
    if varying:
        return ("Merge × cell pivot skipped: overrides other than encoder.merge, encoder.cell "
                f"and seed also vary ({', '.join(f'`{n}`' for n in varying)}).")
    if jobs["merge"].nunique() < 2 and jobs["cell"].nunique() < 2:
        return "Merge × cell pivot skipped: neither encoder.merge nor encoder.cell varies."
    return None


def percent(jobs: pd.DataFrame) -> bool:
    """Scores shown as percentages: one monitored metric, named f1 / acc / accuracy (alone or as
    a `_`-separated part, e.g. `f1_macro`), and every finished score within [0, 1]."""
    names = monitors(jobs)
    if len(names) != 1:
        return False
    parts = set(re.split(r"[_\-/]", names[0].removeprefix("val/").lower()))
    scores = jobs.loc[jobs["ok"], ["val", "test"]].stack()  # NaNs dropped
    return bool(parts & PERCENT_METRICS) and bool(scores.between(0.0, 1.0).all())


def _ordered(labels: pd.Series, preferred: tuple[str, ...]) -> list[str]:
    present = list(dict.fromkeys(labels))
    return [p for p in preferred if p in present] + [p for p in present if p not in preferred]


def pivot_cells(jobs: pd.DataFrame) -> pd.DataFrame:
    """`aggregate` by (merge, cell): one row per combination with at least one job. Call only
    when `pivot_skip_reason` is None."""
    return aggregate(jobs, ["merge", "cell"])


def pivot_axes(jobs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The pivot's rows (merges: concat, sum, mul, ave, then others in job order) and columns
    (cells: lstm, gru, then others)."""
    jobs = jobs.sort_values("order")
    return _ordered(jobs["merge"], MERGE_ORDER), _ordered(jobs["cell"], CELL_ORDER)


def common_n(cells: pd.DataFrame) -> int | None:
    """The most common number of finished seeds over the cells that have any (the larger on a
    tie: cells with fewer are the ones that lost seeds); None when no cell has one."""
    counts = cells.loc[cells["n"] > 0, "n"]
    return int(counts.mode().max()) if len(counts) else None
