"""The sweep summary (`birnn.sweeps`, `scripts/summarize_sweep.py`) on a fake Hydra multirun
folder (no training involved): every expected value is computed here from the job files the
test writes."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.collections import LineCollection

from birnn import sweeps
from birnn.sweeps.jobs import group_key

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "summarize_sweep.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_script():
    spec = importlib.util.spec_from_file_location("summarize_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


summarize = _load_script()  # the entry point: its `main`

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


def _write_job(folder: Path, merge: str, cell: str, extra: tuple[str, ...] = ()) -> None:
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"encoder.merge={merge}", f"encoder.cell={cell}", *extra]
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    config = (
        f"encoder:\n  cell: {cell}\n  hidden_size: 128\n  num_layers: 2\n  merge: {merge}\n"
        "  dropout: 0.3\nseed: 42\nmonitor: val/f1\nmonitor_mode: max\n"
    )
    (folder / ".hydra" / "config.yaml").write_text(config)
    (folder / "config.yaml").write_text(config)


def _write_metrics(folder: Path, val: float, test: float, rate: float, params: int,
                   wall: float, monitor: str = "val/f1") -> None:
    key = monitor.removeprefix("val/")
    metrics = {
        "monitor": monitor,
        "best_checkpoint": str(folder / "checkpoints" / "best.ckpt"),
        "epochs": 9,
        "val": {"f1": val, "precision": val, "recall": val, "loss": 0.5, key: val},
        "test": {"f1": test, "precision": test, "recall": test, "loss": 0.6, key: test},
        "parameters": params,
        "train_tokens_per_s": rate,
        "train_padded_fraction": 0.03,
        "wall_time_s": wall,
        "device": "cpu",
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """multirun/DATE/TIME with 4 finished jobs (2 merges x 2 cells) and 1 failed job."""
    root = tmp_path / "multirun" / "2026-11-23" / "12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    for job, (merge, cell, val, test, rate, params, wall) in FINISHED.items():
        _write_job(root / str(job), merge, cell)
        _write_metrics(root / str(job), val, test, rate, params, wall)
    _write_job(root / str(FAILED), "bogus", "lstm")
    (root / str(FAILED) / "config.yaml").unlink()  # the encoder check fails before it is written
    (root / str(FAILED) / "error.txt").write_text(ERROR + "\n")
    return root


def test_a_job_without_metrics_or_error_is_unfinished_not_failed(sweep, tmp_path):
    """A job still running (or killed without a trace) has neither metrics.json nor error.txt:
    it is counted apart from the failed one, in the count line, its status and the seed
    table."""
    unfinished = FAILED + 1
    _write_job(sweep / str(unfinished), "concat", "lstm")
    out = tmp_path / "out"
    assert summarize.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "6 jobs: 4 ok, 1 failed, 1 unfinished (still running, or killed)." in md
    rows = {int(r[0]): r for r in _job_rows(md)}
    assert rows[FAILED][7] == f"failed: {ERROR}"
    assert rows[unfinished][7].startswith("unfinished: no metrics.json")
    jobs = sweeps.load_jobs(sweep).set_index("job")
    assert jobs.loc[unfinished, "unfinished"] and not jobs.loc[FAILED, "unfinished"]
    # the unfinished job has job 0's overrides: one group, counted apart from its finished job
    groups = sweeps.seed_groups(sweeps.load_jobs(sweep))
    concat_lstm = groups[(groups["merge"] == "concat") & (groups["cell"] == "lstm")]
    assert concat_lstm[["n", "failed", "unfinished"]].values.tolist() == [[1, 0, 1]]
    seed_rows = {row[0]: row for row in _tables(_section(md, "Mean over seeds"))[0][1:]}
    assert seed_rows["encoder.merge=concat encoder.cell=lstm"][2] == "0 (+1 unfinished)"


def _tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table of `md`, in order, as rows of stripped cells (header row included,
    the |---| separator left out)."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            if not line.startswith("|-"):
                tables[-1].append([cell.strip() for cell in line.strip("|").split(" | ")])
        previous = line
    return tables


def _job_rows(md: str) -> list[list[str]]:
    return _tables(md)[0][1:]  # the per-job table, without its header


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
    jobs = sweeps.load_jobs(sweep)
    assert jobs["job"].tolist() == EXPECTED_ORDER
    best, failed = jobs.iloc[0], jobs.iloc[-1]
    assert (best["merge"], best["cell"], best["ok"], best["val"]) == ("concat", "gru", True, 0.93)
    assert (failed["ok"], failed["error"], failed["merge"]) == (False, ERROR, "bogus")


def test_traceback_and_min_mode(sweep: Path) -> None:
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n"
    (sweep / str(FAILED) / "error.txt").write_text(traceback)
    for job in FINISHED:
        config = sweep / str(job) / "config.yaml"
        config.write_text(config.read_text().replace("monitor_mode: max", "monitor_mode: min"))
    jobs = sweeps.load_jobs(sweep)
    assert jobs["job"].tolist() == [3, 0, 2, 1, FAILED]
    assert jobs.iloc[-1]["error"] == "ValueError: boom"


def test_per_layer_lists_are_labelled_by_their_string(sweep: Path) -> None:
    config = sweep / "0" / "config.yaml"
    config.write_text(config.read_text().replace("merge: concat", "merge: [concat, sum]")
                      .replace("cell: lstm", "cell: [gru, lstm]"))
    job = sweeps.load_jobs(sweep).set_index("job").loc[0]
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


# --------------------------------------------------------------------------- mean over seeds

SEEDS = (1, 2, 3)
SEED_MERGES = ("ave", "mul", "sum", "concat")  # deliberately not in the pivot's row order
SEED_CELLS = ("gru", "lstm")
SEED_FAILED = {("mul", "gru", 2)}  # (merge, cell, seed) of the jobs that fail


def _seed_value(merge: str, cell: str, seed: int) -> tuple[float, float, float, float]:
    """Made-up (val, test, tokens/s, wall time) of one job, different for every job."""
    m, c = SEED_MERGES.index(merge), SEED_CELLS.index(cell)
    val = 0.70 + 0.03 * m + 0.011 * c + 0.007 * seed * (1 + c)
    test = val - 0.02 + 0.003 * seed
    rate = 10000.0 + 1500.0 * m - 700.0 * c + 123.0 * seed
    wall = 30.0 + 2.0 * m + seed * 0.35
    return val, test, rate, wall


def _make_seed_sweep(root: Path, monitor: str = "val/f1",
                     extra: dict[tuple[str, str], tuple[str, ...]] | None = None) -> dict:
    """A sweep over merge x cell x seed (`seed=` override last); returns
    {(merge, cell): {"jobs": [...], "failed": k, "val": [...], "test": [...], ...}}."""
    root.mkdir(parents=True)
    expected: dict = {}
    job = 0
    for merge in SEED_MERGES:
        for cell in SEED_CELLS:
            entry = expected.setdefault((merge, cell), {"jobs": [], "failed": 0, "val": [],
                                                        "test": [], "rate": [], "wall": []})
            for seed in SEEDS:
                folder = root / str(job)
                more = (extra or {}).get((merge, cell), ())
                _write_job(folder, merge, cell, (*more, f"seed={seed}"))
                if monitor != "val/f1":
                    config = folder / "config.yaml"
                    config.write_text(config.read_text().replace("monitor: val/f1",
                                                                 f"monitor: {monitor}"))
                entry["jobs"].append(job)
                if (merge, cell, seed) in SEED_FAILED:
                    (folder / "error.txt").write_text("RuntimeError: out of memory\n")
                    entry["failed"] += 1
                else:
                    val, test, rate, wall = _seed_value(merge, cell, seed)
                    _write_metrics(folder, val, test, rate, 1000, wall, monitor=monitor)
                    for name, value in zip(("val", "test", "rate", "wall"),
                                           (val, test, rate, wall), strict=True):
                        entry[name].append(value)
                job += 1
    return expected


def _section(md: str, title: str) -> str:
    """The text of `## title` up to the next `## ` heading."""
    start = md.index(f"## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start:] if end == -1 else md[start:end]


def _pm(values: list[float], spec: str, scale: float = 1.0) -> str:
    mean = format(statistics.mean(values) * scale, spec)
    if len(values) < 2:
        return mean
    return f"{mean} ± {format(statistics.stdev(values) * scale, spec)}"


@pytest.fixture
def seed_sweep(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "multirun" / "2026-11-24" / "09-00-00"
    return root, _make_seed_sweep(root)


def test_group_key_drops_only_seed() -> None:
    overrides = ["encoder.merge=sum", "+seed=3", "seed_offset=1", "++seed=4", "encoder.cell=gru"]
    assert group_key(overrides) == ("encoder.merge=sum", "seed_offset=1", "encoder.cell=gru")


def test_seed_groups_statistics(seed_sweep) -> None:
    root, expected = seed_sweep
    groups = sweeps.seed_groups(sweeps.load_jobs(root))
    assert len(groups) == len(SEED_MERGES) * len(SEED_CELLS)
    by_cell = {(g["merge"], g["cell"]): g for _, g in groups.iterrows()}
    assert set(by_cell) == set(expected)
    for key, want in expected.items():
        group = by_cell[key]
        assert group["group"] == (f"encoder.merge={key[0]}", f"encoder.cell={key[1]}")
        assert group["jobs"] == want["jobs"]
        assert (group["n"], group["failed"]) == (len(want["val"]), want["failed"])
        for name, values in (("val", want["val"]), ("test", want["test"]),
                             ("tokens", want["rate"])):
            assert group[f"{name}_mean"] == pytest.approx(statistics.mean(values))
            assert group[f"{name}_std"] == pytest.approx(statistics.stdev(values))
        assert group["wall_mean"] == pytest.approx(statistics.mean(want["wall"]))
    failed = by_cell[("mul", "gru")]
    assert (failed["n"], failed["failed"]) == (2, 1)
    means = groups["val_mean"].tolist()
    assert means == sorted(means, reverse=True)


def test_mean_over_seeds_section(seed_sweep) -> None:
    root, expected = seed_sweep
    assert summarize.main([str(root)]) == 0
    md = (root / "summary.md").read_text()
    assert len(_job_rows(md)) == len(SEED_MERGES) * len(SEED_CELLS) * len(SEEDS)
    section = _section(md, "Mean over seeds")
    (table,) = _tables(section)
    assert table[0] == ["overrides (seed aside)", "seeds", "failed", "val f1", "test f1",
                        "train tokens/s", "wall time (s)"]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert len(rows) == len(expected)
    for (merge, cell), want in expected.items():
        row = rows[f"encoder.merge={merge} encoder.cell={cell}"]
        assert row == [str(len(want["val"])), str(want["failed"]), _pm(want["val"], ".4f"),
                       _pm(want["test"], ".4f"), _pm(want["rate"], ",.0f"),
                       f"{statistics.mean(want['wall']):.1f}"]
    assert rows["encoder.merge=mul encoder.cell=gru"][:2] == ["2", "1"]
    assert "seed=" not in section


def test_pivot_order_and_cells(seed_sweep, capsys) -> None:
    root, expected = seed_sweep
    assert summarize.main([str(root)]) == 0
    md = (root / "summary.md").read_text()
    assert md.index("## Mean over seeds") < md.index("## Merge mode × cell")
    section = _section(md, "Merge mode × cell")
    scores, speeds = _tables(section)
    for table in (scores, speeds):
        assert table[0][1:] == ["lstm", "gru"]
        assert [row[0] for row in table[1:]] == ["concat", "sum", "mul", "ave"]
    for row_s, row_t in zip(scores[1:], speeds[1:], strict=True):
        for col, cell in enumerate(("lstm", "gru"), start=1):
            want = expected[(row_s[0], cell)]
            text = f"{_pm(want['val'], '.1f', 100)} / {_pm(want['test'], '.1f', 100)}"
            if want["failed"]:
                text += f" (n={len(want['val'])}, {want['failed']} failed)"
            assert row_s[col] == text
            assert row_t[col] == f"{statistics.mean(want['rate']) / 1000:.1f}k"
    assert "n=3 seeds per cell" in section and "(%)" in section
    printed = capsys.readouterr().out
    assert "## Mean over seeds" in printed and "## Merge mode × cell" in printed


def test_pivot_raw_scores_for_other_metrics(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    expected = _make_seed_sweep(root, monitor="val/loss")
    scores = _tables(_section(sweeps.markdown(sweeps.load_jobs(root), root),
                              "Merge mode × cell"))[0]
    want = expected[("concat", "lstm")]
    assert scores[1][:2] == ["concat", f"{_pm(want['val'], '.4f')} / {_pm(want['test'], '.4f')}"]


def test_pivot_skipped_when_another_override_varies(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    _make_seed_sweep(root, extra={("sum", "gru"): ("encoder.hidden_size=64",),
                                  ("ave", "lstm"): ("trainer.max_epochs=3",)})
    md = sweeps.markdown(sweeps.load_jobs(root), root)
    section = _section(md, "Merge mode × cell")
    assert _tables(section) == []
    lines = [line for line in section.splitlines()[1:] if line.strip()]
    assert len(lines) == 1 and "skipped" in lines[0]
    assert "`encoder.hidden_size`" in lines[0] and "`trainer.max_epochs`" in lines[0]
    groups = _tables(_section(md, "Mean over seeds"))[0][1:]
    assert "encoder.merge=sum encoder.cell=gru encoder.hidden_size=64" in [r[0] for r in groups]


def test_pivot_skipped_when_only_seed_varies(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed in SEEDS:
        _write_job(root / str(seed), "sum", "lstm", (f"seed={seed}",))
        _write_metrics(root / str(seed), *_seed_value("sum", "lstm", seed)[:3], 1000, 30.0)
    md = sweeps.markdown(sweeps.load_jobs(root), root)
    assert len(_tables(_section(md, "Mean over seeds"))[0]) == 2  # header + one group
    section = _section(md, "Merge mode × cell")
    assert _tables(section) == [] and "neither" in section


def test_single_seed_groups_and_failed_only_cells(sweep: Path) -> None:
    md = sweeps.markdown(sweeps.load_jobs(sweep), sweep)
    rows = {row[0]: row[1:] for row in _tables(_section(md, "Mean over seeds"))[0][1:]}
    merge, cell, val, test, rate, _, wall = FINISHED[0]
    assert rows[f"encoder.merge={merge} encoder.cell={cell}"] == [
        "1", "0", f"{val:.4f}", f"{test:.4f}", f"{rate:,.0f}", f"{wall:.1f}"]
    assert rows["encoder.merge=bogus encoder.cell=lstm"] == ["0", "1", "–", "–", "–", "–"]
    scores, speeds = _tables(_section(md, "Merge mode × cell"))
    assert [row[0] for row in scores[1:]] == ["concat", "sum", "bogus"]
    assert scores[1][1] == f"{val * 100:.1f} / {test * 100:.1f}"  # n=1: no ±
    assert scores[3][1:] == ["– (1 failed)", "–"]
    assert speeds[1][1] == f"{rate / 1000:.1f}k" and speeds[3][1:] == ["–", "–"]


def test_named_job_folders_of_multiruns_sharing_a_sweep_folder(tmp_path: Path) -> None:
    # two multiruns written into one folder with `hydra.sweep.subdir=seed${seed}_${...num}`
    for seed, val in ((1, 0.8), (2, 0.9)):
        job = tmp_path / f"seed{seed}_0"
        _write_job(job, "sum", "lstm", (f"seed={seed}",))
        _write_metrics(job, val, val - 0.1, 1000.0, 10, 5.0)
    (tmp_path / "notes").mkdir()  # not a job: no .hydra/overrides.yaml
    jobs = sweeps.load_jobs(tmp_path)
    assert sorted(jobs["val"]) == [0.8, 0.9]


# --------------------------------------------------------------------------- chart


def _drawn(fig) -> list[dict]:
    """What the chart's axes hold: per errorbar container its point, marker, colour and the
    lengths of its vertical and horizontal bars (None where it has none)."""
    (ax, *_legends) = fig.axes
    drawn = []
    for container in ax.containers:
        line, _caps, bars = container.lines
        (x, y), = line.get_xydata()
        spans = {"x": None, "y": None}
        for collection in bars:
            assert isinstance(collection, LineCollection)
            (start, end), = collection.get_segments()
            axis = "y" if start[0] == end[0] else "x"
            spans[axis] = abs(end[1] - start[1]) if axis == "y" else abs(end[0] - start[0])
        drawn.append({"x": x, "y": y, "marker": line.get_marker(), "colour": line.get_color(),
                      "xbar": spans["x"], "ybar": spans["y"]})
    return drawn


def test_chart_has_one_point_per_seed_group_with_std_bars(seed_sweep) -> None:
    root, expected = seed_sweep
    fig = sweeps.draw_chart(sweeps.load_jobs(root), root)
    drawn = _drawn(fig)
    assert len(drawn) == len(expected)  # 24 jobs, 8 groups: one point each
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert len(labels) == len(expected)
    markers, colours = {}, {}
    for (merge, cell), want in expected.items():
        x, y = statistics.mean(want["rate"]), statistics.mean(want["test"])
        (point,) = [d for d in drawn
                    if d["x"] == pytest.approx(x) and d["y"] == pytest.approx(y)]
        # a bar spans mean ± one sample std: twice the std long
        assert point["ybar"] == pytest.approx(2 * statistics.stdev(want["test"]))
        assert point["xbar"] == pytest.approx(2 * statistics.stdev(want["rate"]))
        markers.setdefault(merge, set()).add(point["marker"])
        colours.setdefault(cell, set()).add(point["colour"])
        n = len(want["val"])
        assert (f"{merge} {cell}" + ("" if n == len(SEEDS) else f" (n={n})")) in labels
    assert all(len(m) == 1 for m in markers.values()) and all(
        len(c) == 1 for c in colours.values())  # one style per merge mode, one per cell
    assert len(set().union(*markers.values())) == len(SEED_MERGES)
    assert len(set().union(*colours.values())) == len(SEED_CELLS)
    fig.clf()


def test_chart_single_seed_groups_have_no_bars_and_failed_ones_no_point(sweep) -> None:
    fig = sweeps.draw_chart(sweeps.load_jobs(sweep), sweep)
    drawn = _drawn(fig)
    assert sorted((d["x"], d["y"]) for d in drawn) == sorted(
        (rate, test) for _, _, _, test, rate, _, _ in FINISHED.values())
    assert all(d["xbar"] is None and d["ybar"] is None for d in drawn)
    assert "1 job not shown" in fig.axes[0].get_title()
    fig.clf()
