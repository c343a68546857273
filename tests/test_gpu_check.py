"""`make gpu-check`'s helpers (birnn.bench.gpu_check), and its dry run end to end (slow).

The dry run needs wheels/py<X.Y>/ for this Python (`make gpu-wheels`, which uses PyPI): it is
skipped without them, so the suite never needs the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from birnn.bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]
LOCAL_WHEELS = ROOT / "wheels" / f"py{sys.version_info[0]}.{sys.version_info[1]}"
MiB = 2**20


def test_cpu_figure_from_a_sentence_or_else_a_table(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text(
        "| experiment | dev | training tokens/s |\n|---|---:|---:|\n"
        "| `sst2` | 85.40 | 1,425 |\n| `conll2003` (span F1) | 91.15 | 10,541 |\n")
    found = gpu_check.cpu_epoch_figure(tmp_path)
    assert found["tokens_per_s"] == 10541 and found["source"] == "README.md:4"
    (docs / "results.md").write_text(
        "# Results\n\nAlone with both cores, a CoNLL-2003 epoch (203,621 training\n"
        "tokens) trains at 13,767 tokens/s on the AMD EPYC: about 15 s.\n")
    found = gpu_check.cpu_epoch_figure(tmp_path)  # docs/results.md comes first
    assert found["tokens_per_s"] == 13767 and found["source"] == "docs/results.md:3"
    assert "AMD EPYC" in found["context"]
    (docs / "results.md").write_text("no figure here\n")
    assert gpu_check.cpu_epoch_figure(tmp_path)["source"] == "README.md:4"


def test_the_docs_hold_the_cpu_figure_gpu_check_reads():
    found = gpu_check.cpu_epoch_figure()
    assert found is not None, f"none of {gpu_check.CPU_FIGURE_DOCS} states it"
    assert found["tokens_per_s"] > 0


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    text = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                    *(f"Requires-Dist: {r}\n" for r in requires), "\nA description.\n"])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", text)
    return path


def test_missing_names_absent_and_unacceptable_distributions(tmp_path):
    pytest_version = metadata.version("pytest")
    absent = _wheel(tmp_path, "birnn-no-such-dist", "1.0")
    present = _wheel(tmp_path, "pytest", pytest_version)
    assert gpu_check.missing(tmp_path) == [absent]  # the installed pytest will do
    _wheel(tmp_path, "needs-newer", "1.0", ("pytest>9999", "other; extra == 'dev'"))
    lacking = gpu_check.missing(tmp_path)
    assert present in lacking and absent in lacking  # another wheel refuses this pytest


def test_carried_wheels_leave_out_what_the_image_holds():
    carried = gpu_check.carried()
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "datasets",
            "pydantic-core"} <= set(carried)
    assert not {"torch", "lightning", "torchmetrics", "numpy", "pandas", "pyarrow"} & set(carried)
    assert "wandb" not in carried  # the check trains with logger=csv


def test_summary_keeps_each_step_and_its_failure(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "steps.tsv").write_text("install\t0\t12\t\nbenchmark\t124\t240\tstopped after 240 s\n")
    result = gpu_check.summary(work, out, dry=False)
    assert [(s["step"], s["ok"], s["seconds"]) for s in result["steps"]] == [
        ("install", True, 12), ("benchmark", False, 240)]
    md = (out / "summary.md").read_text()
    assert "| benchmark | failed (exit 124) | 240 | stopped after 240 s |" in md
    assert json.loads((out / "summary.json").read_text())["steps"][1]["status"] == 124


@pytest.mark.slow
@pytest.mark.skipif(not LOCAL_WHEELS.is_dir(), reason=f"no {LOCAL_WHEELS} (make gpu-wheels)")
@pytest.mark.skipif(not (ROOT / "gpu-data" / "conll2003").is_dir(),
                    reason="no gpu-data/conll2003 (make gpu-wheels)")
def test_dry_run_installs_offline_and_runs_every_step(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out)}
    proc = subprocess.run(["make", "-s", "gpu-check-dry"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert 0 < len(files) <= 8 and all(p.stat().st_size < 16 * MiB for p in files), files
    result = json.loads((out / "summary.json").read_text())
    assert result["dry_run"] is True
    steps = {s["step"]: s for s in result["steps"]}
    assert list(steps) == ["install", "pytest-gpu", "benchmark", "train-conll2003"]
    assert all(s["ok"] for s in steps.values()), steps
    for name in steps:  # the elapsed time of each step is printed as it ends
        assert f"{name}: exit 0 after" in proc.stdout
    assert result["pytest"].get("skipped", 0) > 0 and not result["pytest"].get("failed")
    assert result["benchmark"]["rows"] > 0 and (out / "results.png").stat().st_size > 0
    assert result["train"]["tokens_per_s"] > 0 and result["train"]["device"] == "cpu"
    assert result["cpu_reference"]["tokens_per_s"] > 0
