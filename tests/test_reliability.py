"""Crash safety of training runs: resume after a stop or a kill, atomic checkpoint files, the
stop on a non-finite loss, the SIGTERM checkpoint, and DDP on two CPU processes."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, make_config
from hydra.utils import instantiate

from birnn.callbacks import AtomicCheckpointIO
from birnn.cli.app import user_errors_exit
from birnn.cli.train import EXIT_SIGTERM, train
from birnn.data import BucketBatchSampler
from birnn.models import TokenTagger

# a tiny model that learns (val F1 0.2 -> 0.5 over three epochs on the sample), so the
# monitored score improves every epoch and scores are not trivially zero
TINY = ("encoder.hidden_size=16", "model.embedding_dim=16", "encoder.num_layers=1",
        "model.optimizer.lr=0.03")
DETERMINISTIC = (*TINY, "trainer.deterministic=true")
# what conftest.make_config adds, for subprocesses that must compose the same config
TEST_OVERRIDES = ("logger=none", "callbacks.progress_bar=null",
                  "trainer.enable_progress_bar=false")


@pytest.fixture(autouse=True)
def _restore_determinism():
    """`trainer.deterministic=true` switches torch to deterministic algorithms process-wide."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Run A: three uninterrupted deterministic epochs."""
    before = torch.are_deterministic_algorithms_enabled()
    out = tmp_path_factory.mktemp("reference")
    metrics = train(make_config(out, *DETERMINISTIC, "trainer.max_epochs=3", "logger=csv"))
    torch.use_deterministic_algorithms(before)
    metrics["csv"] = out / "csv" / "metrics.csv"
    assert metrics["epochs"] == 3 and metrics["val"]["f1"] > 0.3
    return metrics


def subprocess_env(home: Path, threads: int | None = None) -> dict:
    """The environment of a training subprocess: offline, HOME in `home`, `threads` intra-op
    threads (default: OMP_NUM_THREADS, else 1)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    threads = threads or os.environ.get("OMP_NUM_THREADS", "1")
    env.update(HOME=str(home), OMP_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", BIRNN_ROOT=str(ROOT),
               PYTHONUNBUFFERED="1")
    return env


def start_training(tmp_path: Path, run: Path, *overrides: str,
                   threads: int | None = None) -> subprocess.Popen:
    """`python train.py OVERRIDES hydra.run.dir=RUN` in the background, output in tmp_path."""
    output = (tmp_path / "output.txt").open("w")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *TEST_OVERRIDES, *overrides,
         f"hydra.run.dir={run}"],
        cwd=tmp_path, env=subprocess_env(tmp_path, threads), stdout=output,
        stderr=subprocess.STDOUT, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training exited early with status {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for training"
        time.sleep(0.05)


@pytest.fixture
def background():
    """Processes started by a test; killed at its end if still running."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- resume


def validation_rows(path: Path) -> list[tuple[str, str]]:
    """(epoch, val/f1) of each validation row of a CSV logger's metrics.csv."""
    with path.open(newline="") as f:
        return [(r["epoch"], r["val/f1"]) for r in csv.DictReader(f) if r.get("val/f1")]


def test_stop_and_resume_gives_the_same_scores(tmp_path, reference):
    run = tmp_path / "B"
    train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=2", "logger=csv"))
    last = load(run / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 188)  # 94 steps per epoch
    stopped = validation_rows(run / "csv" / "metrics.csv")  # epochs 0, 1, then its report
    resumed = train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=3", "resume=true",
                                "logger=csv"))
    # the resumed run's CSV log keeps what the stopped run wrote, then continues as the
    # uninterrupted run did: epoch 2 and the best model's scores
    expected = validation_rows(reference["csv"])
    assert [e for e, _ in stopped] == ["0", "1", "2"] and stopped[:2] == expected[:2]
    assert validation_rows(run / "csv" / "metrics.csv") == stopped + expected[2:]
    assert resumed["epochs"] == 3
    assert resumed["val"] == reference["val"]
    assert resumed["test"] == reference["test"]
    assert json.loads((run / "metrics.json").read_text())["test"] == reference["test"]
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 3 * 94


def test_last_checkpoint_is_the_last_epoch_even_without_improvement(cfg_factory, tmp_path):
    # a learning rate too small to change any prediction: val/f1 is the same every epoch
    train(cfg_factory(*TINY, "model.optimizer.lr=1e-9", "trainer.max_epochs=2",
                      "+trainer.limit_train_batches=10"))
    last = load(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 20)


def test_sigkill_then_resume(tmp_path, reference, background):
    """Kill -9 right after the first last.ckpt appears (end of epoch 0), then resume."""
    run = tmp_path / "B"
    last = run / "checkpoints" / "last.ckpt"
    # the killed epoch runs with this process's thread count, as the reference's did: a
    # matmul's sums depend on how many threads share it
    proc = start_training(tmp_path, run, *DETERMINISTIC, "trainer.max_epochs=3",
                          threads=torch.get_num_threads())
    background.append(proc)
    wait_for(last.is_file, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    killed_at = load(last)
    assert killed_at["global_step"] > 0

    resumed = train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=3", "resume=true"))
    assert resumed["epochs"] == 3
    # the kill loses only the unfinished epoch, and the RNG states restored from the
    # checkpoint replay it exactly
    for split in ("val", "test"):
        for key in ("f1", "precision", "recall", "loss"):
            assert resumed[split][key] == pytest.approx(reference[split][key], abs=1e-3), \
                (split, key)


# --------------------------------------------------------------------------- atomic saves

SAVER = """
import os, sys, time
import torch
from birnn.callbacks import AtomicCheckpointIO

target, size = sys.argv[1], int(sys.argv[2])
weights = torch.frombuffer(bytearray(bytes(range(256)) * (size // 256)), dtype=torch.uint8)
io = AtomicCheckpointIO()
started = time.perf_counter()
io.save_checkpoint({"weights": weights, "round": -1, "save": 0}, target + ".probe")
os.remove(target + ".probe")
print("ready", time.perf_counter() - started, flush=True)
for line in sys.stdin:  # one line per round: fork a child that saves until it is killed
    pid = os.fork()
    if pid == 0:
        try:
            save = 0
            while True:
                save += 1
                io.save_checkpoint({"weights": weights, "round": int(line), "save": save},
                                   target)
        finally:
            os._exit(1)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("reaped", os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
"""


def test_checkpoint_survives_sigkill_mid_write(tmp_path, background):
    """A process saving a 50 MB checkpoint over and over is killed 10 times at random
    moments: the file is missing (nothing saved yet) or complete, never partial."""
    size = 50 * 2**20
    expected = torch.frombuffer(bytearray(bytes(range(256)) * (size // 256)),
                                dtype=torch.uint8)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    target = folder / "last.ckpt"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    # a fork server: importing torch and lightning once, not once per kill
    proc = subprocess.Popen([sys.executable, str(script), str(target), str(size)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=subprocess_env(tmp_path))
    background.append(proc)
    word, seconds = proc.stdout.readline().split()
    assert word == "ready"
    save_time = float(seconds)
    rng = random.Random(20261123)
    interrupted, completed_rounds = 0, 0
    for round_ in range(10):
        proc.stdin.write(f"{round_}\n")
        proc.stdin.flush()
        pid = int(proc.stdout.readline())
        if round_ >= 5 and not target.exists():  # on a slow machine: one save must land
            deadline = time.monotonic() + 120
            while not target.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.2, 2.5) * save_time)
        os.kill(pid, signal.SIGKILL)
        assert proc.stdout.readline().split() == ["reaped", str(int(signal.SIGKILL))]

        leftovers = [p for p in folder.iterdir() if p != target]
        # the only other files are the hidden temporaries of interrupted writes
        assert all(p.name.startswith(".last.ckpt.") and p.name.endswith(".tmp")
                   for p in leftovers), leftovers
        interrupted += len(leftovers)
        for p in leftovers:  # 50 MB each; AtomicCheckpointIO leaves them behind
            p.unlink()
        if target.exists():
            saved = load(target)  # raises on a truncated file
            assert torch.equal(saved["weights"], expected)
            assert 0 <= saved["round"] <= round_ and saved["save"] >= 1
            completed_rounds += saved["round"] == round_
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert interrupted >= 1, "no kill landed during a write; the test proved nothing"
    assert target.exists() and completed_rounds >= 1


def test_atomic_checkpoint_keeps_the_usual_file_mode(tmp_path):
    plain, atomic = tmp_path / "plain.ckpt", tmp_path / "atomic.ckpt"
    torch.save({"x": torch.ones(2)}, plain)
    AtomicCheckpointIO().save_checkpoint({"x": torch.ones(2)}, atomic)
    assert oct(atomic.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777)


# --------------------------------------------------------------------------- NaN loss

NAN_MODEL = """
from birnn.models import TokenTagger


class NaNAtStep(TokenTagger):
    \"\"\"A tagger whose training loss turns NaN from optimiser step `nan_step` on.\"\"\"

    def __init__(self, *args, nan_step: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_step = nan_step

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step >= self.nan_step else loss
"""


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(cfg_factory, tmp_path,
                                                              monkeypatch, capsys):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "nan_model.py").write_text(NAN_MODEL)
    monkeypatch.syspath_prepend(str(helpers))
    # 20 steps per epoch: last.ckpt is written after epoch 0 (step 20), NaN at step 30
    cfg = cfg_factory(*TINY, "model._target_=nan_model.NaNAtStep", "+model.nan_step=30",
                      "trainer.max_epochs=3", "+trainer.limit_train_batches=20")
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(train)(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: training loss is nan at step 30 (epoch 1)" in err
    assert "Traceback" not in err
    last = load(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (0, 20)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (tmp_path / "metrics.json").exists()


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path, background):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = start_training(tmp_path, run, *TINY, "trainer.max_epochs=50")
    background.append(proc)
    wait_for(last.is_file, proc)  # epoch 0 is done: training is under way
    time.sleep(0.5)  # into epoch 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_SIGTERM == 143
    output = (tmp_path / "output.txt").read_text()
    assert "SIGTERM: saved" in output and "resume=true" in output
    assert "Traceback" not in output
    stopped = load(last)
    assert stopped["global_step"] >= 94 and stopped["epoch"] >= 1  # after the epoch-0 save

    # finish the interrupted epoch and train one more (the signal may have come at an epoch
    # end, during its validation: then the checkpoint is that epoch's end)
    epochs = stopped["epoch"] + 2
    resumed = train(make_config(run, *TINY, f"trainer.max_epochs={epochs}", "resume=true"))
    assert resumed["epochs"] == epochs
    assert load(last)["global_step"] > stopped["global_step"]
    assert json.loads((run / "metrics.json").read_text())["val"]["f1"] > 0


SIGTERM_CALLBACK = """
import os
import signal

import lightning as L


class SigtermAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermInValidation(L.Callback):
    # SIGTERM after the first validation batch at the end of `epoch`: Lightning stops after
    # that batch, before the epoch's validation is complete

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if (not trainer.sanity_checking and trainer.current_epoch == self.epoch
                and batch_idx == 0):
            os.kill(os.getpid(), signal.SIGTERM)
"""


def test_sigterm_mid_epoch_resume_matches_an_uninterrupted_run(tmp_path, reference,
                                                               monkeypatch):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "sigterm_callback.py").write_text(SIGTERM_CALLBACK)
    monkeypatch.syspath_prepend(str(helpers))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:  # step 130: 36 batches into epoch 1
        train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=3",
                          "+callbacks.sigterm._target_=sigterm_callback.SigtermAtStep",
                          "+callbacks.sigterm.step=130"))
    assert exit_info.value.code == EXIT_SIGTERM
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 130
    resumed = train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=3", "resume=true"))
    assert resumed["val"] == reference["val"]
    assert resumed["test"] == reference["test"]


def test_sigterm_during_validation_resume_matches_an_uninterrupted_run(tmp_path, reference,
                                                                      monkeypatch):
    """Stopped in the middle of epoch 1's validation, after all its training batches: the
    resumed run validates epoch 1 again and ends as the uninterrupted run does."""
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "sigterm_callback.py").write_text(SIGTERM_CALLBACK)
    monkeypatch.syspath_prepend(str(helpers))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=3",
                          "+callbacks.sigterm._target_=sigterm_callback.SigtermInValidation",
                          "+callbacks.sigterm.epoch=1"))
    assert exit_info.value.code == EXIT_SIGTERM
    resumed = train(make_config(run, *DETERMINISTIC, "trainer.max_epochs=3", "resume=true"))
    assert resumed["epochs"] == 3
    assert resumed["val"] == reference["val"]
    assert resumed["test"] == reference["test"]


# --------------------------------------------------------------------------- DDP


def test_bucket_sampler_shards_each_sample_once_per_epoch():
    lengths = [random.Random(i).randint(1, 40) for i in range(1000)]
    orders = []
    for batch_size, epoch in ((16, 0), (16, 1), (7, 3), (50, 2)):
        whole = BucketBatchSampler(lengths, batch_size, shuffle=True, pool_batches=5, seed=3)
        whole.set_epoch(epoch)
        batches = list(whole)
        orders.append(batches)
        shards = []
        for rank in (0, 1):
            sampler = BucketBatchSampler(lengths, batch_size, shuffle=True, pool_batches=5,
                                         seed=3, num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[rank]) == len(sampler)
        # both ranks take the same number of steps, dealing out one shared batch order
        # (padded with its first batches to an even count)
        padded = (batches * 2)[: 2 * -(-len(batches) // 2)]
        assert shards[0] == padded[0::2] and shards[1] == padded[1::2]
        counts = Counter(i for shard in shards for batch in shard for i in batch)
        assert set(counts) == set(range(len(lengths)))  # every sample seen
        if len(batches) % 2 == 0:
            assert set(counts.values()) == {1}  # exactly once
        else:  # one padding batch (the first batch again) evens the ranks out
            assert sorted(i for i, c in counts.items() if c == 2) == sorted(batches[0])
            assert set(counts.values()) <= {1, 2}
    assert orders[0] != orders[1]  # a new order each epoch


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    run = tmp_path / "run"
    overrides = (*TINY, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                 "trainer.max_epochs=2")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TEST_OVERRIDES, *overrides,
         f"hydra.run.dir={run}"],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    # two epochs: after one (47 steps a rank) the tiny model still tags everything O
    assert metrics["test"]["f1"] > 0.02
    # the training batches were sharded: 47 steps per rank and epoch instead of 94 in one process
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 94

    # the same best checkpoint, evaluated in one process
    cfg = make_config(run, *overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = TokenTagger.load_from_checkpoint(metrics["best_checkpoint"], map_location="cpu",
                                             weights_only=True)
    # the first process wrote the predictions of the whole test split
    written = (run / "test_predictions.conll").read_text().split("\n\n")
    assert len([s for s in written if s.strip()]) == len(datamodule.splits["test"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    assert test["test/f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-6)
    assert test["test/precision"] == pytest.approx(metrics["test"]["precision"], abs=1e-6)
    assert test["test/recall"] == pytest.approx(metrics["test"]["recall"], abs=1e-6)
    # the validation batches were shared out between the processes: their summed counts and
    # the loss averaged over both give the single process's scores
    val = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    assert val["val/f1"] == pytest.approx(metrics["val"]["f1"], abs=1e-6)
    assert val["val/loss"] == pytest.approx(metrics["val"]["loss"], rel=1e-5)
