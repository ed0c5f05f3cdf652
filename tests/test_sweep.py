"""Sweeps (scripts/sweep.py, jaxconv.train.sweep): a mistake is one line before anything runs or is written; a run
killed or stopped says so; the SLURM script runs from where the sweep was planned."""

from __future__ import annotations

import pathlib

import pytest

from jaxconv.train.sweep import SweepError, plan, slurm_array

REPO = pathlib.Path(__file__).resolve().parents[1]
HEAD = ("from jaxconv.train.config import base_config\nVARIANTS = ('quick', 'full')\n\n\n"
        "def get_config(variant='quick'):\n    return base_config()\n\n\n")


@pytest.mark.parametrize("body, needle", [
    ("def get_config(:\n    pass\n", "importing it failed: SyntaxError: invalid syntax (bad.py, line 1)"),
    (HEAD + "def get_runs(variant):\n    return [1, 2]\n", "get_runs() returned a list; it must return a dict"),
    (HEAD + "def get_runs(variant):\n    return {'quick': {'a': {}}}[variant]\n",
     "get_runs('full') failed: KeyError: 'full'"),
    (HEAD + "def get_runs(variant):\n    return {'../../escape': {}}\n",
     "run name '../../escape' would leave the sweep's folder"),
    (HEAD + "def get_runs(variant):\n    return {'a/b': {}}\n", "run name 'a/b' would leave"),
    (HEAD + "def get_runs(variant):\n    return {'lr 0.1': {}}\n", "run name 'lr 0.1' has a space"),
    (HEAD + "def get_runs(variant):\n    return {'a': 0.1}\n", "run 'a' is a float; each run must be a dict"),
], ids=["syntax_error", "a_list", "key_error", "escape", "slash", "space", "run_not_a_dict"])
def test_a_mistake_in_the_users_experiment_file_is_one_line_naming_it(tmp_path, body, needle):
    """They were tracebacks in sweep.py (`jaxconv train` says them in one line); '../../escape' trained outside
    the runs folder."""
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(SweepError) as error:
        plan([f"{path}:full"] if "'full'" in needle else [str(path)], runs_dir=tmp_path / "runs")
    message = str(error.value)
    assert message.startswith(f"experiment file {path}") and needle in message and "\n" not in message


def test_a_set_that_suits_the_first_run_but_not_a_later_one_is_refused_before_any_runs():
    """Only the first run's config was validated: the VGG runs of study (h) trained, then resnet20 failed."""
    with pytest.raises(SweepError) as error:
        plan([str(REPO / "experiments" / "study_design_principles.py")],
             overrides={"model_options.kernel_size": "5"})
    assert str(error.value).startswith("--set model_options.kernel_size=5: run 'resnet20")
    assert "has no option 'kernel_size'" in str(error.value)


def test_the_slurm_script_runs_from_where_the_sweep_was_planned_and_appends_to_its_logs(tmp_path, monkeypatch):
    """Its relative paths (experiments/..., runs/...) were read from wherever sbatch started it; a requeued task
    replaced its own log."""
    monkeypatch.chdir(REPO)
    runs = plan(["experiments/default.py"], runs_dir="runs")
    script = slurm_array(runs)
    lines = script.splitlines()
    assert "#SBATCH --open-mode=append" in lines
    cd = next(line for line in lines if line.startswith("cd "))
    assert cd.split()[1] == str(REPO) and lines.index(cd) < lines.index("RUNS=(")
    assert "--config experiments/default.py --workdir runs/default/default" in script


def sweep_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_script", REPO / "scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KERNEL = str(REPO / "experiments" / "study_kernel_size.py")


@pytest.mark.parametrize("extra, needle", [
    (["--slurm", KERNEL], f"--slurm {KERNEL}: that is a Python file (an experiment of this sweep)"),  # overwrote it
    (["--slurm", "{tmp}/notes.txt"], "--slurm {tmp}/notes.txt: exists and is not an sbatch script this tool wrote"),
    (["--slurm", "{tmp}/mine.py"], "--slurm {tmp}/mine.py: that is a Python file"),
    (["--slurm", "{tmp}/s.sbatch", "--report", "{tmp}/rep"], "--report runs after a sweep that runs here"),  # ignored
    (["--report", "{tmp}/rep", "--x", "seed"], "--x seed: a run's seed repeats its setting"),  # after every run
], ids=["the_experiment", "another_file", "a_py_file", "report_with_slurm", "x_seed"])
def test_a_sweeps_mistakes_are_one_line_and_nothing_is_written(tmp_path, capsys, extra, needle):
    (tmp_path / "notes.txt").write_text("mine")
    before = pathlib.Path(KERNEL).read_text()
    argv = [KERNEL, "--runs-dir", str(tmp_path / "runs"), *(e.format(tmp=tmp_path) for e in extra)]
    assert sweep_script().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sweep: error: ") and needle.format(tmp=tmp_path) in err[0], err
    assert pathlib.Path(KERNEL).read_text() == before and (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_dry_run_writes_no_slurm_script_and_a_new_one_replaces_only_its_own(tmp_path, capsys):
    script = tmp_path / "s.sbatch"
    argv = [KERNEL, "--runs-dir", str(tmp_path / "runs"), "--slurm", str(script)]
    assert sweep_script().main([*argv, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert not script.exists() and out.startswith("#!/bin/bash\n") and "not written" in err
    assert sweep_script().main(argv) == 0
    assert f"submit it with: sbatch {script}" in capsys.readouterr().out and script.read_text() == out
    assert sweep_script().main([*argv, "--set", "num_train_steps=3"]) == 0  # its own script: replaced
    assert "--config.num_train_steps=3" in script.read_text()


def test_a_set_given_twice_uses_the_last_with_a_note(tmp_path, capsys):
    argv = [KERNEL, "--only", "3x3x2", "--runs-dir", str(tmp_path / "runs"), "--dry-run"]
    assert sweep_script().main([*argv, "--set", "num_train_steps=5", "--set", "num_train_steps=7"]) == 0
    out, err = capsys.readouterr()
    assert "--config.num_train_steps=7" in out and "num_train_steps=5" not in out
    assert err.strip() == "sweep: note: --set num_train_steps is given twice ('5', then '7'); using the last"


@pytest.mark.parametrize("result, status, needle", [
    ((-9, None), 1, "sweep: run 3x3x2 was killed by signal 9 (SIGKILL, as the out-of-memory killer does); "
                    "rerunning the sweep resumes it"),
    ((-15, "SIGTERM"), 143, "sweep: stopped by SIGTERM during 3x3x2"),  # it said 130, Ctrl-C's status
], ids=["killed", "stopped_by_sigterm"])
def test_a_killed_run_says_so_and_a_stopped_sweep_exits_as_its_signal_says(tmp_path, capsys, result, status, needle):
    import json

    module = sweep_script()
    module._train = lambda run: result
    argv = [KERNEL, "--only", "3x3x2", "--runs-dir", str(tmp_path / "runs")]
    assert module.main(argv) == status
    assert needle in capsys.readouterr().err
    if status == 1:  # the sweep's log says what happened
        (line,) = (tmp_path / "runs" / "study_kernel_size" / "quick" / "sweep.jsonl").read_text().splitlines()
        assert json.loads(line)["killed_by_signal"] == 9


@pytest.mark.skipif(not pathlib.Path("/proc/self").exists(), reason="Linux only (PR_SET_PDEATHSIG)")
def test_a_run_dies_with_its_sweep_even_when_the_sweep_is_killed(tmp_path):
    """SIGKILL of the sweep alone left its `jaxconv train` training as an orphan that held its workdir."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    program = (f"import importlib.util, types\n"
               f"spec = importlib.util.spec_from_file_location('s', {str(REPO / 'scripts' / 'sweep.py')!r})\n"
               f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
               f"run = types.SimpleNamespace(name='r',\n"
               f"                            argv=lambda: ['sh', '-c', 'echo $$ > {pid_file}; exec sleep 60'])\n"
               f"m._train(run)\n")
    sweep = subprocess.Popen([sys.executable, "-c", program])
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    sweep.kill()
    sweep.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            state = pathlib.Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break  # gone
        if state == "Z":  # dead, not yet reaped by whoever adopted it
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the run outlived its killed sweep")
