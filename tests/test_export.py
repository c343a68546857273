"""ONNX export: onnxruntime's outputs against PyTorch eager ones for every merge, cell, mixed
stacks, character and casing features, both heads and the classifiers' poolings; a model
trained on the embedded sample through `export.py` and `predict.py ckpt=model.onnx`, which
must not import Lightning; the commands of docs/deployment.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE_NER, make_config

pytest.importorskip("onnxruntime")
import onnxruntime  # noqa: E402

from birnn.export.onnx import export_onnx  # noqa: E402
from birnn.export.runtime import OnnxRunner  # noqa: E402
from birnn.models import SentenceClassifier, TokenTagger  # noqa: E402

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
VOCAB = 40
CHARS = 12


def vocabularies(task: str, labels: list[str], chars: bool) -> dict:
    table = {"itos": ["<pad>", "<unk>", *(f"w{i}" for i in range(VOCAB - 2))], "unk": "<unk>",
             "lower": False}
    out = {"task": task, "words": table, "labels": {"itos": labels, "unk": None, "lower": False}}
    if chars:
        out["chars"] = {"itos": ["<pad>", "<unk>", *"abcdefghij"], "unk": "<unk>",
                        "lower": False}
    return out


def batch(with_chars: bool, seed: int = 1) -> dict[str, torch.Tensor]:
    """Six sentences of mixed lengths (batch and steps unlike the traced example's), words of
    mixed character lengths, padding everywhere else."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    real = torch.arange(9)[None, :] < lengths[:, None]  # (B, T)
    out = {"words": torch.randint(1, VOCAB, (6, 9), generator=g) * real, "lengths": lengths,
           "casing": torch.randint(1, 6, (6, 9), generator=g) * real}
    if with_chars:
        word_lengths = torch.randint(1, 8, (6, 9), generator=g) * real
        width = torch.arange(7)[None, None, :] < word_lengths[..., None]  # (B, T, W)
        out["chars"] = torch.randint(1, CHARS, (6, 9, 7), generator=g) * width
    return out


def onnx_outputs(path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: inputs[n].numpy() for n in names})[0]


def check_parity(model, inputs: dict, tmp_path, task: str) -> None:
    model.eval()
    chars = "chars" in inputs and getattr(model, "char_encoder", None) is not None
    path = export_onnx(model, vocabularies(task, model.labels, chars), tmp_path)
    with torch.no_grad():
        if task == "tagging":
            features = {k: inputs[k] for k in ("chars", "casing")
                        if k in inputs and (k != "chars" or chars)
                        and (k != "casing" or model.casing_embedding is not None)}
            expected = model(inputs["words"], inputs["lengths"], **features).numpy()
        else:
            expected = model(inputs["words"], inputs["lengths"]).numpy()
    got = onnx_outputs(path, inputs)
    assert got.shape == expected.shape
    if task == "tagging":
        real = (torch.arange(inputs["words"].size(1))[None] < inputs["lengths"][:, None]).numpy()
        got, expected = got[real], expected[real]  # (real tokens, L)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def tagger(encoder: dict, **kwargs) -> TokenTagger:
    torch.manual_seed(0)
    return TokenTagger(VOCAB, LABELS, {"hidden_size": 5, **encoder}, embedding_dim=6,
                       **kwargs)


ENCODERS = [
    *({"merge": [m, m]} for m in ("concat", "sum", "mul", "ave")),
    {"merge": ["mul", "none"]},  # `none` only last
    *({"cell": c} for c in ("gru", "rnn")),
    {"cell": ["gru", "lstm", "rnn"], "hidden_size": [4, 6, 5], "merge": ["sum", "concat", "ave"]},
]


def encoder_id(encoder: dict) -> str:
    return "-".join(map(str, encoder.values())).replace(" ", "")


@pytest.mark.parametrize("encoder", ENCODERS, ids=encoder_id)
def test_tagger_encoders_export(encoder, tmp_path):
    check_parity(tagger(encoder), batch(False), tmp_path, "tagging")


@pytest.mark.parametrize("features", [
    {"head": "crf", "casing": True},
    {"char": {"kind": "cnn", "dim": 4, "filters": 5, "max_length": 5}, "num_chars": CHARS},
    {"char": {"kind": "birnn", "dim": 4, "hidden_size": 3}, "num_chars": CHARS,
     "casing": True, "head": "crf"},
], ids=["crf-casing", "chars-cnn", "chars-birnn-casing-crf"])
def test_tagger_features_and_heads_export(features, tmp_path):
    model = tagger({"cell": "gru", "merge": "sum"}, **features)
    inputs = batch(True)
    inputs["chars"][0, 3] = 0  # a real word without characters
    check_parity(model, inputs, tmp_path, "tagging")


@pytest.mark.parametrize("pooling", ["final", "mean", "max", "attention"])
def test_classifiers_export(pooling, tmp_path):
    torch.manual_seed(0)
    merge = "none" if pooling == "final" else "sum"
    model = SentenceClassifier(VOCAB, ["neg", "pos"], {"hidden_size": 5, "merge": merge},
                               embedding_dim=6, pooling=pooling)
    check_parity(model, batch(False), tmp_path, "classification")


def test_labels_file_holds_the_lattice(tmp_path):
    model = tagger({}, head="crf").eval()
    export_onnx(model, vocabularies("tagging", LABELS, False), tmp_path)
    info = json.loads((tmp_path / "labels.json").read_text())
    assert info["labels"] == LABELS and info["head"] == "crf"
    assert info["inputs"] == ["words", "lengths"]
    expected = (model.crf.transitions + model.crf.trans_penalty).detach().numpy()
    np.testing.assert_allclose(info["lattice"]["transitions"], expected, atol=1e-6)
    assert min(info["lattice"]["start"]) < -1000  # I- tags may not start a sentence


def test_runner_labels_sentences_as_pytorch_does(tmp_path):
    torch.manual_seed(0)
    model = SentenceClassifier(VOCAB, ["neg", "pos", "mixed"], {"hidden_size": 5},
                               embedding_dim=6, pooling="mean").eval()
    export_onnx(model, vocabularies("classification", model.labels, False), tmp_path)
    sentences = [["w3", "w7", "unseen"], [], ["w1"]]
    got = OnnxRunner.from_path(tmp_path).predict(sentences)
    ids = [[5, 9, 1], [3]]  # "w<i>" is id i + 2, unseen words are <unk> (1)
    for sentence, result in zip([ids[0], None, ids[1]], got, strict=True):
        if sentence is None:
            assert result == (None, None)
            continue
        with torch.no_grad():
            probs = model(torch.tensor([sentence]), torch.tensor([len(sentence)])).softmax(-1)
        assert result[0] == model.labels[int(probs.argmax())]
        assert result[1] == pytest.approx(float(probs.max()), abs=1e-5)


# ------------------------------------------------------ a trained model, end to end (CLI)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from birnn.cli.train import train

    out = tmp_path_factory.mktemp("trained")
    train(make_config(out, "encoder.hidden_size=8", "model.embedding_dim=16",
                      "model.head=crf", "model.casing=true", "model.char.kind=cnn",
                      "model.char.dim=8", "model.char.filters=8", "trainer.max_epochs=1",
                      "+trainer.limit_train_batches=8", "+trainer.limit_val_batches=2",
                      "+trainer.limit_test_batches=2", "model.optimizer.lr=0.02"))
    export = out / "export"
    run = subprocess.run([sys.executable, "export.py", f"ckpt={out}", f"output={export}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return out, export


def sample_sentences() -> list[list[str]]:
    from birnn.data import read_column_file

    return [s["tokens"] for s in read_column_file(SAMPLE_NER / "test.txt")]


def assert_runner_matches_predictor(runner: OnnxRunner, predictor, sentences) -> list:
    """The runner's tags, token and span scores equal those of the PyTorch model on the
    batches its data module makes, decoded with its lattice; returns the runner's results."""
    from birnn.decoding import Lattice, decode

    got = runner.predict(sentences, batch_size=64, scores=True)
    assert runner.predict(sentences) == [r["tags"] for r in got]
    model, labels = predictor.model, predictor.labels
    lattice = Lattice.of_tagger(model)
    checked = 0
    for batch in predictor.batches(sentences, batch_size=50):
        with torch.no_grad():
            emissions = model(batch["words"], batch["lengths"], **model.features(batch))
        decoded = decode(emissions.double().numpy(), batch["lengths"].numpy(), lattice, labels)
        for i, expected in zip(batch["index"].tolist(), decoded, strict=True):
            result = got[i]
            assert result["tags"] == [labels[j] for j in expected.tags]
            np.testing.assert_allclose(result["scores"], expected.token_scores,
                                       atol=1e-4)
            assert [(s["type"], s["start"], s["end"]) for s in result["spans"]] == \
                [s[:3] for s in expected.spans]
            np.testing.assert_allclose([s["score"] for s in result["spans"]],
                                       [s[3] for s in expected.spans], atol=1e-4)
            checked += 1
    assert checked == sum(1 for s in sentences if s)
    return got


def test_runner_tags_and_scores_equal_pytorch_on_a_random_crf(tmp_path):
    from birnn.inference import Predictor

    # untrained: random emissions give many chunks, so span scores are compared too
    model = tagger({"cell": ["gru", "lstm"], "merge": ["sum", "concat"]}, head="crf",
                   casing=True, char={"kind": "cnn", "dim": 4, "filters": 5},
                   num_chars=CHARS).eval()
    vocabs = vocabularies("tagging", LABELS, True)
    export_onnx(model, vocabs, tmp_path)
    g = torch.Generator().manual_seed(2)
    words = ["w1", "W2", "abc", "Hij", "zz", "a1", "ghij", "w30"]
    sentences = [[words[i] for i in torch.randint(0, len(words), (int(n),), generator=g)]
                 for n in torch.randint(1, 12, (40,), generator=g)]
    sentences[5] = []
    got = assert_runner_matches_predictor(OnnxRunner.from_path(tmp_path),
                                          Predictor(model, vocabs), sentences)
    assert sum(len(r["spans"]) for r in got) > 20
    assert got[5] == {"tags": [], "scores": [], "spans": []}


def test_onnx_tags_and_scores_equal_the_checkpoints(trained):
    from birnn.inference import Predictor

    run, export = trained
    assert {p.name for p in export.iterdir()} >= {"model.onnx", "vocabularies.json",
                                                  "labels.json"}
    predictor, sentences = Predictor.from_checkpoint(run), sample_sentences()
    got = assert_runner_matches_predictor(OnnxRunner.from_path(export / "model.onnx"),
                                          predictor, sentences)
    # the checkpoint's own decoding (the PyTorch CRF's Viterbi) gives the same tags, and
    # its scored predictions the same records
    assert predictor.predict(sentences) == [r["tags"] for r in got]
    for mine, theirs in zip(predictor.predict(sentences, scores=True), got, strict=True):
        assert mine["tags"] == theirs["tags"]
        np.testing.assert_allclose(mine["scores"], theirs["scores"], atol=1e-4)


def test_evaluate_reports_the_calibration_of_the_token_scores(trained, tmp_path):
    from hydra import compose, initialize_config_dir

    from birnn.cli.evaluate import evaluate
    from birnn.data import read_column_file
    from birnn.inference import Predictor

    run, _ = trained
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt={run}", f"paths.output_dir={tmp_path}",
                                             "trainer.enable_progress_bar=false"])
    result = evaluate(cfg)
    assert (tmp_path / "test_calibration.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["calibration"] == result["calibration"]

    # by hand: each test token's predicted tag and its score, 10 equal bins
    gold = list(read_column_file(SAMPLE_NER / "test.txt"))
    scored = Predictor.from_checkpoint(run).predict([g["tokens"] for g in gold], scores=True)
    bins = [[] for _ in range(10)]
    for g, p in zip(gold, scored, strict=True):
        for tag, want, score in zip(p["tags"], g["tags"], p["scores"], strict=True):
            bins[min(max(int(np.ceil(score * 10)) - 1, 0), 9)].append((score, tag == want))
    total = sum(len(b) for b in bins)
    ece = sum(len(b) / total * abs(np.mean([c for _, c in b]) - np.mean([s for s, _ in b]))
              for b in bins if b)
    assert result["calibration"]["ece"] == pytest.approx(ece, abs=1e-6)


def test_the_runner_imports_neither_lightning_nor_the_model_code(trained):
    _, export = trained
    code = ("import sys, json\n"
            "from birnn.export.runtime import OnnxRunner\n"
            f"r = OnnxRunner.from_path({str(export / 'model.onnx')!r})\n"
            "print(json.dumps(r.predict([['EU', 'rejects', 'German', 'call']], scores=True)))\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', "
            "'pytorch_lightning') or m.startswith('birnn.models')]\n"
            "assert not bad, bad\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)[0]["tags"]) == 4


def test_bad_export_requests_are_one_line_errors(trained, tmp_path):
    run, _ = trained
    bad = subprocess.run([sys.executable, "export.py", f"ckpt={run}", "format=tflite"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "format" in bad.stderr and "onnx" in bad.stderr
    missing = OnnxRunner.from_path
    with pytest.raises(Exception, match="not found"):
        missing(tmp_path / "model.onnx")


# -------------------------------------------------------- the commands of deployment.md


@pytest.mark.slow  # four commands, each a fresh interpreter: about a minute
def test_deployment_doc_commands_run(trained, tmp_path):
    run, _ = trained
    text = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert blocks
    script = "\n".join(blocks).replace("outputs/DATE/TIME", str(run))
    # `python` is this interpreter; commands run from the repository root, as the page says
    setup = f"set -euo pipefail\ncd {ROOT}\npython() {{ {sys.executable} \"$@\"; }}\n"
    done = subprocess.run(["bash", "-c", setup + script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    tagged = (run / "onnx_tags.conll").read_text().split("\n\n")
    assert len([b for b in tagged if b.strip()]) == len(sample_sentences())
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(record["scores"]) == len(record["tags"]) == 4
    assert all(0 <= s["score"] <= 1 for s in record["spans"])


# --------------------------------------------------------- parity on the real test split


def parity(ckpt, folder, sentences) -> tuple[bool, float]:
    """Whether the checkpoint and its ONNX export give the same tags on every sentence, and
    the largest difference of their token and span scores."""
    from birnn.inference import Predictor

    torch_out = Predictor.from_checkpoint(ckpt).predict(sentences, scores=True)
    onnx_out = OnnxRunner.from_path(folder).predict(sentences, scores=True)
    same, worst = True, 0.0
    for a, b in zip(torch_out, onnx_out, strict=True):
        spans_a = [(s["type"], s["start"], s["end"]) for s in a["spans"]]
        spans_b = [(s["type"], s["start"], s["end"]) for s in b["spans"]]
        if a["tags"] != b["tags"] or spans_a != spans_b:
            same = False
            continue
        scores = [*zip(a["scores"], b["scores"], strict=True),
                  *((x["score"], y["score"]) for x, y in zip(a["spans"], b["spans"],
                                                             strict=True))]
        worst = max([worst, *(abs(x - y) for x, y in scores)])
    return same, worst


@pytest.mark.slow  # one CoNLL-2003 epoch (a few minutes on 2 cores), then the whole test split
def test_onnx_equals_the_checkpoint_on_the_conll2003_test_split(tmp_path):
    from conftest import SHARED_DATA

    from birnn.checkpoint import load_model
    from birnn.cli.train import train
    from birnn.data import read_column_file

    data = SHARED_DATA / "conll2003"
    if not data.is_dir():
        pytest.skip(f"no CoNLL-2003 in {data}")
    train(make_config(tmp_path, "experiment=conll2003", f"data.dir={data}",
                      "trainer.max_epochs=1"))
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    folder = export_onnx(*load_model(ckpt), tmp_path / "export").parent
    sentences = [s["tokens"] for s in read_column_file(data / "test.txt")]
    same, worst = parity(ckpt, folder, sentences)
    assert same and worst < 1e-4, worst
