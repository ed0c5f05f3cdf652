"""Data parallelism over every device of every process, with shard_map (default) or pmap.

The steps in ``jaxconv.train.steps`` are per-device functions that communicate over the
axis 'data'. ``DataParallel`` runs them:

* 'shard_map': jax.jit(jax.shard_map(step)) over a 1-D mesh of all devices of all processes.
  The state is a global array replicated over the mesh; batches are global arrays sharded
  along their first axis, assembled from each process's local part.
* 'pmap': jax.pmap(step, axis_name='data'). The state carries a leading axis of local
  devices; batches are split across the local devices; pmap's collectives span all processes.

Either way the canonical state — what checkpoints store — is the mesh-replicated global form.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconv.errors import RunFailure, UserError

AXIS = "data"


class LaunchError(UserError, ValueError):
    """The multi-process launch settings are incomplete or inconsistent."""


def detect_cluster() -> str | None:
    """'slurm' under `srun` with several tasks, 'tpu' on a Cloud TPU VM, else None.

    These are the launches `jax.distributed.initialize()` configures by itself.
    """
    env = os.environ
    slurm_keys = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm_keys) and int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if env.get("TPU_WORKER_HOSTNAMES", "").count(",") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    if env.get("TPU_ACCELERATOR_TYPE") and pathlib.Path("/dev/accel0").exists():
        return "tpu"
    return None


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout: int = 100,
    initialization_timeout: int = 300,
    log: Callable[[str], None] | None = None,
) -> str:
    """Starts JAX's multi-controller runtime when this is one process of several; describes the launch.

    Explicit settings (arguments, or JAXCONV_COORDINATOR / JAXCONV_NUM_PROCESSES /
    JAXCONV_PROCESS_ID) win; otherwise SLURM (`srun`) and Cloud TPU pods are detected.
    Must run before anything else touches JAX's devices. If a process dies, the others stop
    with an error within about ``heartbeat_timeout`` seconds instead of waiting forever.
    """
    env = os.environ
    coordinator = coordinator or env.get("JAXCONV_COORDINATOR") or None
    if num_processes is None and env.get("JAXCONV_NUM_PROCESSES"):
        num_processes = _integer("JAXCONV_NUM_PROCESSES", env["JAXCONV_NUM_PROCESSES"])
    if process_id is None and env.get("JAXCONV_PROCESS_ID"):
        process_id = _integer("JAXCONV_PROCESS_ID", env["JAXCONV_PROCESS_ID"])
    explicit = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if any(v is not None for v in explicit.values()):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise LaunchError(f"{', '.join(missing)} missing: --coordinator HOST:PORT, --num-processes N and "
                              "--process-id K go together (or JAXCONV_COORDINATOR, JAXCONV_NUM_PROCESSES, "
                              "JAXCONV_PROCESS_ID)")
        if not re.fullmatch(r"[\w.\-\[\]:]+:\d+", coordinator):
            raise LaunchError(f"--coordinator {coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:12345")
        if not 1 <= int(coordinator.rsplit(":", 1)[1]) <= 65535:
            raise LaunchError(f"--coordinator {coordinator!r}: a port is 1..65535, e.g. 10.0.0.1:12345")
        if num_processes < 1:
            raise LaunchError(f"--num-processes {num_processes}: must be at least 1")
        if not 0 <= process_id < num_processes:
            raise LaunchError(f"--process-id {process_id}: must be in 0..{num_processes - 1}")
        if num_processes == 1:
            return "single process"
        kind = f"{num_processes} processes, coordinator {coordinator}"
    else:
        cluster = detect_cluster()
        if cluster is None:
            return "single process"
        kind = f"{cluster} (detected)"
    # CPU devices talk to other processes through gloo; GPUs and TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if log is not None and process_id == 0:
        log(f"waiting up to {initialization_timeout} s for the {num_processes} processes to join at {coordinator}")
    _join(initialization_timeout, coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
          heartbeat_timeout_seconds=heartbeat_timeout, initialization_timeout=initialization_timeout)
    return f"{kind}: process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local devices"


class JoinTimeout(RunFailure):
    """The other processes of a multi-process run did not join in time."""


def _join(timeout: int, **settings) -> None:
    """jax.distributed.initialize, waited for in the main thread: there a SIGTERM or Ctrl-C is handled (inside the
    call, blocked in C++, neither was), and a launch the others never join is one line a few seconds before
    JAX's own deadline, which aborts the process with a C++ stack dump."""
    import threading

    failure: list[BaseException] = []

    def join() -> None:
        try:
            jax.distributed.initialize(**settings)
        except BaseException as e:  # noqa: BLE001 -- handed to the main thread
            failure.append(e)

    thread = threading.Thread(target=join, name="jaxconv-join", daemon=True)
    thread.start()
    thread.join(max(1, timeout - 10))
    if thread.is_alive():
        raise JoinTimeout(
            f"the {settings['num_processes']} processes did not all join at {settings['coordinator_address']} "
            f"within {timeout - 10} s: start every process with the same --coordinator and --num-processes and its "
            f"own --process-id (0..{settings['num_processes'] - 1}), and check that the address is this machine's "
            f"or reachable from it")
    if failure:
        raise failure[0]


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"{name}={text!r}: expected an integer") from None


def check_same_on_every_process(settings: dict) -> None:
    """Raises LaunchError on every process when one was started with other ``settings`` than process 0 (a flat
    dict of JSON values): the error names this process's first difference, or the processes that differ.
    Processes that disagree would train one run with two learning rates, or wait for ever for each other's
    checkpoints in two workdirs."""
    if jax.process_count() == 1:
        return
    import json

    from jax.experimental import multihost_utils

    text = json.dumps(settings, sort_keys=True, default=str).encode()
    mine = json.loads(text)
    lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(text)))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:len(text)] = np.frombuffer(text, np.uint8)
    first = np.asarray(multihost_utils.broadcast_one_to_all(padded))
    theirs = json.loads(bytes(first[:int(lengths[0])]).decode())
    differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    flags = np.asarray(multihost_utils.process_allgather(np.int32(bool(differ)))).reshape(-1)
    if not flags.any():
        return
    if differ:
        key = differ[0]
        more = f" (and {len(differ) - 1} more: {', '.join(differ[1:4])})" if len(differ) > 1 else ""
        raise LaunchError(f"process {jax.process_index()} was started with {key}={mine.get(key)!r} where process 0 "
                          f"has {theirs.get(key)!r}{more}: every process of a run needs the same settings")
    others = ", ".join(str(i) for i in np.flatnonzero(flags))
    raise LaunchError(f"process(es) {others} were started with other settings than process 0 (see their output): "
                      f"every process of a run needs the same settings")


def on_first_process(fn: Callable[[], None], name: str = "jaxconv_prepare") -> None:
    """Runs ``fn`` on process 0 while the others wait at a barrier (a no-op barrier alone)."""
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        fn()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def data_mesh() -> Mesh:
    """A 1-D mesh named 'data' over every device of every process."""
    return Mesh(np.asarray(jax.devices()), (AXIS,))


class DataParallel:
    """Compiles per-device steps and moves states and batches to where they run."""

    def __init__(self, kind: str = "shard_map", mesh: Mesh | None = None):
        if kind not in ("shard_map", "pmap"):
            raise ValueError(f"parallel must be 'shard_map' or 'pmap', got {kind!r}")
        self.kind = kind
        self.mesh = mesh or data_mesh()
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.local_devices = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
        # pmap's operands: a leading axis over this process's devices.
        self.per_local_device = NamedSharding(Mesh(np.asarray(self.local_devices), ("local",)), P("local"))

    @property
    def device_count(self) -> int:
        return self.mesh.size

    # --- states -------------------------------------------------------------------------------

    def replicate(self, state):
        """Canonical (mesh-replicated) state -> the form the compiled steps take."""
        if self.kind == "shard_map":
            return state
        count = len(self.local_devices)

        def stack(x):
            local = np.asarray(x.addressable_data(0))
            return jax.device_put(np.broadcast_to(local[None], (count, *local.shape)), self.per_local_device)

        return jax.tree_util.tree_map(stack, state)

    def canonical(self, state):
        """The form the compiled steps take -> mesh-replicated global state (for checkpoints)."""
        if self.kind == "shard_map":
            return state
        def first_copy(x):  # one device's slice of the leading (device) axis
            return np.asarray(x.addressable_data(0)).reshape(x.shape[1:])

        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, first_copy(x)), state
        )

    def put_replicated(self, tree):
        """Host values (identical on every process) -> mesh-replicated global arrays."""
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), tree
        )

    # --- batches -------------------------------------------------------------------------------

    def shard_batch(self, batch: dict[str, np.ndarray]):
        """This process's part of a global batch -> device arrays for the compiled step."""
        if self.kind == "shard_map":
            return {k: jax.make_array_from_process_local_data(self.sharded, v) for k, v in batch.items()}
        count = len(self.local_devices)
        return {
            k: jax.device_put(v.reshape(count, v.shape[0] // count, *v.shape[1:]), self.per_local_device)
            for k, v in batch.items()
        }

    # --- steps ---------------------------------------------------------------------------------

    def compile(self, step: Callable, *, donate_state: bool, returns_state: bool) -> Callable:
        """``step(state, batch) -> outputs`` run on every device; outputs are replicated."""
        out_specs = (P(), P()) if returns_state else P()
        if self.kind == "shard_map":
            # check_vma=False gives pmap's semantics: inside the step the replicated state is a
            # per-device value, so gradients are per device and the step averages them itself
            # (with checking on, JAX would psum the gradient of the replicated parameters).
            mapped = jax.shard_map(step, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=out_specs,
                                   check_vma=False)
            return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())
        return jax.pmap(step, axis_name=AXIS, devices=self.local_devices if jax.process_count() == 1 else None,
                        donate_argnums=(0,) if donate_state else ())

    def first(self, tree):
        """A replicated output (metrics) as host numbers: pmap outputs carry a device axis."""
        tree = jax.device_get(tree)
        if self.kind == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], tree)
        return tree


__all__ = ["AXIS", "DataParallel", "LaunchError", "data_mesh", "detect_cluster", "initialize_distributed",
           "on_first_process"]
