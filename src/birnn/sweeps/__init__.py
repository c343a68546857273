"""Summaries of Hydra multirun sweeps (`python train.py -m ...`): a table and a chart.

A sweep folder holds one numbered folder per job (``0/``, ``1/``, ...; or any folder with
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

`scripts/summarize_sweep.py` (`birnn.sweeps.cli.main`) writes

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
- ``summary.png``: one point per seed group, its mean test score against its mean training
  tokens/s with error bars of one sample std over its seeds (none for a single seed), one
  marker shape per merge mode, one colour per cell type (per-layer lists shown as their
  string) and one label per group; failed jobs are left out.

Modules: `jobs` (reading the folders into a DataFrame), `stats` (groups and pivot), `report`
(Markdown and terminal tables), `chart`, `cli`.
"""

from birnn.sweeps.chart import chart_points, draw_chart, write_chart
from birnn.sweeps.jobs import load_jobs
from birnn.sweeps.report import markdown
from birnn.sweeps.stats import aggregate, pivot_skip_reason, seed_groups

__all__ = ["aggregate", "chart_points", "draw_chart", "load_jobs", "markdown",
           "pivot_skip_reason", "seed_groups", "write_chart"]
