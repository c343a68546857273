"""Training the two directions of a bidirectional layer at the same time, on CPU.

PyTorch runs one op at a time and splits each op over its intra-op threads. A recurrence is
a long chain of small ops (PyTorch's CPU GRU runs a few per time step), and small ops do not
split well. The forward and backward directions of a layer are independent, so
`two_directions` runs them on two threads with half of the intra-op threads each, as
TensorFlow does with its inter-op pool, in the forward and in the backward pass (the
autograd engine would otherwise walk the two directions' graphs one after the other on one
thread). `BiRNN(directions="concurrent")` uses it for every layer in training, and
`directions="auto"` for GRU layers of long batches (`birnn.encoder.policy`); where it helps
and where it hurts, and why (OpenMP's spinning threads): docs/performance.md, "How `auto`
chooses".

Each direction is a function of its own tensors (input, weights). The forward pass runs them
with gradients enabled on detached copies of those tensors and keeps the two graphs; the
backward pass differentiates each graph on its own thread (`torch.autograd.grad`, which runs
a CPU graph on the calling thread) and returns the gradients. Autocast and the gradient mode
are per thread in PyTorch, so the worker thread enters the caller's. A process forked from
one that imported this module runs the two directions one after the other on its own thread
(`_after_fork_in_child` says why).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

Direction = Callable[..., Tensor]

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# set in a process forked from one that imported this module (a DataLoader worker, say)
_forked = False


def _after_fork_in_child() -> None:
    # A forked child has no copy of the worker thread, and the thread state of the libraries
    # under PyTorch (GNU OpenMP's pool, MKL's buffers) does not survive fork() either: two
    # threads running matmuls in such a child crashed now and then (heap corruption; about 1
    # child in 10 after the parent had run MKL's batched matmuls, which birnn's GRU
    # recurrence uses). So a forked child runs the two directions one after the other, and
    # never touches the parent's pool.
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def forked() -> bool:
    """Whether this process was forked from one that imported this module: then nothing may
    run matmuls on a second thread (`_after_fork_in_child`)."""
    return _forked


def _worker() -> ThreadPoolExecutor:
    """The one worker thread that runs the second direction (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="birnn-direction")
        return _pool


def _both(first: Callable[[], object], second: Callable[[], object]) -> tuple:
    """`first()` on this thread and `second()` on the worker, with the intra-op threads split
    between them; the thread count is restored when both are done, whatever they raise. In a
    forked child both run on this thread, one after the other (`_after_fork_in_child`)."""
    if _forked:
        return first(), second()
    total = torch.get_num_threads()
    mine, theirs = total - total // 2, max(1, total // 2)

    def run_second():
        torch.set_num_threads(theirs)
        return second()

    future = _worker().submit(run_second)
    try:
        torch.set_num_threads(mine)
        a = first()
    finally:
        try:
            b = future.result()
        finally:
            torch.set_num_threads(total)
    return a, b


def _autocast_state() -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")


def _call(fn: Direction, args: Sequence[Tensor], autocast: tuple[bool, torch.dtype],
          grad: bool) -> Tensor:
    with torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]), \
            torch.set_grad_enabled(grad):
        return fn(*args)


class _TwoDirections(torch.autograd.Function):
    @staticmethod
    def forward(ctx, first: Direction, second: Direction, split: int, *tensors: Tensor):
        # detached leaves, so each direction's graph ends at its own inputs
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
        a, b = leaves[:split], leaves[split:]
        autocast = _autocast_state()
        out_a, out_b = _both(lambda: _call(first, a, autocast, True),
                             lambda: _call(second, b, autocast, True))
        ctx.graphs = (a, out_a), (b, out_b)
        return out_a.detach(), out_b.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_a: Tensor, grad_b: Tensor):
        (a, out_a), (b, out_b) = ctx.graphs
        del ctx.graphs

        def grads(inputs: list[Tensor], out: Tensor, grad: Tensor) -> list[Tensor | None]:
            need = [t for t in inputs if t.requires_grad]
            if not need or not out.requires_grad:
                return [None] * len(inputs)
            found = iter(torch.autograd.grad(out, need, grad))
            return [next(found) if t.requires_grad else None for t in inputs]

        ga, gb = _both(lambda: grads(a, out_a, grad_a), lambda: grads(b, out_b, grad_b))
        return (None, None, None, *ga, *gb)


def two_directions(first: Direction, first_args: Sequence[Tensor],
                   second: Direction, second_args: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """`first(*first_args)` and `second(*second_args)`, computed on two threads, forward and
    (when gradients are enabled) backward. The same tensor may appear in both argument lists
    (a layer's input feeds both directions); its gradients add up.

    Each function must build its output from its arguments only (not from other tensors that
    need gradients): gradients flow back to the arguments, nowhere else.
    """
    if not torch.is_grad_enabled():
        autocast = _autocast_state()
        return _both(lambda: _call(first, first_args, autocast, False),
                     lambda: _call(second, second_args, autocast, False))
    return _TwoDirections.apply(first, second, len(first_args), *first_args, *second_args)
