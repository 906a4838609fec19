"""Sharding over devices: one code path from one CPU to many accelerators and hosts.

stablejax parallelises over one mesh axis, :data:`AXIS`: replicas in simulation, frames (or
environments) in the Boltzmann estimators, batches in pre-training. A :class:`jax.sharding.Mesh`
chooses the devices; the default is every device JAX sees (all processes' devices after
:func:`initialize_distributed`), and a mesh of one device runs exactly the single-device code.

The parallel pieces are written with :func:`jax.shard_map`: each device works on its own slice
of the leading axis with no communication, and reductions (the parameter cotangent of an
estimator, a gradient) are one ``psum`` that XLA turns into its collective (all-reduce over NCCL
on GPUs, the ICI on TPUs, Gloo between CPU processes). A leading axis that does not divide the
device count is padded with copies of its first element before the parallel call and the padding
is cut from every result, so callers never see it (it never reaches checkpoints, metrics or
unstable fractions).

On a CPU, XLA can expose several host devices of one process:
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX starts; the CLI's
``--devices N`` does it). Example::

    from stablejax.sharding import make_mesh
    mesh = make_mesh()              # all devices, one axis
    sim = make_simulator(energy_fn, ..., mesh=mesh)
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stablejax.errors import InputError

#: The one mesh axis every parallel piece of stablejax uses.
AXIS = "data"

PyTree = Any


def make_mesh(n_devices: int | None = None, devices: list | None = None) -> Mesh:
    """A one-axis mesh (axis :data:`AXIS`) over ``n_devices`` of ``devices`` (default: all of
    ``jax.devices()``, i.e. every process's devices in a multi-host run).

    Raises:
      InputError: ``n_devices`` < 1 or more than the devices available.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if n_devices is None else n_devices
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"n_devices must be an integer >= 1, got {n_devices!r}")
    if n > len(devices):
        raise InputError(f"n_devices={n} but only {len(devices)} {jax.default_backend()} "
                         f"device(s) are available (on a CPU, start with XLA_FLAGS="
                         f"--xla_force_host_platform_device_count={n}, or pass --devices {n} "
                         f"to the CLI)")
    return Mesh(np.asarray(devices[:n]), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


_DEFAULT_DEVICES: int | None = None


def use_devices(n_devices: int | None) -> None:
    """Make ``"all"`` (the default mesh of training, evaluation and pre-training) mean the
    first ``n_devices`` devices (None: every device).

    On a CPU it also asks XLA for ``n_devices`` host devices (one process, several devices:
    ``--xla_force_host_platform_device_count``), which works only before JAX has started its
    backend; the CLI's ``--devices N`` calls this first thing.
    """
    global _DEFAULT_DEVICES
    if n_devices is not None and (not isinstance(n_devices, int) or n_devices < 1):
        raise InputError(f"--devices must be an integer >= 1, got {n_devices!r}")
    _DEFAULT_DEVICES = n_devices
    if n_devices is not None and n_devices > 1:
        flag = f"--xla_force_host_platform_device_count={n_devices}"
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        os.environ["XLA_FLAGS"] = " ".join(flags + [flag])


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           timeout_s: int | None = None) -> None:
    """Join a multi-host run: :func:`jax.distributed.initialize`, after which ``jax.devices()``
    (and so the default mesh) holds every process's devices.

    Arguments not given come from ``STABLEJAX_COORDINATOR`` (host:port of process 0),
    ``STABLEJAX_NUM_PROCESSES`` and ``STABLEJAX_PROCESS_ID``; when none of these is set JAX
    detects the cluster itself (SLURM, Open MPI, Kubernetes, TPU pods). ``timeout_s``
    (default ``STABLEJAX_DIST_TIMEOUT`` or 120 s) bounds the wait for the coordinator.

    Afterwards only process 0 logs (the others log errors only), shows progress and writes
    files (:func:`primary_only`); checkpoints are written by all processes through orbax.

    Process 0 hosts the coordinator and waits (up to the timeout) for the others; a process
    that cannot reach the coordinator within the timeout stops with a one-line error.

    Raises:
      InputError: a malformed variable, or no coordinator reached within the timeout (one
        line, not a hang).
    """
    env = os.environ

    def number(name, value):
        if value is None and env.get(name) is not None:
            try:
                return int(env[name])
            except ValueError:
                raise InputError(f"{name} must be an integer, got {env[name]!r}") from None
        return value

    coordinator_address = coordinator_address or env.get("STABLEJAX_COORDINATOR")
    num_processes = number("STABLEJAX_NUM_PROCESSES", num_processes)
    process_id = number("STABLEJAX_PROCESS_ID", process_id)
    timeout_s = number("STABLEJAX_DIST_TIMEOUT", timeout_s) or 120
    # CPU processes reduce across hosts with Gloo (GPUs use NCCL, TPUs their ICI regardless)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address and process_id not in (None, 0):
        # JAX aborts the whole process (no Python exception) when the coordinator cannot be
        # reached: try it first, so that an unreachable one is a one-line error
        _wait_for_coordinator(coordinator_address, timeout_s)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=int(timeout_s))
    except Exception as e:  # noqa: BLE001  (JAX raises RuntimeError/XlaRuntimeError/ValueError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"could not join the multi-host run (coordinator "
                         f"{coordinator_address or 'auto-detected'}, {num_processes} processes, "
                         f"process {process_id}, timeout {timeout_s} s): {first[:300]}") from None
    quiet_other_processes()


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"STABLEJAX_COORDINATOR must be host:port, got {address!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise InputError(f"the multi-host coordinator {address} could not be reached "
                                 f"within {timeout_s:g} s ({e.strerror or e}); start process 0 "
                                 f"first and check the address") from None
            time.sleep(0.5)


def resolve_mesh(mesh: Mesh | str | None) -> Mesh | None:
    """``"all"``: a mesh over every device JAX sees (or the count given to
    :func:`use_devices`) when that is more than one, else None (the plain single-device code);
    a :class:`Mesh` is checked (:func:`check_mesh`); None stays None."""
    if isinstance(mesh, str):
        if mesh != "all":
            raise InputError(f"mesh must be a jax.sharding.Mesh, 'all' or None, got {mesh!r}")
        n = len(jax.devices()) if _DEFAULT_DEVICES is None else _DEFAULT_DEVICES
        return make_mesh(n) if n > 1 else None
    return check_mesh(mesh)


def check_mesh(mesh: Mesh | None) -> Mesh | None:
    """``mesh`` itself if it is None or a one-axis :class:`Mesh` named :data:`AXIS` whose
    devices all exist; else a one-line :class:`InputError`."""
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise InputError(f"mesh must be a jax.sharding.Mesh (stablejax.sharding.make_mesh), "
                         f"got {type(mesh).__name__}")
    if tuple(mesh.axis_names) != (AXIS,):
        raise InputError(f"mesh must have the one axis {AXIS!r} (stablejax.sharding.make_mesh), "
                         f"got axes {tuple(mesh.axis_names)}")
    known = set(jax.devices())
    missing = [d for d in mesh.devices.flat if d not in known]
    if missing:
        raise InputError(f"mesh has {mesh.size} devices but {len(missing)} of them are not among "
                         f"this run's {len(known)} device(s): {missing[0]}")
    return mesh


def n_shards(mesh: Mesh | None) -> int:
    """Devices along :data:`AXIS` (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.size)


def is_parallel(mesh: Mesh | None) -> bool:
    return n_shards(mesh) > 1


def padded_size(n: int, mesh: Mesh | None) -> int:
    """``n`` rounded up to a multiple of the device count."""
    k = n_shards(mesh)
    return k * math.ceil(n / k)


def pad_leading(tree: PyTree, n_to: int) -> PyTree:
    """Pad every leaf's leading axis to ``n_to`` with copies of its first element."""
    def pad(x):
        if x.shape[0] == n_to:
            return x
        extra = jnp.broadcast_to(x[:1], (n_to - x.shape[0],) + x.shape[1:])
        return jnp.concatenate([x, extra])

    return jax.tree.map(pad, tree)


def take_leading(tree: PyTree, n: int) -> PyTree:
    """The first ``n`` elements of every leaf's leading axis (drops padding)."""
    return jax.tree.map(lambda x: x if x.shape[0] == n else x[:n], tree)


def leading_size(tree: PyTree) -> int:
    return int(jax.tree.leaves(tree)[0].shape[0])


def replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """``tree`` constrained to be whole on every device of ``mesh`` (inside ``jit``)."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P()))


def replica_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, the rest whole on each device."""
    return NamedSharding(mesh, P(AXIS))


def shard_leading(tree: PyTree, mesh: Mesh | None) -> PyTree:
    """Place ``tree`` (leading axis divisible by the device count) split over the mesh."""
    if not is_parallel(mesh):
        return tree
    return jax.device_put(tree, replica_sharding(mesh))


def map_leading(fn: Callable, mesh: Mesh | None, shared: PyTree, split: PyTree) -> PyTree:
    """``fn(shared, split)`` with ``split``'s leading axis divided over the mesh.

    ``fn`` must treat the elements of the leading axis independently (a ``vmap``, a per-replica
    ``scan``) and return leaves with the same leading axis; ``shared`` is given whole to every
    device. Pads to a multiple of the device count and cuts the padding from the result.
    Without a parallel mesh it is just ``fn(shared, split)``.
    """
    if not is_parallel(mesh):
        return fn(shared, split)
    n = leading_size(split)
    padded = pad_leading(replicated(split, mesh), padded_size(n, mesh))
    out = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS),
                        check_vma=False)(shared, padded)
    # whole on every device from here on: XLA must not spread the caller's own work over the
    # devices (its reductions would then add in a device-count-dependent order)
    return replicated(take_leading(out, n), mesh)


def sum_leading(fn: Callable, mesh: Mesh | None, shared: PyTree, split: PyTree) -> PyTree:
    """``fn(shared, split)`` for an ``fn`` that SUMS over ``split``'s leading axis: each device
    sums its slice and the partial sums are added across devices (one ``psum``).

    ``split``'s leading axis must divide the device count (pad it with elements that add
    nothing, e.g. zero coefficients, before the call).
    """
    if not is_parallel(mesh):
        return fn(shared, split)
    n = leading_size(split)
    if n % n_shards(mesh):
        raise ValueError(f"sum_leading: leading axis {n} is not a multiple of the "
                         f"{n_shards(mesh)} devices (pad it first)")

    split = replicated(split, mesh)

    def local(s, x):
        return jax.lax.psum(fn(s, x), AXIS)

    # check_vma=False: the per-device code is ordinary single-device code (scans whose carries
    # start from replicated zeros); the one collective is the explicit psum above
    return replicated(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(),
                                    check_vma=False)(shared, split), mesh)


def describe(mesh: Mesh | None, n: int, what: str) -> str:
    """One log line: how ``n`` ``what`` are laid out over the mesh's devices."""
    k = n_shards(mesh)
    if k == 1:
        dev = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
        return f"{n} {what} on 1 device ({dev.platform})"
    per = padded_size(n, mesh) // k
    pad = padded_size(n, mesh) - n
    kind = mesh.devices.flat[0].platform
    extra = f", {pad} padding" if pad else ""
    return f"{n} {what} over {k} {kind} devices: {per} per device{extra}"


# ----------------------------------------------------------------- multi-host: who writes
# Every process of a multi-host run executes the same program on the same (shared) run
# directory. Files are written by process 0 only while the others wait for its outcome (a
# broadcast from process 0, so what it wrote is there for all, and its error is raised in every
# process); orbax checkpoints are written by all processes together (orbax has process 0 write
# replicated arrays once).

_PRIMARY_DEPTH = 0  # > 0 inside a primary-only section (nested sections do not sync again)


def is_primary() -> bool:
    """True in process 0 (always, in a single-process run): the process that writes files,
    logs and shows progress."""
    return jax.process_index() == 0


def _broadcast_json(obj: Any) -> Any:
    """Process 0's JSON-serialisable ``obj`` in every process (a collective: every process
    must call it)."""
    import json

    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if is_primary() else None
    n = int(multihost_utils.broadcast_one_to_all(np.int32(0 if data is None else data.size)))
    buf = np.zeros(n, np.uint8)
    if data is not None:
        buf[:] = data
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buf)).tobytes())


def _run_on_primary(fn: Callable, args, kwargs, share_result: bool) -> Any:
    global _PRIMARY_DEPTH
    if _PRIMARY_DEPTH or jax.process_count() == 1:
        return fn(*args, **kwargs)
    out, error = None, None
    if is_primary():
        _PRIMARY_DEPTH += 1
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (re-raised below, after telling the others)
            error = e
        finally:
            _PRIMARY_DEPTH -= 1
    status = _broadcast_json(
        {"error": None if error is None else str(error),
         "input_error": isinstance(error, InputError),
         "kind": type(error).__name__, "result": out if share_result and error is None else None})
    if error is not None:
        raise error
    if status["error"] is not None:
        raise InputError(status["error"] if status["input_error"] else
                         f"process 0 failed in {fn.__qualname__}: {status['kind']}: "
                         f"{status['error']}")
    return out if is_primary() else status["result"]


def _on_primary(fn: Callable, share_result: bool) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return _run_on_primary(fn, args, kwargs, share_result)

    return wrapper


def primary_only(fn: Callable) -> Callable:
    """Decorate a function that writes files: in a multi-host run it runs in process 0 only
    (returning None elsewhere) and the others wait for it, so what it wrote is there for all;
    its exception is raised in every process. Nested primary-only calls run inside the outer
    one's section. A single-process run just calls it."""
    return _on_primary(fn, share_result=False)


def primary_decides(fn: Callable) -> Callable:
    """Like :func:`primary_only`, for a function that prepares files and returns a decision:
    every process gets process 0's (JSON-serialisable) return value."""
    return _on_primary(fn, share_result=True)


def primary_first(fn: Callable) -> Callable:
    """Decorate a function that fills a cache (data generation): process 0 runs it first while
    the others wait, then the others run it and find the cache filled."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = _run_on_primary(fn, args, kwargs, share_result=False)
        return out if is_primary() or _PRIMARY_DEPTH else fn(*args, **kwargs)

    return wrapper


def quiet_other_processes() -> None:
    """Logs and progress from process 0 only: the other processes log errors only (progress
    bars check :func:`is_primary`)."""
    import logging

    if not is_primary():
        logging.getLogger("stablejax").setLevel(logging.ERROR)
