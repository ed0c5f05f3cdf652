"""Several processes on one machine: JAX's distributed runtime over 127.0.0.1 with gloo collectives.

Two processes with two virtual CPU devices each must train exactly like one process with
four devices; when one process dies, the other must stop with an error, not hang.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxconv.checkpoint import Checkpoints
from jaxconv.cli import main
from jaxconv.parallel import LaunchError, detect_cluster, initialize_distributed
from conftest import xla_flags_for_tests
from tiny import write_experiment

pytestmark = pytest.mark.xdist_group("distributed")

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return write_experiment(root / "exp.py", root / "tfds", augment="cifar", checkpoint_every_steps=4)


def launch(experiment, workdir, devices, *extra, optimised: bool = True) -> subprocess.Popen:
    # Where values are compared, XLA's optimised code, as users run it, not the suite's unoptimised one
    # (conftest): unoptimised, one process and two ended 7.5e-5 apart in final loss (the cross-device sums run in
    # another order); optimised, within 1e-5.
    flags = f"--xla_force_host_platform_device_count={devices}" if optimised else xla_flags_for_tests(devices)
    env = {**os.environ, "XLA_FLAGS": flags, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxconv.cli", "train", "--config", str(experiment), "--workdir", str(workdir), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def final_params(workdir: pathlib.Path):
    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoints.latest_step()
    # Written by processes with other devices: restore onto this process's first device.
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                                    checkpoints.manager.item_metadata(step)["state"]["params"])
    checkpoints.close()
    restored = ocp.PyTreeCheckpointer().restore(checkpoints.step_directory(step) / "state", args=ocp.args.PyTreeRestore(
        item={"params": target}, restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}),
        partial_restore=True))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(restored["params"])}


def test_two_processes_train_like_one_process_with_the_same_devices(experiment, tmp_path):
    # The reference and the two processes run at once: each spends much of its start importing and compiling
    # on one thread, and the two processes wait on each other in their collectives.
    single = launch(experiment, tmp_path / "single", 4)
    port = free_port()
    workdir = tmp_path / "multi"
    processes = [launch(experiment, workdir, 2, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                        "--process-id", str(k)) for k in range(2)]
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err
    reference = json.loads((tmp_path / "single" / "summary.json").read_text())
    results = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, results):
        assert p.returncode == 0, err
    assert "multi-process run: 2 processes" in results[0][1]
    # Only process 0 reports. Gloo's C++ prints connection lines from both, which its threads may interleave:
    # what is left without them must be made of their words alone.
    gloo = "[Gloo] Rank is connected to peer ranks. Expected number of connected peer ranks is :".split()
    left = re.sub(r"\d+", " ", results[1][0] + "\n" + results[1][1]).split()
    assert set(left) <= set(gloo), left

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 4 and reference["devices"] == 4
    assert summary["final_eval"]["examples"] == reference["final_eval"]["examples"] == 40
    assert summary["final_eval"]["loss"] == pytest.approx(reference["final_eval"]["loss"], rel=1e-5)
    multi, single_params = final_params(workdir), final_params(tmp_path / "single")
    assert multi.keys() == single_params.keys()
    for key in multi:
        np.testing.assert_allclose(multi[key], single_params[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_when_one_process_dies_the_other_stops_within_a_bounded_time(experiment, tmp_path):
    port = free_port()
    workdir = tmp_path / "run"
    slow = ["--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000", "--heartbeat-timeout", "10"]
    processes = [launch(experiment, workdir, 2, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                        "--process-id", str(k), *slow, optimised=False) for k in range(2)]
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):  # both are training
        assert time.time() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    try:
        _, err = processes[0].communicate(timeout=120)
    except subprocess.TimeoutExpired:
        processes[0].kill()
        pytest.fail("the surviving process did not stop within 120 s")
    processes[1].communicate()
    assert processes[0].returncode != 0
    assert time.time() - killed_at < 120
    assert err.strip(), "the surviving process must say why it stopped"


def test_processes_started_with_other_settings_are_refused_on_every_process(experiment, tmp_path):
    """Each process trained with its own --config values (config.json recorded process 0's), and processes on two
    workdirs waited for ever for each other's checkpoints: now one line on each, exit 2, nothing written."""
    port = free_port()
    launches = [("--process-id", "0"), ("--process-id", "1", "--config.seed=3", "--config.learning_rate=0.5")]
    processes = [launch(experiment, tmp_path / "run", 2, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                        *extra, optimised=False) for extra in launches]
    (_, first), (_, second) = (p.communicate(timeout=300) for p in processes)
    assert [p.returncode for p in processes] == [2, 2]
    assert first.strip().splitlines()[-1] == ("jaxconv: error: process(es) 1 were started with other settings than "
                                              "process 0 (see their output): every process of a run needs the same "
                                              "settings")
    assert second.strip().splitlines()[-1] == ("jaxconv: error: process 1 was started with learning_rate=0.5 where "
                                               "process 0 has 0.05 (and 1 more: seed): every process of a run needs "
                                               "the same settings")
    assert "Traceback" not in first + second and not (tmp_path / "run").exists()


def test_allow_change_given_to_one_process_only_is_refused_on_every_process(experiment, tmp_path):
    """Process 1 refused the resume at once but did not exit; both hung ~5 minutes, then aborted."""
    port = free_port()
    launches = [("--process-id", "0"), ("--process-id", "1", "--allow-change", "seed")]
    processes = [launch(experiment, tmp_path / "run", 2, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                        *extra, optimised=False) for extra in launches]
    (_, first), (_, second) = (p.communicate(timeout=300) for p in processes)
    assert [p.returncode for p in processes] == [2, 2]
    assert second.strip().splitlines()[-1] == ("jaxconv: error: process 1 was started with --allow-change=['seed'] "
                                               "where process 0 has []: every process of a run needs the same settings")
    assert "Traceback" not in first + second and not (tmp_path / "run").exists()


def test_a_launch_the_others_never_join_is_one_line_before_jaxs_own_deadline(tmp_path):
    """JAX waits initialization_timeout for the others, blocked in C++ (no SIGTERM or Ctrl-C handled), then
    aborts the process with a C++ stack dump: jaxconv waits in Python and stops 10 s before that."""
    script = ("import os, time\n"
              "from jaxconv.parallel import JoinTimeout, initialize_distributed\n"
              "began = time.time()\n"
              "try:\n"
              f"    initialize_distributed('127.0.0.1:{free_port()}', 2, 0, initialization_timeout=13, log=print)\n"
              "except JoinTimeout as e:\n"
              "    print(f'after {time.time() - began:.0f} s: {e}', flush=True)\n"
              "os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("waiting up to 13 s for the 2 processes to join at 127.0.0.1:"), done.stderr
    assert re.fullmatch(r"after 3 s: the 2 processes did not all join at 127\.0\.0\.1:\d+ within 3 s: start every "
                        r"process with the same --coordinator .*", lines[1]), lines


def test_ctrl_c_in_one_of_several_processes_becomes_the_preemption_every_process_saves_at(monkeypatch, capsys):
    """A KeyboardInterrupt in one process left every process waiting in a collective for ever (even SIGTERM did not
    end them); a first Ctrl-C is now a SIGTERM to this process, which JAX's preemption service tells the others."""
    from jaxconv.train import signals

    sent, before = [], signal.getsignal(signal.SIGINT)  # (ignored where the suite runs in the background)
    monkeypatch.setattr(signals.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    with signals._interrupt_as_preemption() as interrupted:
        signal.raise_signal(signal.SIGINT)
        assert sent == [(os.getpid(), signal.SIGTERM)] and interrupted
    assert "every process stops after the same step and saves a checkpoint" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"coordinator": "127.0.0.1:1234"}, "--num-processes, --process-id missing"),
        ({"coordinator": "nohostport", "num_processes": 2, "process_id": 0}, "expected HOST:PORT"),
        ({"coordinator": "127.0.0.1:1234", "num_processes": 2, "process_id": 2}, "must be in 0..1"),
        # any digits were a port: JAX then waited its 300 s and aborted with a C++ stack dump
        ({"coordinator": "127.0.0.1:99999", "num_processes": 2, "process_id": 0}, "a port is 1..65535"),
    ],
)
def test_incomplete_launch_settings_are_refused(kwargs, needle):
    with pytest.raises(LaunchError, match=needle):
        initialize_distributed(**kwargs)


def test_launch_settings_error_from_the_command_line(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path / "w"), "--process-id", "1"]) == 2
    err = capsys.readouterr().err
    assert "--coordinator, --num-processes missing" in err and not (tmp_path / "w").exists()


def test_slurm_and_tpu_pod_launches_are_detected(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TPU_", "MEGASCALE_")):
            monkeypatch.delenv(key)
    assert detect_cluster() is None
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "0"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert detect_cluster() == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: an ordinary one-process run
    assert detect_cluster() is None
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1v-n-0,t1v-n-1")
    assert detect_cluster() == "tpu"


def test_launch_settings_from_the_environment_are_checked(monkeypatch):
    monkeypatch.setenv("JAXCONV_NUM_PROCESSES", "two")
    with pytest.raises(LaunchError, match="JAXCONV_NUM_PROCESSES"):
        initialize_distributed()
