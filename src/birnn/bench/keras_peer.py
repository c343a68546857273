"""Optional peer (`--peer keras`): the same stacks as Keras `Bidirectional` layers."""

from __future__ import annotations

import contextlib

import torch

from birnn.bench.cases import make_record
from birnn.bench.grid import Config, forward_flops_per_token, layer_cells
from birnn.bench.timing import median_seconds


def keras_records(cfgs: list[Config], args) -> list[dict]:
    """Time each (cell, merge, layers, hidden) of `cfgs` as a Keras stack (fp32, full lengths).

    Runs on whatever device and backend Keras is configured for (device = "keras:<backend>").
    Its training step is `train_on_batch` against zeros with MSE and SGD(lr=0): the closest
    Keras equivalent of forward + sum loss + backward, plus a no-op optimizer update.
    """
    try:
        import keras
        import numpy as np
    except ImportError:
        print("--peer keras: `import keras` failed (not installed); skipping the Keras peer.")
        return []
    backend = keras.backend.backend()
    if backend == "tensorflow":
        # before TensorFlow runs its first op; 1 intra-op and 2 inter-op threads let it run the
        # two directions of a layer at the same time, one per core (its best setting on 2 cores)
        import tensorflow as tf
        intra, inter = args.keras_threads
        with contextlib.suppress(RuntimeError):  # already initialised: keep what it has
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    seen, records = set(), []
    for cfg in cfgs:
        key = (cfg.cell, cfg.merge, cfg.layers, cfg.hidden)
        if key in seen or cfg.lengths != "full" or cfg.precision != "fp32":
            continue
        seen.add(key)
        kcfg = Config(*key, device=f"keras:{backend}", precision="fp32", lengths="full")
        layers = [keras.Input((args.seq, args.input))]
        for cell in layer_cells(cfg.cell, cfg.layers):
            rnn_cls = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
            rnn = rnn_cls(cfg.hidden, return_sequences=True)
            layers.append(keras.layers.Bidirectional(rnn, merge_mode=cfg.merge))
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse",
                      jit_compile=args.keras_jit)
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((args.batch, args.seq, args.input), dtype=np.float32)
        y = np.zeros((args.batch, *model.output_shape[1:]), np.float32)
        timing = _keras_timing(model, x, y, args)
        tokens = args.batch * args.seq
        flops = tokens * forward_flops_per_token(
            layer_cells(cfg.cell, cfg.layers), cfg.merge, args.input, cfg.hidden
        )
        records.append(make_record(kcfg, "keras", timing, tokens, flops, None))
        print(f"  keras ({backend}) {kcfg.label()}: {records[-1]['train_tok_s']:,.0f} tok/s train")
    return records


def add_keras_ratios(results: list[dict]) -> None:
    """birnn's training tok/s over Keras' fp32 figure for the same stack (full lengths), set
    as `vs_keras` on the rows of every precision of what impl=auto runs and of
    `birnn-concurrent` (the option that runs both directions at once, as Keras does here)."""
    keras = {(r["cell"], r["merge"], r["layers"], r["hidden"]): r["train_tok_s"]
             for r in results if r["impl"] == "keras"}
    for r in results:
        key = (r["cell"], r["merge"], r["layers"], r["hidden"])
        compared = r.get("auto") or r["impl"] == "birnn-concurrent"
        if compared and r["lengths"] == "full" and key in keras:
            r["vs_keras"] = r["train_tok_s"] / keras[key]


def keras_markdown(results: list[dict]) -> str:
    """The table of birnn over Keras, one row per compared birnn row ("" when none)."""
    rows = [r for r in results if "vs_keras" in r]
    if not rows:
        return ""
    lines = ["| cell | merge | L | H | device | prec | birnn | birnn train tok/s "
             "| Keras fp32 tok/s | birnn / Keras |",
             "|---|---|---:|---:|---|---|---|---:|---:|---:|"]
    for r in rows:
        option = "directions=concurrent" if r["impl"] == "birnn-concurrent" else "auto"
        lines.append(f"| {r['cell']} | {r['merge']} | {r['layers']} | {r['hidden']} "
                     f"| {r['device']} | {r['precision']} | {option} | {r['train_tok_s']:,.0f} "
                     f"| {r['train_tok_s'] / r['vs_keras']:,.0f} | {r['vs_keras']:.2f}x |")
    return "\n".join(lines) + "\n"


def _keras_timing(model, x, y, args) -> dict:
    cpu = torch.device("cpu")  # nothing to synchronize from torch's side
    return {
        "train_s": median_seconds(lambda: model.train_on_batch(x, y), args.steps, args.warmup, cpu),
        "infer_s": median_seconds(lambda: model.predict_on_batch(x), args.steps, args.warmup, cpu),
        "peak_mem_mb": None,
    }
