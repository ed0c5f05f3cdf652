"""Sweeps (scripts/sweep.py, jaxconv.train.sweep): a mistake is one line before anything runs or is written; a run
killed or stopped says so; the SLURM script runs from where the sweep was planned."""

from __future__ import annotations

import pathlib

import pytest

from jaxconv.train.sweep import SweepError, plan, slurm_array

REPO = pathlib.Path(__file__).resolve().parents[1]
HEAD = "from jaxconv.train.config import base_config\nVARIANTS = ('quick', 'full')\n\n\ndef get_config(variant='quick'):\n    return base_config()\n\n\n"


@pytest.mark.parametrize("body, needle", [
    ("def get_config(:\n    pass\n", "importing it failed: SyntaxError: invalid syntax (bad.py, line 1)"),
    (HEAD + "def get_runs(variant):\n    return [1, 2]\n", "get_runs() returned a list; it must return a dict"),
    (HEAD + "def get_runs(variant):\n    return {'quick': {'a': {}}}[variant]\n", "get_runs('full') failed: KeyError: 'full'"),
    (HEAD + "def get_runs(variant):\n    return {'../../escape': {}}\n", "run name '../../escape' would leave the sweep's folder"),
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

