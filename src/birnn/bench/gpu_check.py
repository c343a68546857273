"""Helpers of `make gpu-check` (scripts/gpu_check.sh): the wheels it carries, the stand-in of
the GPU image for its dry run, and its summary.

The GPU machine is offline and bare: it has PyTorch, Lightning, torchmetrics and a few more
(`IMAGE_ROOTS`) but no Hydra, `datasets` or pydantic, and no package index. `wheels` (on a
normal machine, `make gpu-wheels`) downloads what the check needs beyond the image
(`NEEDED_ROOTS` and their dependencies, minus the image's) into wheels/py<X.Y>/, at the exact
versions installed here; `missing` (there) names the carried wheels the running Python still
lacks. This file runs as a plain script, standard library only, before birnn can be imported.

    python src/birnn/bench/gpu_check.py wheels wheels --python 3.12 --python 3.11
    python src/birnn/bench/gpu_check.py standin DIR        # the dry run's stand-in image
    python src/birnn/bench/gpu_check.py missing wheels/py3.12
    python src/birnn/bench/gpu_check.py summary --work DIR --out DIR [--dry]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import venv
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# what the GPU image holds (its description names these; they bring their own dependencies)
IMAGE_ROOTS = ("torch", "lightning", "torchmetrics", "numpy", "pandas", "pyarrow", "matplotlib",
               "rich", "onnx", "onnxruntime")
# what training, the data pipeline and `pytest -m gpu` import beyond the image (no wandb: the
# check trains with logger=csv)
NEEDED_ROOTS = ("hydra-core", "omegaconf", "datasets", "pydantic", "pytest")
PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17)) + (
    "manylinux2014_x86_64", "manylinux1_x86_64")
SUMMARY_FILES = ("summary.json", "summary.md")
# where the CPU figure for one CoNLL-2003 epoch is read, in this order
CPU_FIGURE_DOCS = ("docs/results.md", "README.md", "docs/performance.md")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------- dependency closures


def closure(roots: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """The installed distributions `roots` need, transitively (markers evaluated here)."""
    from packaging.requirements import Requirement  # installed wherever pip is

    found: dict[str, metadata.Distribution] = {}
    todo = [(name, frozenset()) for name in roots]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        name, extras = todo.pop()
        if (_key(name), extras) in done:
            continue
        done.add((_key(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional need this environment does not have
        found[_key(dist.metadata["Name"])] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in (extras or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return found


def carried() -> dict[str, str]:
    """name -> version of what the check needs that the image lacks, as installed here."""
    image = closure(IMAGE_ROOTS)
    return {name: dist.version for name, dist in sorted(closure(NEEDED_ROOTS).items())
            if name not in image}


def download_wheels(dest: Path, pythons: list[str]) -> None:
    """`pip download` the carried wheels for each Python version into dest/py<X.Y>/."""
    pins = [f"{name}=={version}" for name, version in carried().items()]
    for version in pythons:
        folder = dest / f"py{version}"
        folder.mkdir(parents=True, exist_ok=True)
        tag = version.replace(".", "")
        pip = [sys.executable, "-m", "pip"]
        download = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", version, "--implementation", "cp", "--abi", f"cp{tag}",
                    "--abi", "abi3", "--abi", "none", *(f"--platform={p}" for p in PLATFORMS),
                    "--platform=any", "-d", str(folder)]
        for pin in pins:  # one at a time: a pin with no wheel at all is built here instead
            if subprocess.run([*download, pin], capture_output=True).returncode != 0:
                # only an sdist (antlr4-python3-runtime 4.9.3): a pure-Python wheel built here
                subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(folder), pin],
                               check=True)
        impure = [w.name for w in folder.glob("*.whl") if not _compatible(w.name, tag)]
        if impure:
            raise SystemExit(f"{folder}: wheels for another Python or platform: {impure}")
        print(f"{folder}: {len(list(folder.glob('*.whl')))} wheels")


def _compatible(wheel: str, tag: str) -> bool:
    """Whether a wheel file's tags fit CPython `tag` (e.g. 312) on manylinux x86_64."""
    python, abi, platform = wheel.removesuffix(".whl").split("-")[-3:]
    fits_python = abi == "abi3" or any(p in (f"cp{tag}", f"py{tag}", "py3")
                                       for p in python.split("."))
    return fits_python and (platform == "any" or "x86_64" in platform)


# ---------------------------------------------------------------- the dry run's stand-in


def make_standin(folder: Path) -> Path:
    """A fresh venv holding only the image's packages (linked from this environment).

    Returns its python. The links sit in folder/site, which a .pth file adds to the venv; the
    venv's own setuptools goes, so the linked one (which the project's build needs) is used.
    """
    site = folder / "site"
    site.mkdir(parents=True, exist_ok=True)
    for dist in closure(IMAGE_ROOTS).values():
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {"..", "bin"}:
            link = site / top
            if not link.exists() and (base / top).exists():
                link.symlink_to(base / top)
    env = folder / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    python = env / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], check=True, capture_output=True, text=True)
    Path(purelib.stdout.strip(), "gpu-image-standin.pth").write_text(f"{site}\n")
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=False)
    return python


# ------------------------------------------------------------------ what is still missing


def _wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """A wheel's name, version and Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    fields = [line.split(": ", 1) for line in text.split("\n\n", 1)[0].splitlines()
              if ": " in line]
    get = {k: v for k, v in reversed(fields)}
    return get["Name"], get["Version"], [v for k, v in fields if k == "Requires-Dist"]


def missing(folder: Path) -> list[Path]:
    """The wheels in `folder` whose distribution this Python lacks, or has at a version that
    another carried wheel does not accept."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    wheels = {}
    needs: dict[str, list] = {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version, requires = _wheel_metadata(wheel)
        wheels[_key(name)] = wheel
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                needs.setdefault(_key(req.name), []).append(req.specifier)
    lacking = []
    for name, wheel in wheels.items():
        try:
            have = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            lacking.append(wheel)
            continue
        if not all(spec.contains(have, prereleases=True) for spec in needs.get(name, [])):
            lacking.append(wheel)
    return lacking


# ------------------------------------------------------------------------------- summary


def cpu_epoch_figure(root: Path = ROOT) -> dict | None:
    """The CPU training tokens/s of one CoNLL-2003 epoch that the docs report, with where.

    Read from the first of `CPU_FIGURE_DOCS` that has either a sentence saying a
    "CoNLL-2003 epoch ... trains at N tokens/s" or a Markdown table row naming `conll2003`
    with a "training tokens/s" column.
    """
    for doc in CPU_FIGURE_DOCS:
        path = root / doc
        if path.is_file():
            text = path.read_text()
            found = _figure_in_prose(text) or _figure_in_table(text)
            if found:
                line, tokens_per_s, context = found
                return {"tokens_per_s": tokens_per_s, "source": f"{doc}:{line}",
                        "context": context}
    return None


_PROSE = re.compile(r"CoNLL-2003 epoch\b[^.|]*?\btrains at ([\d,]+(?:\.\d+)?) tokens/s"
                    r"([^.:|]*)", re.IGNORECASE)


def _figure_in_prose(text: str) -> tuple[int, float, str] | None:
    match = _PROSE.search(text)
    if not match:
        return None
    line = text.count("\n", 0, match.start()) + 1
    return line, float(match[1].replace(",", "")), " ".join(match[0].split())


def _figure_in_table(text: str) -> tuple[int, float, str] | None:
    column = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        lowered = [c.lower() for c in cells]
        if "training tokens/s" in lowered:
            column = lowered.index("training tokens/s")
        elif column is not None and "conll2003" in cells[0] and column < len(cells):
            value = re.sub(r"[^\d.]", "", cells[column].split()[0] if cells[column] else "")
            if value:
                return number, float(value), cells[0]
    return None


def read_steps(work: Path) -> list[dict]:
    """The steps recorded so far (steps.tsv: name, exit status, seconds, note)."""
    path = work / "steps.tsv"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        name, status, seconds, *note = line.split("\t")
        steps.append({"step": name, "status": int(status), "ok": status == "0",
                      "seconds": int(seconds), "note": note[0] if note else ""})
    return steps


def _pytest_counts(log: Path) -> dict:
    if not log.is_file():
        return {}
    counts = {}
    for count, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed)",
                                  log.read_text()[-3000:]):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(count)
    return counts


def _train(work: Path) -> dict:
    path = work / "train" / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    return {"tokens_per_s": metrics.get("train_tokens_per_s"),
            "dev_f1": metrics.get("val", {}).get("f1"), "epochs": metrics.get("epochs"),
            "wall_time_s": metrics.get("wall_time_s"), "device": metrics.get("device")}


def _bench(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        return {}
    records = json.loads(path.read_text())
    rows = [r for r in records if r.get("kind") == "result"]
    auto = [r for r in rows if r.get("auto")]
    return {"configs": len({tuple(r[k] for k in ("cell", "merge", "layers", "hidden",
                                                 "precision", "lengths")) for r in rows}),
            "rows": len(rows), "device": records[0].get("device_names", {}),
            "best_auto_train_tok_s": max((r["train_tok_s"] for r in auto), default=None)}


def summary(work: Path, out: Path, dry: bool) -> dict:
    """Write summary.json and summary.md into `out` from what the steps left in `work`."""
    result = {"dry_run": dry, "python": sys.version.split()[0], "steps": read_steps(work),
              "pytest": _pytest_counts(out / "pytest.txt"), "benchmark": _bench(out),
              "train": _train(work), "cpu_reference": cpu_epoch_figure()}
    gpu, cpu = result["train"].get("tokens_per_s"), result["cpu_reference"]
    result["train"]["vs_cpu_reference"] = gpu / cpu["tokens_per_s"] if gpu and cpu else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "summary.md").write_text(summary_markdown(result))
    return result


def summary_markdown(result: dict) -> str:
    """The summary as a short Markdown page: one table of steps, then the figures."""
    lines = ["# GPU check" + (" (dry run: CUDA steps on CPU, tiny sizes)" if result["dry_run"]
                              else ""), "", "| step | result | seconds | note |",
             "|---|---|---:|---|"]
    for s in result["steps"]:
        verdict = "ok" if s["ok"] else f"failed (exit {s['status']})"
        lines.append(f"| {s['step']} | {verdict} | {s['seconds']} | {s['note']} |")
    lines.append("")
    if result["pytest"]:
        lines.append("pytest -m gpu: " + ", ".join(f"{n} {w}" for w, n in result["pytest"].items()))
    bench = result["benchmark"]
    if bench:
        lines.append(f"benchmark: {bench['configs']} configurations, {bench['rows']} rows "
                     "(results.md beside this file)")
    train, cpu = result["train"], result["cpu_reference"]
    if train.get("tokens_per_s"):
        lines.append(f"one CoNLL-2003 epoch on {train['device']}: "
                     f"{train['tokens_per_s']:,.0f} training tokens/s, dev F1 "
                     f"{100 * (train['dev_f1'] or 0):.2f}")
    if cpu:
        ratio = train.get("vs_cpu_reference")
        lines.append(f"CPU reference ({cpu['source']}: {cpu['context']}): "
                     f"{cpu['tokens_per_s']:,.0f} training tokens/s"
                     + (f"; this run / CPU reference {ratio:.2f}x" if ratio else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheels", help="download the carried wheels")
    w.add_argument("dest", type=Path)
    w.add_argument("--python", action="append", required=True, help="e.g. 3.12 (repeatable)")
    s = sub.add_parser("standin", help="make the dry run's stand-in image; print its python")
    s.add_argument("folder", type=Path)
    m = sub.add_parser("missing", help="print the wheels this Python still needs")
    m.add_argument("folder", type=Path)
    r = sub.add_parser("summary", help="write summary.{json,md}")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--dry", action="store_true")
    args = p.parse_args(argv)
    if args.command == "wheels":
        download_wheels(args.dest, args.python)
    elif args.command == "standin":
        print(make_standin(args.folder))
    elif args.command == "missing":
        if not args.folder.is_dir():
            print(f"{args.folder}: no such folder (fill it with `make gpu-wheels`)",
                  file=sys.stderr)
            return 2
        print("\n".join(str(w) for w in missing(args.folder)))
    else:
        summary(args.work, args.out, args.dry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
