"""Checkpoints written before the encoder became per-layer modules still load and compute the
same outputs (the fixtures and the command that made them: tests/fixtures/checkpoints/)."""

from pathlib import Path

import pytest
import torch

from birnn.models import SentenceClassifier, TokenTagger

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
KINDS = {"tagger": TokenTagger, "classifier": SentenceClassifier}


def load(name: str):
    model = KINDS[name].load_from_checkpoint(FIXTURES / f"{name}.ckpt", map_location="cpu",
                                             weights_only=True)
    return model.eval(), torch.load(FIXTURES / f"{name}.expected.pt", weights_only=True)


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "grad-enabled"])
def test_fixture_gives_the_saved_outputs(name, grad):
    # with gradients enabled the encoder takes its training-time paths (birnn's GRU
    # recurrence, reversal within lengths), without them its inference paths
    model, expected = load(name)
    with torch.set_grad_enabled(grad):
        outputs = model(**expected["inputs"])
    torch.testing.assert_close(outputs.detach(), expected["outputs"], rtol=1e-5, atol=1e-6)


def test_fixture_tagger_decodes_the_saved_tags():
    model, expected = load("tagger")
    with torch.no_grad():
        assert model.decode(**expected["inputs"]) == expected["tags"]


@pytest.mark.parametrize("name", list(KINDS))
def test_fixture_state_dict_keys_are_unchanged(name):
    model, _ = load(name)
    saved = torch.load(FIXTURES / f"{name}.ckpt", weights_only=True)["state_dict"]
    assert sorted(model.state_dict()) == sorted(saved)
