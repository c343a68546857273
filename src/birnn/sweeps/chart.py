"""summary.png: test score against training tokens/s, one point per seed group."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from birnn.sweeps.jobs import metric_name
from birnn.sweeps.stats import common_n, seed_groups

# Fixed styles for the documented choices; anything else (per-layer lists, new modes) takes the
# next unused style from the spare lists.
MERGE_MARKERS = {"concat": "o", "sum": "s", "mul": "^", "ave": "D", "none": "X"}
SPARE_MARKERS = ["v", "P", "*", "<", ">", "h", "p", "8", "d", "H"]
CELL_COLOURS = {"lstm": "tab:blue", "gru": "tab:orange", "rnn": "tab:green"}
SPARE_COLOURS = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                 "tab:gray"]


def _styles(labels, fixed: dict[str, str], spare: list[str]) -> dict[str, str]:
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


def _labels(groups: pd.DataFrame) -> list[str]:
    """Per group the values of its overrides that not every group shares ('sum lstm'), with
    its number of seeds where that differs from the most common one."""
    keys = [set(group) for group in groups["group"]]
    shared = set.intersection(*keys) if keys else set()
    common = common_n(groups)
    labels = []
    for group, n in zip(groups["group"], groups["n"], strict=True):
        own = [item.partition("=")[2] or item for item in group if item not in shared]
        text = " ".join(own) or " ".join(group) or "(none)"
        labels.append(text + (f" (n={n})" if n != common else ""))
    return labels


def chart_points(jobs: pd.DataFrame) -> pd.DataFrame:
    """The chart's points: the `seed_groups` rows with a mean test score and a mean tokens/s,
    plus `label` (see `_labels`), `marker` (per merge mode) and `colour` (per cell type). The
    error bars are the sample stds (`test_std`, `tokens_std`; NaN for a single seed)."""
    groups = seed_groups(jobs)
    points = groups[groups["test_mean"].notna() & groups["tokens_mean"].notna()].copy()
    markers = _styles(points["merge"], MERGE_MARKERS, SPARE_MARKERS)
    colours = _styles(points["cell"], CELL_COLOURS, SPARE_COLOURS)
    points["label"] = _labels(points)
    points["marker"] = points["merge"].map(markers)
    points["colour"] = points["cell"].map(colours)
    return points.reset_index(drop=True)


def _bar(std: float) -> float | None:
    return None if pd.isna(std) else float(std)


def draw_chart(jobs: pd.DataFrame, folder: Path | str):
    """The chart as a matplotlib Figure: per `chart_points` row one `errorbar` container (mean
    test score against mean training tokens/s, bars of one sample std where there are two or
    more seeds) and one text label; one legend for the markers, one for the colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    points = chart_points(jobs)
    metric = metric_name(jobs)
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    for p in points.itertuples():
        ax.errorbar(p.tokens_mean, p.test_mean, xerr=_bar(p.tokens_std), yerr=_bar(p.test_std),
                    marker=p.marker, color=p.colour, linestyle="none", markersize=8,
                    markeredgecolor="black", markeredgewidth=0.5, elinewidth=1, capsize=3,
                    zorder=3)
        ax.annotate(p.label, (p.tokens_mean, p.test_mean), fontsize=8, xytext=(5, 5),
                    textcoords="offset points")
    if len(points):
        merges = dict(zip(points["merge"], points["marker"], strict=True))
        cells = dict(zip(points["cell"], points["colour"], strict=True))
        first = ax.legend(handles=[Line2D([], [], linestyle="", marker=m, color="0.4",
                                          markersize=8, label=k) for k, m in merges.items()],
                          title="merge", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.add_artist(first)
        ax.legend(handles=[Line2D([], [], linestyle="", marker="o", color=c, markersize=8,
                                  label=k) for k, c in cells.items()],
                  title="cell", loc="lower left", bbox_to_anchor=(1.01, 0.0))
    else:
        ax.text(0.5, 0.5, "no finished jobs", transform=ax.transAxes, ha="center",
                va="center")
    shown = int((jobs["ok"] & jobs["test"].notna() & jobs["tokens_per_s"].notna()).sum())
    skipped = len(jobs) - shown
    ax.set_xlabel("training tokens/s (mean ± std over seeds)")
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title(f"sweep {sweep_name(folder)}: test {metric} vs training speed"
                 + (f" ({skipped} job{'s' * (skipped != 1)} not shown)" if skipped else ""))
    ax.grid(True, alpha=0.3)
    return fig


def write_chart(jobs: pd.DataFrame, folder: Path | str, path: Path) -> Path:
    """Save `draw_chart` as a PNG at `path`; returns the path."""
    import matplotlib.pyplot as plt

    fig = draw_chart(jobs, folder)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
