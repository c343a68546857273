"""Every command in README.md and docs/*.md is run, or checked, by this file.

The convention of those pages: a ```bash block holds commands, one a line (a trailing `\\`
continues one; `#` starts a comment); a ```python block is a script, run as it stands; a
```py block is a fragment (it needs objects from elsewhere) and is shown, not run; ```text,
```yaml and ```json blocks are output or file contents. A block without one of these tags
fails here, so no command hides in an untagged block.

How each command is treated:

- `make TARGET`: TARGET must be a target of the Makefile, which runs it.
- `python train.py ...`: composed and resolved with Hydra's `--cfg job`, then checked by
  `birnn.config.validate` as train.py checks it; of a multirun (`-m`), enough jobs to
  compose every swept value once. The
  README's first training command also really runs, shrunk by `SHRINK`, and its run folder
  stands in for `outputs/DATE/TIME` in the other commands. Commands on the real data in
  `../shared/data` really run, shrunk, under `slow` (a multirun: its first job).
- `python evaluate.py ...`, `python predict.py ...`, `python export.py ...`: run on that run
  folder (an exported model there is made first where a command needs it).
- `python scripts/benchmark.py ...`: its arguments must parse; `ELSEWHERE` names the test
  that runs the script.
- anything else must be in `ELSEWHERE`, which names the tests that run it, or on a page of
  `PAGES_ELSEWHERE`, whose own test runs its commands (and its python blocks); each named
  test must exist.

The commands run in this process (`runpy`, as `python SCRIPT` would), so the libraries are
imported once. Placeholders in the pages: `outputs/DATE/TIME` (a run folder), `PATH`, `NAME`,
`CONFIG`, `P`, `ENTITY`, `SWEEP_ID` (left as they are where only composition is checked),
`sentences.txt` (a file of sentences).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHARED_DATA
from omegaconf import OmegaConf

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = {"py", "text", "yaml", "json"}
RUN_DIR = "outputs/DATE/TIME"
SENTENCES = "EU rejects German call to boycott British lamb .\nPeter Blackburn\n"

# Documented in docs/configuration.md ("Quick checks").
SHRINK = (
    "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2", "logger=none", "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
)  # fmt: skip

# Commands that other tests run (or that cannot run here), with the tests that run them.
ELSEWHERE = {
    "python scripts/benchmark.py --quick --ragged --out docs/benchmarks/xeon":
        ["tests/test_benchmark.py::test_files_and_stdout"],
    "python scripts/benchmark.py --predict ckpt=outputs/DATE/TIME --predict-batch 16,32,64,256":
        ["tests/test_benchmark.py::test_predict_mode_times_each_backend_on_the_whole_input"],
    "python scripts/benchmark.py --quick --cells lstm --merges concat --precisions fp32 "
    "--profile": ["tests/test_benchmark.py::test_profile_records"],
    "python scripts/benchmark.py --quick --ragged --cells gru,mixed --precisions fp32 --seq 14 "
    "--hidden 200 --input 208": ["tests/test_benchmark.py::test_impls_and_ratios"],
    "python scripts/benchmark.py --quick --ragged --cells lstm,mixed --precisions fp32 --seq 14 "
    "--hidden 200 --input 208": ["tests/test_benchmark.py::test_impls_and_ratios"],
    "python scripts/benchmark.py --quick --peer keras --out docs/benchmarks/xeon-keras":
        ["tests/test_benchmark.py::test_files_and_stdout",
         "tests/test_benchmark.py::test_keras_ratios_pair_each_stack_with_its_keras_row"],
    "python scripts/summarize_sweep.py multirun/DATE/TIME":
        ["tests/test_summarize_sweep.py::test_script_runs_as_a_command",
         "tests/test_logging_sweeps.py::test_grid_sweep_and_summary"],
    "python scripts/overhead.py experiment=conll2003 data.dir=../shared/data/conll2003 --profile":
        ["tests/test_overhead.py::test_command_line_profile"],
    # the same command as docs/deployment.md's, which its page test runs
    # (as the pages' commands are kept: words re-joined by shlex)
    "echo 'EU rejects German call' '|' python predict.py ckpt=outputs/DATE/TIME input=- "
    "format=jsonl":
        ["tests/test_export.py::test_deployment_doc_commands_run"],
    "python -m birnn.keras MODEL.keras OUTDIR":
        ["tests/test_keras.py::test_the_run_folder_is_a_checkpoint_predict_and_lightning_read"],
    # W&B servers are unreachable here: the sweep file's grid is composed instead
    "wandb sweep sweeps/wandb.yaml":
        ["tests/test_docs_commands.py::test_wandb_sweep_file_composes"],
    "wandb agent ENTITY/birnn/SWEEP_ID":
        ["tests/test_docs_commands.py::test_wandb_sweep_file_composes"],
}  # fmt: skip


# Pages whose own test runs their commands as the page has them; their bash and python
# blocks are left to it.
PAGES_ELSEWHERE = {
    "docs/deployment.md": "tests/test_export.py::test_deployment_doc_commands_run",
    "docs/keras.md": "tests/test_keras.py::test_the_docs_worked_example_runs_as_written",
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page."""
    out, lang, start, body = [], None, 0, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if lang is None and line.startswith("```"):
            lang, start, body = line[3:].strip(), n, []
        elif lang is not None and line.startswith("```"):
            out.append(Block(path.relative_to(ROOT).as_posix(), start, lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def commands(block: Block) -> list[Command]:
    """One command per line of a bash block, continuation lines joined, comments dropped."""
    out, pending, first = [], "", 0
    for n, line in enumerate(block.text.splitlines(), block.line + 1):
        first = first or n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = shlex.split(pending + line, comments=True)
        if words:
            out.append(Command(block.page, first, shlex.join(words)))
        pending, first = "", 0
    return out


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
ALL_COMMANDS = [c for b in ALL_BLOCKS if b.lang == "bash" for c in commands(b)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python" and b.page not in PAGES_ELSEWHERE]
FIRST_TRAIN = next(c for c in ALL_COMMANDS if c.page == "README.md"
                   and c.argv[:2] == ["python", "train.py"] and "-m" not in c.argv)


# ---------------------------------------------------------------- running an entry point


def run_script(script: str, args: list[str], stdin: str | None = None) -> str:
    """`python SCRIPT ARGS` in this process; returns its stdout, fails on a non-zero exit."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    argv, stdin_, cwd = sys.argv, sys.stdin, os.getcwd()
    out = io.StringIO()
    sys.argv = [script, *args]
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    os.chdir(ROOT)  # the pages' relative paths start at the repository root
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), f"`{script} {shlex.join(args)}` exited with {e.code}"
    finally:
        sys.argv, sys.stdin = argv, stdin_
        os.chdir(cwd)
        GlobalHydra.instance().clear()  # so that later compose() calls start clean
        HydraConfig.instance().cfg = None
    return out.getvalue()


def without_keys(args: list[str], extra: tuple[str, ...]) -> list[str]:
    """`args` minus the overrides whose keys `extra` sets again, then `extra`."""
    key = lambda a: a.split("=", 1)[0].lstrip("+~")  # noqa: E731
    again = {key(a) for a in extra}
    return [a for a in args if key(a) not in again] + list(extra)


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """Jobs of `python train.py -m ARGS` that take every swept value at least once (values do
    not interact in composition), parsed as Hydra's basic sweeper parses them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lists = []
    for o in OverridesParser.create().parse_overrides([a for a in args if a != "-m"]):
        key = o.get_key_element()
        if key.startswith("hydra.sweep."):
            continue  # where the jobs' folders go: no part of a job's config
        if o.is_discrete_sweep():
            lists.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            lists.append([f"{key}={o.get_value_element_as_str()}"])
    n = max(map(len, lists), default=1)
    return [[values[i % len(values)] for values in lists] for i in range(n)]


@functools.cache
def _composed(args: tuple[str, ...]) -> str:
    extra = ("--resolve",) if "--cfg" in args else ("--cfg", "job", "--resolve")
    return run_script("train.py", [*args, *extra])


def compose_check(args: list[str]) -> dict:
    """`python train.py ARGS --cfg job --resolve`: the composed job config, as a dict (each
    distinct command once: several pages show the same one), checked by the schema that
    train.py checks it with before any data is read."""
    from birnn.config import validate
    from birnn.errors import ConfigError
    from birnn.hardware import cpu_supports_bf16

    printed = _composed(tuple(args))
    cfg = yaml.safe_load(printed)
    assert isinstance(cfg, dict) and "encoder" in cfg, printed[-2000:]
    # the run folder is Hydra's runtime value, which `--cfg` leaves unset
    cfg["paths"]["output_dir"] = cfg["paths"]["output_dir"] or "outputs/DATE/TIME"
    trainer = cfg["trainer"]
    if ("bf16" in str(trainer.get("precision")) and trainer.get("accelerator") == "cpu"
            and not cpu_supports_bf16()):
        # as docs/scaling-and-resuming.md says: refused on a CPU without bf16 kernels
        with pytest.raises(ConfigError, match=r"^trainer\.precision: .*bfloat16"):
            validate(OmegaConf.create(cfg))
    else:
        validate(OmegaConf.create(cfg))
    return cfg


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, flags=re.M))


def has_test(node: str) -> bool:
    path, _, name = node.partition("::")
    file = ROOT / path
    return file.exists() and re.search(rf"^def {name}\(", file.read_text(), re.M) is not None


def uses_real_data(argv: list[str]) -> bool:
    return any("../shared/data" in a for a in argv)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The README's first training command, run shrunk; its folder plays outputs/DATE/TIME."""
    tmp = tmp_path_factory.mktemp("docs")
    run = tmp / "run"
    run_script("train.py", without_keys(FIRST_TRAIN.argv[2:], (*SHRINK, f"hydra.run.dir={run}")))
    (tmp / "sentences.txt").write_text(SENTENCES)
    return tmp


def substitute(argv: list[str], tmp: Path) -> list[str]:
    run = str(tmp / "run")
    return [a.replace(RUN_DIR, run).replace("sentences.txt", str(tmp / "sentences.txt"))
            for a in argv]


# ------------------------------------------------------------------------------- tests


def test_pages_have_commands_and_tagged_blocks():
    assert FIRST_TRAIN and len(ALL_COMMANDS) > 20
    untagged = [f"{b.page}:{b.line}" for b in ALL_BLOCKS
                if b.lang not in {"bash", "python", *NOT_RUN}]
    assert not untagged, f"fenced blocks need a tag (bash, python, text, ...): {untagged}"


def test_elsewhere_names_existing_tests_and_documented_commands():
    documented = {c.text for c in ALL_COMMANDS}
    for page, node in PAGES_ELSEWHERE.items():
        assert (ROOT / page).exists() and has_test(node), f"{page}: no page or no test {node}"
    for command, nodes in ELSEWHERE.items():
        assert command in documented, f"no page has `{command}` any more: drop it here"
        missing = [n for n in nodes if not has_test(n)]
        assert not missing, f"`{command}`: no such tests {missing}"


def test_first_training_command_leaves_a_run_folder(workdir):
    run = workdir / "run"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test" in metrics and "val" in metrics


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_command(command: Command, request):
    argv = command.argv
    if command.page in PAGES_ELSEWHERE:
        assert has_test(PAGES_ELSEWHERE[command.page])
    elif argv[0] == "make":
        assert argv[1] in makefile_targets(), f"{command}: no such Makefile target"
    elif command.text in ELSEWHERE:
        if argv[:2] == ["python", "scripts/benchmark.py"]:
            from birnn.bench.cli import parse_args

            parse_args(argv[2:])  # argparse exits 2 on an unknown option
    elif argv[:2] == ["python", "train.py"]:
        jobs = sweep_jobs(argv[2:]) if "-m" in argv else [argv[2:]]
        for job in jobs:
            compose_check(job)
    elif argv[:2] == ["python", "evaluate.py"]:
        tmp = request.getfixturevalue("workdir")
        out = tmp / f"evaluate{command.line}"
        shrink = ("+trainer.limit_test_batches=2", "trainer.enable_progress_bar=false")
        run_script("evaluate.py", without_keys(substitute(argv[2:], tmp),
                                               (*shrink, f"hydra.run.dir={out}")))
        assert "test" in json.loads((out / "metrics.json").read_text())
    elif argv[:2] == ["python", "export.py"]:
        tmp = request.getfixturevalue("workdir")
        run_script("export.py", substitute(argv[2:], tmp))
        assert (tmp / "run" / "export" / "model.onnx").is_file()
    elif argv[:2] == ["python", "predict.py"]:
        tmp = request.getfixturevalue("workdir")
        if f"{RUN_DIR}/export/" in command.text and not (tmp / "run" / "export").is_dir():
            run_script("export.py", [f"ckpt={tmp / 'run'}"])  # the page's export command
        printed = run_script("predict.py", substitute(argv[2:], tmp))
        tokens = [line.split()[0] for line in printed.splitlines() if line.strip()]
        assert tokens == SENTENCES.split(), printed
    else:
        pytest.fail(f"{command}: nothing runs this command; run it here or add it to ELSEWHERE")


def test_wandb_sweep_file_composes():
    """Each point of the W&B grid is a valid `python train.py` override set."""
    sweep = yaml.safe_load((ROOT / "sweeps" / "wandb.yaml").read_text())
    assert sweep["program"] == "train.py" and sweep["method"] == "grid"
    params = sweep["parameters"]
    jobs = sweep_jobs([f"{key}={','.join(map(str, p['values']))}" for key, p in params.items()])
    assert len(jobs) == max(len(p["values"]) for p in params.values())
    for job in jobs:
        compose_check(job)
    metric = sweep["metric"]["name"].removeprefix("best/")
    assert metric == compose_check([])["monitor"], "the sweep optimises another score"


def test_links_resolve():
    """Every relative link and image of the pages names a file or folder of the repository."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: f"{b.page}:{b.line}")
def test_python_block(block: Block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever the script writes stays out of the repository
    exec(compile(block.text, f"{block.page}:{block.line}", "exec"), {"__name__": "__docs__"})


REAL_DATA = [c for c in ALL_COMMANDS if c.argv[:2] == ["python", "train.py"]
             and uses_real_data(c.argv) and "--cfg" not in c.argv]


@pytest.mark.slow
@pytest.mark.parametrize("command", REAL_DATA, ids=str)
def test_real_data_command_trains(command: Command, tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no {SHARED_DATA}")
    argv = command.argv
    job = sweep_jobs(argv[2:])[0] if "-m" in argv else argv[2:]
    run_script("train.py", without_keys(job, (*SHRINK, f"hydra.run.dir={tmp_path}")))
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]
