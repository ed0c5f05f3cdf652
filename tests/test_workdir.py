"""What users do to a workdir: two runs at once, a resume with another config, damaged or odd files.

Fault injection at the level a user meets it: real processes holding and dying with the lock,
real runs resumed after their files were damaged, and the one-line answers the CLI gives.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxconv.checkpoint import Checkpoints
from jaxconv.cli import main
from jaxconv.compare import load_run
from jaxconv.train.config import ConfigError, validate
from jaxconv.train.loop import train
from jaxconv.train.resume import ConfigChanged, check_resume
from jaxconv.train.workdir import LOCK, RunLock, WorkdirBusy, settle_metrics
from tiny import tiny_config, write_experiment

pytestmark = pytest.mark.xdist_group("faults")  # shares the tiny run's compiled steps with test_faults


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def tiny(data_dir, **changes):
    return validate(tiny_config(data_dir, **changes), device_count=jax.device_count())


@pytest.fixture(scope="module")
def four_steps(data_dir, tmp_path_factory):
    """A finished tiny run of 4 steps (checkpoints 2 and 4), trained once; tests damage copies of it."""
    workdir = tmp_path_factory.mktemp("four") / "run"
    train(tiny(data_dir, num_train_steps=4), workdir, log=lambda _: None)
    return workdir


def copy_of(run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir, symlinks=True)
    return workdir


def records(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def steps_logged_once(workdir: pathlib.Path) -> bool:
    keys = [(r["split"], r["step"]) for r in records(workdir)]
    return len(keys) == len(set(keys))


# --- one run per workdir -------------------------------------------------------------------------------------


HOLDER = """
import pathlib, sys, time
from jaxconv.train.workdir import RunLock
RunLock(pathlib.Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold(workdir: pathlib.Path) -> subprocess.Popen:
    """Another process holding the workdir's lock, as a running `jaxconv train` does."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_on_a_workdir_in_use_is_refused_in_one_line_naming_the_holder(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    holder = hold(workdir)
    try:
        experiment = write_experiment(tmp_path / "exp.py", data_dir)
        assert main(["train", "--config", str(experiment), "--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"workdir {workdir} is in use by another run (pid {holder.pid} on {socket.gethostname()} since" in err
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_line(tmp_path):
    holder = hold(tmp_path)
    with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)  # no chance to release it
    holder.wait()
    messages: list[str] = []
    with RunLock(tmp_path, log=messages.append):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert len(messages) == 1 and f"(pid {holder.pid} on" in messages[0] and "no longer running" in messages[0]
    assert (tmp_path / LOCK).read_text() == ""  # released cleanly: the next run takes it without a word
    with RunLock(tmp_path, log=messages.append):
        pass
    assert len(messages) == 1


def test_without_flock_the_holders_pid_decides(tmp_path, monkeypatch):
    """Filesystems without flock (some network filesystems): a live holder on this host is respected,
    a dead one is taken over."""
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "since": 0}))
        with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    messages: list[str] = []
    with RunLock(tmp_path, log=messages.append):
        pass
    assert "no longer running" in messages[0]


# --- resuming with another config ---------------------------------------------------------------------------


def test_a_resume_refuses_changes_to_what_the_run_is_and_names_each_key(data_dir):
    stored = json.loads(json.dumps(tiny(data_dir).to_dict()))
    changed = tiny(data_dir, batch_size=16, image_size=20, learning_rate=0.1, seed=3,
                   model_options={"depths": (1, 1, 1), "shortcut": "A"})
    with pytest.raises(ConfigChanged) as refused:
        check_resume(stored, changed)
    message = str(refused.value)
    for part in ("batch_size 32 -> 16", "image_size 16 -> 20", "learning_rate 0.05 -> 0.1", "seed 0 -> 3",
                 'model_options.shortcut null -> "A"'):
        assert part in message
    assert "--allow-change batch_size,image_size,learning_rate,model_options.shortcut,seed" in message
    assert len(check_resume(stored, changed, {"all"})) == 6  # eval_batch_size follows batch_size, and passes
    assert set(check_resume(stored, changed, {"batch_size", "image_size", "learning_rate", "seed", "model_options"}))
    # Keys that do not change what the run is pass without a flag.
    free = tiny(data_dir, log_every_steps=1, eval_every_steps=4, checkpoint_every_steps=1, num_train_steps=100,
                keep_checkpoints=9)
    assert set(check_resume(stored, free)) == {"log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                                                "num_train_steps", "keep_checkpoints"}


def test_a_resumed_run_with_an_allowed_change_records_it(four_steps, tmp_path, capsys):
    workdir = copy_of(four_steps, tmp_path)
    base = ["train", "--workdir", str(workdir), "--config.num_train_steps=6"]
    assert main([*base, "--config.seed=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"jaxconv: error: workdir {workdir} holds a run trained with other values: seed 0 -> 5")
    assert Checkpoints(workdir, read_only=True).all_steps() == [2, 4]  # nothing was trained
    assert main([*base, "--config.seed=5", "--allow-change", "sed"]) == 2
    assert "--allow-change sed: not a config key; did you mean seed?" in capsys.readouterr().err
    assert main([*base, "--config.seed=5", "--allow-change", "seed"]) == 0
    err = capsys.readouterr().err
    assert "resuming with config.seed 0 -> 5" in err and "resuming with config.num_train_steps 4 -> 6" in err
    change = json.loads((workdir / "config_changes.jsonl").read_text())
    assert change["step"] == 4 and change["changes"] == {"num_train_steps": [4, 6], "seed": [0, 5]}
    assert json.loads((workdir / "config.json").read_text())["seed"] == 5
    assert steps_logged_once(workdir)


STATE_CHANGES = [  # (key, the run's value, the resume's value, whether the optimizer state keeps its structure)
    ("optimizer.name", "sgd", "adamw", False), ("optimizer.name", "sgd", "rmsprop", False),
    ("optimizer.grad_clip_norm", None, 1.0, False), ("optimizer.grad_clip_norm", 1.0, 2.0, True),
    ("optimizer.weight_decay", 1e-4, 0.0, False), ("optimizer.weight_decay", 1e-4, 5e-4, True),
    ("optimizer.momentum", 0.9, 0.0, False), ("optimizer.momentum", 0.9, 0.8, True),
    ("optimizer.nesterov", False, True, True), ("learning_rate", 0.05, 0.1, True),
]


@pytest.mark.parametrize("key,before,after,keeps", STATE_CHANGES)
def test_allow_change_takes_optimizer_changes_whose_state_still_fits_and_refuses_the_others(data_dir, key, before,
                                                                                           after, keeps):
    """--allow-change optimizer.name passed the check, then the restore failed in 600 characters blaming the model.
    What the check says agrees with the optimizer state optax really builds."""
    import optax

    from jaxconv.train.optim import build_optimizer

    group, _, field = key.rpartition(".")
    def config(value):
        if not group:
            return tiny(data_dir, **{field: value})
        return tiny(data_dir, optimizer={**tiny_config(data_dir).optimizer.to_dict(), field: value})
    params = {"conv": {"kernel": np.ones((3, 3, 2, 2)), "bias": np.ones(2)}}
    structure = [jax.tree_util.tree_structure(build_optimizer(config(v), optax.constant_schedule(0.1)).init(params))
                 for v in (before, after)]
    assert (structure[0] == structure[1]) == keeps
    stored = json.loads(json.dumps(config(before).to_dict()))
    if keeps:
        assert key in check_resume(stored, config(after), {key})
        return
    for allow in ({key}, {"all"}):
        with pytest.raises(ConfigChanged) as refused:
            check_resume(stored, config(after), allow)
        message = str(refused.value)
        assert f"a resume cannot change it to {json.dumps(after)}" in message and "--allow-change" not in message
        assert "--config.init_weights=" in message


@pytest.mark.parametrize("key,value", [("ema_decay", 0.99), ("freeze", "stem")])
def test_a_resume_cannot_add_a_moving_average_or_freeze_parameters(data_dir, key, value):
    stored = json.loads(json.dumps(tiny(data_dir).to_dict()))
    with pytest.raises(ConfigChanged, match=f"config.{key} null, and a resume cannot change it"):
        check_resume(stored, tiny(data_dir, **{key: value}), {"all"})


def test_a_resume_refused_for_another_optimizer_writes_nothing_and_one_that_fits_trains(four_steps, tmp_path, capsys):
    workdir = copy_of(four_steps, tmp_path)
    base = ["train", "--workdir", str(workdir), "--config.num_train_steps=6"]
    before = unchanged(workdir)
    assert main([*base, "--config.optimizer.name=adamw", "--allow-change", "optimizer.name"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f'jaxconv: error: workdir {workdir} holds a run trained with config.optimizer.name '
                              f'"sgd", and a resume cannot change it to "adamw"')
    assert unchanged(workdir) == before
    assert main([*base, "--config.optimizer.weight_decay=0.0005", "--allow-change", "optimizer.weight_decay"]) == 0
    assert "resuming with config.optimizer.weight_decay 0.0001 -> 0.0005" in capsys.readouterr().err
    assert Checkpoints(workdir, read_only=True).latest_step() == 6


def unchanged(workdir):
    return sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.name != LOCK)


def test_num_epochs_given_while_num_train_steps_decides_is_refused_not_ignored(four_steps, data_dir, tmp_path, capsys):
    """--config.num_epochs=0.5 trained default.py's 1000 steps; on a resume it said the schedule now spans the
    new length, then 'nothing to do'."""
    workdir = copy_of(four_steps, tmp_path)
    before = unchanged(workdir)
    assert main(["train", "--workdir", str(workdir), "--config.num_epochs=3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "jaxconv: error: --config.num_epochs=3: config.num_train_steps=4 (from the run's config.json) takes "
        "precedence, so it would change nothing; to train by epochs give --config.num_train_steps=None as well")
    assert unchanged(workdir) == before
    fresh = tmp_path / "fresh"
    experiment = write_experiment(tmp_path / "exp.py", data_dir)
    assert main(["train", "--config", str(experiment), "--workdir", str(fresh), "--config.num_epochs=0.5"]) == 2
    assert "config.num_train_steps=8 (from experiment file" in capsys.readouterr().err
    assert not fresh.exists()
    # Epochs instead of steps: 0.75 epochs of 8 steps is 6 steps.
    assert main(["train", "--workdir", str(workdir), "--config.num_epochs=0.75", "--config.num_train_steps=None"]) == 0
    err = capsys.readouterr().err
    assert "resuming with config.num_train_steps 4 -> null" in err and "resuming with config.num_epochs" in err
    assert Checkpoints(workdir, read_only=True).latest_step() == 6


def test_the_resume_line_for_num_epochs_says_when_num_train_steps_decides(data_dir, tmp_path):
    from jaxconv.train.resume import record_changes

    lines = []
    record_changes(tiny(data_dir, schedule="cosine"), tmp_path, 4, {"num_epochs": (10.0, 3.0)}, lines.append)
    assert lines == ["resuming with config.num_epochs 10.0 -> 3.0 (config.num_train_steps=8 decides the run's "
                     "length: this changes nothing)"]


def test_a_resume_that_would_end_before_the_runs_step_is_refused_and_writes_nothing(four_steps, tmp_path, capsys):
    """config.json said 3 steps while the checkpoint and summary were at 6: 'already trained for 3 steps'."""
    workdir = copy_of(four_steps, tmp_path)
    before = unchanged(workdir)
    assert main(["train", "--workdir", str(workdir), "--config.num_train_steps=2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"jaxconv: error: config.num_train_steps=2: is 2 steps, and the run in {workdir} is at step 4 already: a "
        f"resume keeps or lengthens a run; give 4 steps or more (jaxconv eval --step evaluates an earlier checkpoint)")
    assert unchanged(workdir) == before
    assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == 4


# --- the files a run depends on ------------------------------------------------------------------------------


def test_a_config_json_without_a_key_every_run_records_is_refused_not_filled_with_a_default(four_steps, tmp_path,
                                                                                           capsys):
    """The harness's case: with its `model` key gone, `train --workdir` trained the default model on, and eval
    evaluated it. Both now name the file and the key; nothing is trained or written."""
    workdir = copy_of(four_steps, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    del config["model"]
    (workdir / "config.json").write_text(json.dumps(config))
    before = sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.name != LOCK)
    for args in (["train", "--workdir", str(workdir), "--config.num_train_steps=6"], ["eval", "--workdir", str(workdir)]):
        assert main(args) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"jaxconv: error: {workdir / 'config.json'}: has no model, which every jaxconv run records; the run's "
            f"config is damaged (restore it, or train anew with --config FILE in another --workdir)")
    assert sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.name != LOCK) == before


def test_a_resume_after_a_crash_logs_each_step_once_and_sets_aside_a_torn_line(data_dir, tmp_path):
    workdir = tmp_path / "run"
    train(tiny(data_dir, num_train_steps=6), workdir, log=lambda _: None)
    # As if killed after logging step 6 and while writing the next line, before checkpoint 6 was sealed.
    Checkpoints(workdir, read_only=True).close()
    os.rename(workdir / "checkpoints" / "6", tmp_path / "lost-6")
    (workdir / "summary.json").unlink()
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "split": "tra')
    messages: list[str] = []
    summary = train(tiny(data_dir, num_train_steps=6), workdir, log=messages.append)
    assert summary["steps"] == 6 and any("resuming from step 4" in m for m in messages)
    assert any("metrics.jsonl: moved" in m and "steps after 4" in m and "1 line(s) that are not JSON" in m
               for m in messages)
    assert steps_logged_once(workdir) and max(r["step"] for r in records(workdir)) == 6
    superseded = (workdir / "metrics_superseded.jsonl").read_text().splitlines()
    assert superseded[-1] == '{"step": 7, "split": "tra'  # kept, not deleted
    assert load_run(workdir).notes == ()


def test_every_checkpoint_damaged_says_it_starts_over_and_keeps_metrics_consistent(data_dir, four_steps, tmp_path):
    workdir = copy_of(four_steps, tmp_path)
    for step in (2, 4):
        for path in (workdir / "checkpoints" / str(step)).rglob("*"):
            if path.is_file():
                path.write_bytes(b"\xff\xfe")
    messages: list[str] = []
    summary = train(tiny(data_dir, num_train_steps=4), workdir, log=messages.append)
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert any("starting over from step 0" in m for m in messages)
    assert steps_logged_once(workdir)
    assert len(list((workdir / "broken_checkpoints").iterdir())) == 2  # set aside, not deleted


def test_a_torn_last_line_is_reported_by_report_which_goes_on(four_steps, tmp_path, capsys):
    workdir = copy_of(four_steps, tmp_path)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "spl')
    assert main(["report", str(workdir), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl:" in err and "the last line is cut short" in err
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.parametrize("oddity", ["file", "symlink_loop", "overwritten"])
def test_an_unusable_latest_checkpoint_is_skipped_by_eval_and_set_aside_by_a_resume(four_steps, tmp_path, capsys,
                                                                                    oddity):
    workdir = copy_of(four_steps, tmp_path)
    latest = workdir / "checkpoints" / "4"
    if oddity == "overwritten":  # every file of it, the manifest and Orbax's metadata included
        for path in latest.rglob("*"):
            if path.is_file():
                path.write_bytes(b"\xff\xfe\x00x")
    else:
        for path in sorted(latest.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        latest.rmdir()
        if oddity == "file":
            latest.write_text("my notes\n")
        else:
            latest.symlink_to(latest)
    capsys.readouterr()
    assert main(["eval", "--workdir", str(workdir), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 2 and "checkpoint 4" in err and "Traceback" not in err
    assert main(["train", "--workdir", str(workdir), "--config.num_train_steps=6"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint 4 is unusable" in err and "resuming from step 2" in err
    (aside,) = (workdir / "broken_checkpoints").iterdir()
    if oddity == "file":
        assert aside.read_text() == "my notes\n"  # the user's file, moved, not overwritten
    assert steps_logged_once(workdir)


def test_a_truncated_unsealed_latest_checkpoint_costs_one_line_not_a_traceback_per_array(four_steps, tmp_path,
                                                                                        capfd):
    """A run killed before sealing its newest checkpoint, whose file was then cut short: the resume
    says so in one line (it printed Orbax's abandoned reads' tracebacks, 9,000 lines for ResNet-20)."""
    workdir = copy_of(four_steps, tmp_path)
    latest = workdir / "checkpoints" / "4"
    (latest / "jaxconv_manifest.json").unlink()
    victim = max((p for p in (latest / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:1000])
    capfd.readouterr()
    assert main(["train", "--workdir", str(workdir), "--config.num_train_steps=6"]) == 0
    err = capfd.readouterr().err
    assert "checkpoint 4 is broken (unreadable" in err and "resuming from step 2" in err
    assert "Exception ignored" not in err and "Traceback" not in err and "TensorStore details" not in err


def test_a_copied_finished_run_names_the_paths_where_it_is_now(four_steps, tmp_path, capsys):
    workdir = copy_of(four_steps, tmp_path)  # its summary.json was written in four_steps
    capsys.readouterr()
    assert main(["train", "--workdir", str(workdir)]) == 0
    out, err = capsys.readouterr()
    assert "nothing to do" in err and str(four_steps) not in out
    assert f"workdir: {workdir.absolute()}" in out and f"metrics: {workdir.absolute() / 'metrics.jsonl'}" in out
    assert f"checkpoints: {workdir.absolute() / 'checkpoints'}" in out


def test_a_finished_run_stopped_before_its_summary_gets_it_on_the_next_start(four_steps, tmp_path, capsys):
    """Killed after sealing its last checkpoint, before writing summary.json: the next start writes it
    from the run's records (it said "nothing to do" and left the run incomplete for ever)."""
    workdir = copy_of(four_steps, tmp_path)
    finished = json.loads((workdir / "summary.json").read_text())
    (workdir / "summary.json").unlink()
    capsys.readouterr()
    assert main(["train", "--workdir", str(workdir)]) == 0
    out, err = capsys.readouterr()
    assert "stopped before writing its summary" in err and "(wall time unknown)" not in out
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert 0 < summary["wall_time_s"] <= finished["wall_time_s"]  # as the last checkpoint recorded it
    assert summary["final_eval"] == finished["final_eval"] and summary["best_eval"] == finished["best_eval"]
    assert load_run(workdir).completed
    assert main(["train", "--workdir", str(workdir)]) == 0
    assert "nothing to do" in capsys.readouterr().err


@pytest.mark.parametrize("override,needle", [
    ("--config.num_epochs=1e15", "config.num_epochs=1000000000000000.0: is 8e+15 steps"),  # ran 10^16 steps
    ("--config.warmup_epochs=1e30", "config.warmup_epochs=1e+30: is "),  # an OverflowError traceback
])
def test_epochs_beyond_what_a_run_can_count_are_refused_in_one_line(data_dir, tmp_path, capsys, override, needle):
    experiment = write_experiment(tmp_path / "exp.py", data_dir)
    args = ["train", "--config", str(experiment), "--workdir", str(tmp_path / "run"), override]
    if "num_epochs" in override:
        args.append("--config.num_train_steps=None")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and "at most 2,147,483,647 steps fit a run" in err[-1]
    assert not (tmp_path / "run").exists()


def test_eval_of_a_run_whose_config_json_holds_a_wrong_type_is_one_line(four_steps, tmp_path, capsys):
    workdir = copy_of(four_steps, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**config, "eval_batch_size": True}))
    assert main(["eval", "--workdir", str(workdir)]) == 2  # was a TypeError traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.eval_batch_size=True: must be a positive integer" in err[0]


def photos(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder dataset: three classes of 16 plain 12 px images."""
    import tensorflow as tf

    folder = tmp_path / "photos"
    for c, shade in (("a", 40), ("b", 120), ("c", 200)):
        (folder / c).mkdir(parents=True)
        for i in range(16):
            tf.io.write_file(str(folder / c / f"{i}.png"), tf.io.encode_png(np.full((12, 12, 3), shade, np.uint8)))
    return folder


def folder_run(folder: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    return ["train", "--workdir", str(workdir), "--config.dataset=folder", f"--config.folder={folder}",
            "--config.image_size=16", "--config.batch_size=8", "--config.num_train_steps=2",
            "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2", "--config.warmup_epochs=0",
            "--config.model=resnet20", "--config.model_options.depths=(1, 1, 1)"]


def test_an_image_gone_while_the_run_reads_it_stops_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    """A file deleted under a running run: the evaluation's read failed with a TensorFlow traceback."""
    from jaxconv.train import loop

    folder = photos(tmp_path)
    real = loop.Evaluate.__call__

    def evaluate_after_a_deletion(self, run):
        shutil.rmtree(folder)  # every image, the evaluation split's too
        return real(self, run)

    monkeypatch.setattr(loop.Evaluate, "__call__", evaluate_after_a_deletion)
    capsys.readouterr()
    assert main(folder_run(folder, tmp_path / "run")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("jaxconv: stopped: reading the data failed at step 2 (NotFoundError: ")
    assert "Traceback" not in "\n".join(err)


def test_the_input_pipeline_running_out_of_memory_is_said_so_not_blamed_on_the_data(tmp_path, capsys, monkeypatch):
    """TensorFlow's ResourceExhaustedError is an OpError, which the loop reports as a file changed under the run."""
    import tensorflow as tf

    from jaxconv.train import loop

    def out_of_memory(self, run):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,4000,4000,3]")

    monkeypatch.setattr(loop.Evaluate, "__call__", out_of_memory)
    folder, workdir = photos(tmp_path), tmp_path / "run"
    capsys.readouterr()
    assert main(folder_run(folder, workdir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("jaxconv: error: jaxconv train ran out of memory (OOM when allocating tensor with shape[64,4000,"
                       "4000,3]); lower --config.batch_size or --config.image_size; the checkpoints written so far are "
                       "kept, and the same command resumes")
    assert (workdir / "checkpoints").is_dir()


def test_renaming_a_folder_class_before_a_resume_is_refused_not_trained_on_swapped_labels(tmp_path, capsys):
    """Labels are the sorted class folders: renaming `a` to `z` made label 0 mean `b` in the resumed run (and in
    `eval`) without a word; a class added met the checkpoint as a shape mismatch."""
    folder, workdir = photos(tmp_path), tmp_path / "run"
    args = folder_run(folder, workdir)
    assert main(args) == 0
    assert json.loads((workdir / "dataset.json").read_text())["classes"] == ["a", "b", "c"]
    (folder / "a").rename(folder / "z")
    capsys.readouterr()
    assert main([*args[:3], "--config.num_train_steps=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "the dataset's classes changed since the run in" in err[-1] and "gone: a; new: z" in err[-1]
    assert main(["eval", "--workdir", str(workdir)]) == 2
    assert "an evaluation would read its labels as other classes" in capsys.readouterr().err
    (folder / "z").rename(folder / "a")
    (folder / "a" / "0.png").unlink()  # fewer images: a line, and the run goes on
    assert main([*args[:3], "--config.num_train_steps=4"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: the (train|eval) split had (\d+) examples when the run started and has \d+ now", err), err


def test_a_relative_folder_is_recorded_absolute_and_a_gone_one_says_what_helps(tmp_path, capsys, monkeypatch):
    """--config.folder=photos was recorded as typed: eval from another directory said 'photos is not a directory';
    the same folder spelled otherwise on a resume counted as a change."""
    photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "run"
    args = folder_run(pathlib.Path("photos"), workdir)
    assert main(args) == 0
    assert json.loads((workdir / "config.json").read_text())["folder"] == str(tmp_path / "photos")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main([*args[:3], "--config.folder=../photos/", "--config.num_train_steps=4"]) == 0
    err = capsys.readouterr().err
    assert "config.folder" not in err and not (workdir / "config_changes.jsonl").read_text().count('"folder"')
    (tmp_path / "photos").rename(tmp_path / "moved")
    assert main(["eval", "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"jaxconv: error: {workdir / 'config.json'} records the run's images in config.folder={tmp_path / 'photos'}, "
        f"which is not a directory (any more): eval reads the run's evaluation images from there; put the folder back, "
        f"or resume with `jaxconv train --workdir {workdir} --config.folder=NEW_PLACE --allow-change folder` if it "
        f"moved")
    assert main([*args[:3], "--config.num_train_steps=6"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "which is not a directory: if the images moved, give their new place with --config.folder=NEW_PLACE "
        "--allow-change folder")


def test_a_folder_given_with_another_dataset_is_refused_not_ignored(data_dir):
    with pytest.raises(ConfigError, match=r"config.folder='photos': only dataset 'folder' reads it, and "
                                          r"config.dataset is 'shapes'; drop it or give --config.dataset=folder"):
        tiny(data_dir, folder="photos")


def test_settling_metrics_keeps_rollbacks_and_earlier_steps(tmp_path):
    lines = [{"step": 2, "split": "train"}, {"step": 4, "split": "rollback"}, {"step": 4, "split": "eval"},
             {"step": 6, "split": "train"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    settle_metrics(tmp_path, 4, log=lambda _: None)
    assert records(tmp_path) == lines[:3]
    settle_metrics(tmp_path, 4, log=lambda m: pytest.fail(m))  # nothing left to move: silent


# --- stopping ------------------------------------------------------------------------------------------------------


def test_sigterm_before_the_first_step_exits_0_with_a_line_and_the_run_starts_again(data_dir, tmp_path):
    workdir = tmp_path / "run"
    experiment = write_experiment(tmp_path / "exp.py", data_dir, num_train_steps=4)
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    command = [sys.executable, "-m", "jaxconv.cli", "train", "--config", str(experiment), "--workdir", str(workdir)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()  # "experiment ... -> workdir ...": train() starts now
    assert "-> workdir" in line
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "SIGTERM" in err and "run the same command to" in err
    # Two quick Ctrl-Cs while it trains: the first asks for a checkpoint, the second stops at once; no traceback.
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    while "-> workdir" not in process.stderr.readline():
        pass
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode in (0, 130), err  # 0: it had finished its step and saved before the second one
    assert "Traceback" not in err and "Ctrl-C" in err
    assert main(command[3:]) == 0  # the same command, run again (in this process: no second start-up)
    assert steps_logged_once(workdir) and max(r["step"] for r in records(workdir)) == 4


def test_a_bad_value_in_a_runs_config_json_is_said_to_come_from_there(tmp_path, capsys):
    """'config.learning_rate='0.1': must be a finite number' named no file, and the user had given no such flag."""
    from jaxconv.cli import main
    from jaxconv.train.config import base_config

    stored = json.loads(base_config().to_json())
    stored["learning_rate"] = "0.1"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(stored))
    assert main(["train", "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "jaxconv: error: the run's config.json holds config.learning_rate='0.1': must be a finite number"
    assert main(["train", "--workdir", str(tmp_path / "run"), "--config.learning_rate=x"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "jaxconv: error: config.learning_rate='x': expected a number"
