"""Time and memory of one compiled function on this device, measured as the project measures speed.

measure(fn, *args) compiles fn once (its compile time reported apart), then times `windows` windows
of repeated calls, each window blocking once, and reports the median; memory and FLOPs come from
XLA's analysis of the compiled program, so they are the same on every backend and need no profiler.
"""

from __future__ import annotations

import time

import jax
import numpy as np


def measure(fn, *args, windows: int = 7, window_seconds: float = 0.05) -> dict:
    """Compile fn(*args) (timed apart), then the median of `windows` timed windows, each blocking once.

    Memory from XLA's analysis of the compiled program: peak = arguments + outputs + temporaries
    - aliased bytes (what the program needs resident at once; the same on every backend).
    """
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_seconds = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(window_seconds / once))
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        out = None
        for _ in range(reps):
            out = compiled(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / reps)
    mem = compiled.memory_analysis()
    arg, outb, temp, alias = (int(getattr(mem, f, 0) or 0) for f in
                              ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                               "alias_size_in_bytes"))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    return {"seconds_per_batch": float(np.median(times)), "compile_seconds": compile_seconds, "windows": windows,
            "reps_per_window": reps, "argument_bytes": arg, "output_bytes": outb, "temp_bytes": temp,
            "peak_bytes": arg + outb + temp - alias, "flops": float(cost.get("flops", float("nan")))}


def compare(direct, network, params, x_B) -> dict:
    """Time per image and peak memory of direct(x_B) against network(params, x_B), on the same batch, and
    their ratios: what a learned stand-in for a computation costs beside the computation."""
    n = x_B.shape[0]
    out = {}
    for name, m in (("direct", measure(direct, x_B)), ("autoencoder", measure(network, params, x_B))):
        out[name] = dict(m, seconds_per_image=m["seconds_per_batch"] / n, flops_per_image=m["flops"] / n)
    out["batch"] = int(n)
    out["param_bytes"] = int(sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(params)))
    out["time_ratio"] = out["autoencoder"]["seconds_per_image"] / out["direct"]["seconds_per_image"]
    out["memory_ratio"] = out["autoencoder"]["peak_bytes"] / max(1, out["direct"]["peak_bytes"])
    return out
