"""scripts/overhead.py: the raw-loop vs Lightning ratio and the per-phase step breakdown run
on the sample with the features an experiment config uses (characters, casing, CRF, plateau
schedule, bf16), and report what they measured."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
from conftest import ROOT, SAMPLE_NER
from test_features import TINY

EXPERIMENT = ("experiment=conll2003", f"data.dir={SAMPLE_NER}", *TINY)


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "scripts" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["overhead"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_profile_prints_every_phase(overhead, capsys, precision):
    # overrides on both sides of the options, as in the script's usage lines
    assert overhead.main([*EXPERIMENT, "--profile", "--steps", "6", "--warmup", "1",
                          "--op-steps", "2", f"trainer.precision={precision}"]) == 0
    out = capsys.readouterr().out
    shares = []
    for phase in overhead.PHASES:
        match = re.search(rf"^  {re.escape(phase)}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%$", out, re.M)
        assert match, phase
        mean, _, share = map(float, match.groups())
        assert mean > 0
        shares.append(share)
    assert sum(shares) == pytest.approx(100, abs=0.5)  # the phases cover the whole step
    assert "over 6 steps" in out and "mkldnn_rnn_layer" in out  # the operator table


def test_ratio_of_lightning_to_raw(overhead, capsys):
    assert overhead.main(["--epochs", "1", "--repeats", "1", *EXPERIMENT]) == 0
    out = capsys.readouterr().out
    raw = float(re.search(r"raw PyTorch loop\s+([\d,]+) tokens/s", out)[1].replace(",", ""))
    lit = float(re.search(r"train.py Lightning\s+([\d,]+) tokens/s", out)[1].replace(",", ""))
    ratio = float(re.search(r"ratio Lightning / raw: ([\d.]+)", out)[1])
    assert raw > 0 and lit > 0
    assert ratio == pytest.approx(lit / raw, abs=0.002)
