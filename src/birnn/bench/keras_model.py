"""`--keras-model MODEL.keras`: time a user's Keras model and its converted birnn twin
(`birnn.keras.from_keras`) on the same integer batches, training steps and inference.

Keras runs on the backend `--keras-backend` names (`auto`: TensorFlow when it is installed,
else torch) with TensorFlow's `--keras-threads` intra-op and inter-op threads; birnn runs on
torch's threads (`--threads`). A training step is Keras' `train_on_batch` with the model's
loss (sparse categorical cross-entropy, or binary for a sigmoid head) and SGD at learning
rate 0, and birnn's forward + cross-entropy + backward + SGD at learning rate 0; inference is
Keras' `predict_on_batch` and birnn's forward with a softmax under `torch.inference_mode()`.
Both are timed in interleaved rounds (`round_robin_seconds`), so a change of machine load hits
both alike. Writes keras_model.{json,md,png} into `--out` (see docs/keras.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from birnn.bench import machine
from birnn.bench.memory import peak_memory
from birnn.bench.timing import round_robin_seconds

BACKENDS = ("auto", "tensorflow", "torch", "jax")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keras-model", type=Path, metavar="MODEL.keras",
                   help="time this Keras model against its birnn conversion (instead of the "
                        "encoder grid)")
    p.add_argument("--keras-backend", default="auto", choices=BACKENDS,
                   help="the Keras backend for --keras-model (auto: tensorflow when "
                        "installed, else torch)")


def wanted(args: argparse.Namespace) -> bool:
    return args.keras_model is not None


def choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    return "tensorflow" if importlib.util.find_spec("tensorflow") else "torch"


def import_keras(backend: str, threads: tuple[int, int]):
    """Keras on `backend` (set before its first import), TensorFlow's threads set before it
    runs an op."""
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != backend:
        print(f"warning: keras is already loaded on {loaded.backend.backend()}; timing that")
        return loaded
    os.environ["KERAS_BACKEND"] = backend
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with contextlib.suppress(RuntimeError):  # already initialised: keep what it has
            tf.config.threading.set_intra_op_parallelism_threads(threads[0])
            tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    return keras


def make_batch(vocab_size: int, args, ragged: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ids (B, T) in [1, vocab) and lengths; ragged: random lengths in [0.8 T, T] (one at T),
    padded with 0 after each sentence."""
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(1, vocab_size, (args.batch, args.seq))
    lengths = np.full(args.batch, args.seq)
    if ragged:
        lengths = rng.integers(max(1, int(0.8 * args.seq)), args.seq + 1, args.batch)
        lengths[0] = args.seq
        ids[np.arange(args.seq)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def keras_device(keras, model) -> torch.device:
    """Where Keras computes: its torch tensors' device on the torch backend; otherwise the
    CPU, where birnn then runs (the header names both)."""
    if keras.backend.backend() == "torch" and model.weights:
        return model.weights[0].value.device
    return torch.device("cpu")


def steps(keras, model, module, ids: np.ndarray, lengths: np.ndarray,
          device: torch.device) -> dict:
    """The four timed functions: Keras and birnn, training and inference."""
    tagger = module.__class__.__name__ == "TokenTagger"
    rng = np.random.default_rng(0)
    units = model.output_shape[-1]
    shape = ids.shape if tagger else ids.shape[:1]
    sigmoid = units == 1
    target = rng.integers(0, 2 if sigmoid else units, shape)
    y = target[..., None].astype("float32") if sigmoid else target
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss="binary_crossentropy" if sigmoid else "sparse_categorical_crossentropy")
    words, lens = torch.as_tensor(ids).to(device), torch.as_tensor(lengths)
    gold = torch.as_tensor(target).to(device)
    if tagger:
        gold = gold.masked_fill(words == 0, -100)  # no loss at padding
    optimizer = torch.optim.SGD(module.parameters(), lr=0.0)

    def birnn_train() -> None:
        module.train()
        optimizer.zero_grad(set_to_none=True)
        scores = module(words, lens)  # (B, T, K) or (B, K)
        F.cross_entropy(scores.flatten(0, -2), gold.flatten(), ignore_index=-100).backward()
        optimizer.step()

    def birnn_infer() -> None:
        module.eval()
        with torch.inference_mode():
            module(words, lens).softmax(-1)

    return {"keras_train": lambda: model.train_on_batch(ids, y),
            "birnn_train": birnn_train,
            "keras_infer": lambda: model.predict_on_batch(ids),
            "birnn_infer": birnn_infer}


def measure(keras, model, module, ids, lengths, args, device: torch.device) -> dict:
    fns = steps(keras, model, module, ids, lengths, device)
    memory = {}
    for name in ("keras", "birnn"):  # two untimed steps each: the peak of training
        with peak_memory(device) as mem:
            fns[f"{name}_train"]()
            fns[f"{name}_train"]()
        memory[name] = mem["mb"]
    train = round_robin_seconds({k: fns[f"{k}_train"] for k in memory}, args.steps,
                                args.warmup, device)
    infer = round_robin_seconds({k: fns[f"{k}_infer"] for k in memory}, args.steps,
                                args.warmup, device)
    tokens = int(lengths.sum())
    return {k: {"train_tok_s": tokens / train[k], "infer_tok_s": tokens / infer[k],
                "peak_mem_mb": memory[k]} for k in memory}


def markdown(header: dict, rows: list[dict]) -> str:
    tf_threads = (f", TensorFlow threads intra/inter {header['keras_threads']}"
                  if header["backend"] == "tensorflow" else "")
    lines = [f"{header['model']}: B={header['batch']} T={header['seq']}, Keras "
             f"{header['keras']} ({header['backend']}{tf_threads}), torch "
             f"{header['torch']} with {header['threads']} "
             f"threads, both on {header['device']}, {header['date']}. Load average before/after: "
             f"{header['loadavg_before']} / {header['loadavg_after']}. Ratios are birnn's "
             "tokens/s over Keras' (>1 = birnn faster), training (inference).", "",
             "| lengths | impl | train tok/s | infer tok/s | peak MB | birnn / Keras |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        mem = "" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        ratio = f"{r['vs_keras']:.2f}x ({r['vs_keras_infer']:.2f}x)" if "vs_keras" in r else ""
        lines.append(f"| {r['lengths']} | {r['impl']} | {r['train_tok_s']:,.0f} "
                     f"| {r['infer_tok_s']:,.0f} | {mem} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Bars of training and inference tokens/s, Keras and birnn side by side per lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r["lengths"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in ((axes[0], "train_tok_s", "training"),
                           (axes[1], "infer_tok_s", "inference")):
        for k, impl in enumerate(("keras", "birnn")):
            values = [next(r[key] for r in rows if (r["lengths"], r["impl"]) == (g, impl))
                      for g in groups]
            ax.bar([i + (k - 0.5) * 0.4 for i in range(len(groups))], values, 0.4, label=impl)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_title(title)
        ax.set_ylabel("tokens/s")
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Time the model and its conversion; write keras_model.{json,md,png}; print the table."""
    from birnn.errors import BirnnError
    from birnn.keras.convert import load_keras_model

    started, load_before = time.perf_counter(), machine.loadavg()
    args.threads, _ = machine.choose_threads(args.threads)
    torch.set_num_threads(args.threads)
    backend = choose_backend(args.keras_backend)
    keras = import_keras(backend, args.keras_threads)
    try:
        from birnn.keras import from_keras

        model = load_keras_model(args.keras_model)
        module = from_keras(model)
    except BirnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if any(type(layer).__name__ == "TextVectorization" for layer in model.layers):
        print("error: --keras-model: the benchmark feeds token ids; time the model without "
              "its TextVectorization layer", file=sys.stderr)
        return 2
    device = keras_device(keras, model)
    module.to(device)
    vocab_size = module.embedding.num_embeddings
    masked = any(getattr(layer, "mask_zero", False) for layer in model.layers)
    rows = []
    for ragged in (False, True) if (args.ragged and masked) else (False,):
        ids, lengths = make_batch(vocab_size, args, ragged)
        results = measure(keras, model, module, ids, lengths, args, device)
        label = "ragged" if ragged else "full"
        for impl in ("keras", "birnn"):
            rows.append({"lengths": label, "impl": impl, **results[impl]})
        rows[-1]["vs_keras"] = results["birnn"]["train_tok_s"] / results["keras"]["train_tok_s"]
        rows[-1]["vs_keras_infer"] = (results["birnn"]["infer_tok_s"]
                                      / results["keras"]["infer_tok_s"])
        print(f"{label}: birnn / Keras {rows[-1]['vs_keras']:.2f}x training, "
              f"{rows[-1]['vs_keras_infer']:.2f}x inference", flush=True)
    header = {"model": str(args.keras_model), "keras": keras.__version__,
              "backend": keras.backend.backend(), "keras_threads": list(args.keras_threads),
              "torch": torch.__version__, "threads": args.threads, "device": str(device),
              "batch": args.batch,
              "seq": args.seq, "date": time.strftime("%Y-%m-%d"), "cpu": machine.cpu_name(),
              "loadavg_before": load_before, "loadavg_after": machine.loadavg(),
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keras_model.json").write_text(json.dumps([header, *rows], indent=1) + "\n")
    table = markdown(header, rows)
    (args.out / "keras_model.md").write_text("# Keras model against its birnn twin\n\n" + table)
    plot(rows, args.out / "keras_model.png")
    print()
    print(table)
    print(f"wrote {args.out}/keras_model.{{json,md,png}} in {header['seconds']}s")
    return 0
