"""Encoder throughput benchmark for `birnn.BiRNN`, with baselines measured in the same run.

What is measured, for every configuration of the grid
    cell (lstm, gru, mixed = gru/lstm alternating per layer) x merge (concat, sum, mul, ave)
    x layers x hidden x device (cpu, cuda when available) x precision (fp32, bf16 autocast)
    x lengths (full; plus ragged with --ragged: random lengths in [0.8 T, T], the spread of a
    length-bucketed batch, one sequence at T)
on one random batch of shape (B, T, E) (default 32 x 40 x 100, seeded):

- training tokens/s: one step = zero the grads + forward + `outputs.sum()` loss + backward
  (no optimizer step); inference tokens/s: forward under `torch.inference_mode()`. Each is the
  median of `--steps` timed steps after `--warmup` untimed ones (`time.perf_counter`, with
  `torch.cuda.synchronize()` on GPU), interleaved across the implementations. Tokens are the
  batch's real tokens (B*T when full).
- achieved GFLOP/s: the RNN's matmul FLOPs counted analytically, per layer, direction and real
  token 2*G*H*(in + H) (G = 4 gates LSTM, 3 GRU, 1 tanh RNN), training = 3x forward; and its
  fraction of a large square `torch.matmul`'s GFLOP/s measured in the same run on the same
  device and precision ("% of matmul": how far the recurrence is from what this PyTorch build
  delivers on dense work). It can exceed 100%: on CPU an fp32 matmul goes to the BLAS (MKL)
  while the RNN kernels may come from oneDNN, which can use a wider vector ISA on the same CPU;
  the header also gives oneDNN's rate for the same matmul on CPU.
- peak memory of two untimed training steps started from no gradients (`birnn.bench.memory`).

Implementations per configuration (`birnn.bench.cases`): birnn's stack layer by layer, fused,
packed, with the other GRU recurrence and with concurrent directions, each chosen through
`BiRNN`'s constructor options; ``impl="auto"`` is not timed again: the implementation it picks
is marked ``auto`` in the tables. The baselines (`birnn.bench.baselines`) are a hand-written
loop of single-layer bidirectional ``nn.LSTM/GRU`` modules merged by hand (``layered-loop``)
and PyTorch's multi-layer bidirectional module (``torch-fused``, only where it computes the
same stack). They do not pack, so with ragged lengths they also compute the padding (as birnn's
``reverse`` strategy does); every tokens/s counts real tokens only.

birnn's ratios to the baselines (``vs_layered_loop``, ``vs_fused``: its tokens/s over theirs,
>1 = birnn faster) come from one process, one input and one machine state, which makes them
comparable; the absolute numbers depend on the machine, its load (recorded in the header)
and the thread count, and are not claims about any other machine.

``--profile`` adds a breakdown of an end-to-end tagger training step (embedding, encoder
forward, head + loss, backward, optimizer step) with the same shapes. ``--peer keras`` adds
Keras `Bidirectional` stacks when `import keras` works (not a dependency of this project).

Outputs in --out (default docs/benchmarks): results.json, results.md, results.png.
Run it as ``python -m birnn.bench`` or ``python scripts/benchmark.py``; results that have been
measured are in docs/performance.md.
"""
