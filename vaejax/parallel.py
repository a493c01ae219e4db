"""Data parallelism on JAX's own runtime: a device mesh with a `data` axis, shardings, multi-host start-up.

One train-step function serves one CPU, all GPUs of a machine, and many hosts: the batch is
annotated with a NamedSharding over the mesh's `data` axis (jax.lax.with_sharding_constraint
inside the compiled step), parameters and optimizer state are replicated, and XLA's SPMD
partitioner inserts the all-reduce of the gradients. Nothing here runs its own collectives.

Multi-host (one process per host, or per GPU): `initialize` calls jax.distributed.initialize
with the coordinator, process count and process id from flags or the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Every process runs the same
program; each supplies only its own devices' slice of a batch (`put_sharded`).
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


class ParallelError(ValueError):
    """A mistake in the device or multi-host settings; str(e) is one line naming the fix."""


# ---------------------------------------------------------------- settings (no jax runtime needed)


def parse_devices(text: str) -> int | None:
    """'all' -> None (every device); a positive integer N -> N devices per process."""
    text = str(text).strip().lower()
    if text == "all":
        return None
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ParallelError(f"--devices must be 'all' or a positive integer, got {text!r}")
    return int(text)


def distributed_settings(coordinator: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None, environ=None) -> dict | None:
    """Keyword arguments for jax.distributed.initialize, or None for a single process.

    Flags win over the environment. coordinator 'auto' lets JAX detect the cluster
    (Cloud TPU VMs, SLURM, Open MPI, ...) and find every setting itself.
    """
    environ = os.environ if environ is None else environ
    coordinator = coordinator or environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(environ, ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(environ, ENV_PROCESS_ID)
    if coordinator is None:
        if num_processes is not None or process_id is not None:
            raise ParallelError("--num-processes / --process-id need a coordinator; add --coordinator host:port "
                                f"(or set {ENV_COORDINATOR}), or --coordinator auto on a TPU VM or SLURM")
        return None
    if coordinator == "auto":
        return {}
    if not re.fullmatch(r"\[?[A-Za-z0-9_.:-]+\]?:[0-9]{1,5}", coordinator):
        raise ParallelError(f"--coordinator must be host:port (e.g. 10.0.0.1:1234) or 'auto', got {coordinator!r}")
    if num_processes is None or process_id is None:
        raise ParallelError(f"--coordinator {coordinator} needs --num-processes N and --process-id i "
                            f"(or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID})")
    if num_processes < 1:
        raise ParallelError(f"--num-processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ParallelError(f"--process-id must be in [0, {num_processes - 1}] for --num-processes {num_processes}, "
                            f"got {process_id}")
    return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}


def _env_int(environ, name: str) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ParallelError(f"${name} must be an integer, got {value!r}; fix or unset it") from None


def initialize(settings: dict | None) -> None:
    """Join the multi-process runtime (before any other use of jax); a no-op for one process.

    CPU processes talk over gloo (jax's default CPU collectives); GPUs over NCCL; TPUs over ICI/DCN.
    """
    if settings is None:
        return
    jax.distributed.initialize(**settings)


# ---------------------------------------------------------------- mesh and shardings


def data_mesh(devices_per_process: int | None = None) -> Mesh:
    """A 1-D mesh over the `data` axis: every device, or the first N devices of each process."""
    local = jax.local_devices()
    n = len(local) if devices_per_process is None else devices_per_process
    if n > len(local):
        kind = local[0].platform
        raise ParallelError(f"--devices {n}: this process sees only {len(local)} {kind} device(s); "
                            f"use --devices {len(local)} or --devices all")
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    chosen = [d for p in sorted(by_process) for d in sorted(by_process[p], key=lambda d: d.id)[:n]]
    return Mesh(np.array(chosen), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, the on-device dataset)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split along `axis` (the batch axis) over the mesh's `data` axis."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA))


def check_batch(global_batch: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the devices."""
    n = mesh.devices.size
    if global_batch % n:
        up = -(-global_batch // n) * n
        per_process = n // jax.process_count()
        fewer = max(d for d in range(1, per_process + 1) if global_batch % (d * jax.process_count()) == 0
                    ) if global_batch % jax.process_count() == 0 else None
        hint = f" or --devices {fewer}" if fewer else ""
        raise ParallelError(f"batch size {global_batch} does not split over {n} devices; "
                            f"use a multiple of {n} (e.g. --batch-size {up}){hint}")


def put_replicated(tree, mesh: Mesh):
    """Host (or one-device) arrays -> global arrays replicated over the mesh; every process passes the same values."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a), sharding), tree)


def put_sharded(x, mesh: Mesh, axis: int):
    """A host array every process knows in full -> a global array split along `axis`.

    Each process reads and transfers only the slices its own devices hold.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, batch_sharding(mesh, axis), lambda index: x[index])


def to_host(tree):
    """Fully replicated (or single-device) arrays -> numpy, read from this process's first copy."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)

    return jax.tree_util.tree_map(one, tree)


def process_index() -> int:
    return jax.process_index()


def is_main_process() -> bool:
    """Process 0 writes logs and figures; orbax coordinates checkpoint writes itself."""
    return jax.process_index() == 0
