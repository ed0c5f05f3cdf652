"""A researcher's own code once it has left the guide's path: a module that prints, names a command line
cannot take, a sweep of their model, a file moved or changed after the run that used it."""

from __future__ import annotations

import json
import pathlib
import sys

import ml_collections
import pytest

import jaxconv
from jaxconv.cli import main
from test_extending import user_space  # noqa: F401 -- the fixture: a user's folder, their code forgotten after

NET = """
import flax.linen as nn
import jaxconv


class SmallCNN(nn.Module):
    num_classes: int = 10
    dtype: object = None

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(WIDTH, (3, 3))(x))
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


jaxconv.register("small_cnn", SmallCNN, image_size=32, num_classes=10)
"""


def write_net(path: pathlib.Path, width: int = 8, prefix: str = "") -> pathlib.Path:
    path.write_text(prefix + NET.replace("WIDTH", str(width)))
    return path


def test_what_an_imported_module_prints_goes_to_stderr_not_into_json_output(user_space, capsys):  # noqa: F811
    write_net(user_space / "noisy.py", prefix="print('loading my nets...')\n")
    assert main(["list", "small_cnn", "--format", "json", "--import", "noisy.py"]) == 0
    captured = capsys.readouterr()
    assert [row["name"] for row in json.loads(captured.out)] == ["small_cnn"]
    assert "loading my nets..." in captured.err


@pytest.mark.parametrize("name", ["my net", "a/b", "*", "--weird", "x=y", " lead", "a,b", "_private"])
def test_a_name_a_command_line_cannot_take_is_refused_by_register(name):
    from jaxconv.models import ResNet

    with pytest.raises(ValueError, match=r"a model name is letters, digits, '_', '-' and '.', starting with a letter"):
        jaxconv.register(name, ResNet, image_size=32)
    assert name not in jaxconv.list_models()


def fake_run(path: pathlib.Path, config: dict, params: int | None = None) -> pathlib.Path:
    """A finished run's files as `jaxconv train` leaves them (the parts `report` reads)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"dataset": "shapes", "image_size": 16, **config}))
    records = [{"step": 4, "split": "train", "loss": 2.0, "top1": 0.2, "epoch": 1.0},
               {"step": 4, "split": "eval", "loss": 2.1, "top1": 0.3, "top5": 0.7, "examples": 40, "epoch": 1.0}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"status": "completed", "model": config["model"], "steps": 4, "wall_time_s": 10.0,
               **({"params": params} if params is not None else {})}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_report_names_runs_whose_model_code_is_gone_or_changed_and_reports_the_others(user_space, capsys):  # noqa: F811
    net = write_net(user_space / "nets.py")
    good = fake_run(user_space / "runs" / "good", {"model": "resnet20"}, params=jaxconv.summary(
        "resnet20", image_size=16).params)
    gone = fake_run(user_space / "runs" / "gone", {"model": "gone_cnn", "imports": [str(user_space / "old.py")]})
    changed = fake_run(user_space / "runs" / "changed", {"model": "small_cnn", "imports": [str(net)]}, params=314)
    write_net(net, width=16)  # edited after the run trained: 8 -> 16 channels
    assert main(["report", str(good), str(gone), str(changed), "--out", str(user_space / "report")]) == 0
    err = capsys.readouterr().err
    text = (user_space / "report" / "report.md").read_text()
    assert "| good | resnet20 | shapes | 16 | 269,722 |" in text
    assert "not shown for gone: gone_cnn could not be built (" in text and "old.py" in text
    assert "not shown for changed: small_cnn now has 618 parameters where the run trained 314: its code changed" in text
    assert "jaxconv: note: parameters and GMACs not shown for gone" in err
    assert "| changed | small_cnn | shapes | 16 | — | — |" in text


def test_a_sweep_imports_and_records_the_users_models(user_space, capsys, monkeypatch):  # noqa: F811
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts"))
    import sweep

    write_net(user_space / "nets.py")
    experiment = pathlib.Path(__file__).parents[1] / "experiments" / "default.py"
    args = [str(experiment), "--runs-dir", str(user_space / "runs"), "--set", "model=small_cnn", "--dry-run"]
    assert sweep.main([*args, "--import", "nets.py"]) == 0
    assert f"--config.model=small_cnn --config.imports={user_space / 'nets.py'}" in capsys.readouterr().out
    assert sweep.main([*args, "--import", "missing.py"]) == 2
    assert capsys.readouterr().err.strip() == "sweep: error: --import missing.py: no such file (give a .py file or a module name)"


def test_a_run_whose_model_file_moved_takes_its_new_place_from_import(user_space):  # noqa: F811
    from jaxconv.train.config import ConfigError, base_config, validate
    from jaxconv.user_modules import import_modules

    config = base_config()
    config.update(model="small_cnn", image_size=16, imports=(str(user_space / "nets.py"),))  # as recorded
    with pytest.raises(ConfigError, match=r"nets.py',\): no such file \(if a run's file moved since, give its new place "
                                          r"with --import NEW_PATH.py\)"):
        validate(ml_collections.ConfigDict(config.to_dict()), device_count=1)
    import_modules([str(write_net(user_space / "moved.py"))])  # what `--import moved.py` does first
    notes: list[str] = []
    resolved = validate(config, device_count=1, log=notes.append)
    assert resolved.imports == (str(user_space / "moved.py"),)  # a resume records the new place
    assert notes == [f"config.imports: {user_space / 'nets.py'} is gone; small_cnn is known without it (--import), "
                     f"so it is left out"]
    assert "moved" in sys.modules[jaxconv.model_info("small_cnn").source_module].__file__


def test_a_package_module_given_as_a_file_and_a_file_shadowing_a_package_say_what_to_do(user_space, capsys,  # noqa: F811
                                                                                        monkeypatch):
    (user_space / "lab").mkdir()
    (user_space / "lab" / "__init__.py").write_text("")
    (user_space / "lab" / "blocks.py").write_text("WIDTH = 8\n")
    (user_space / "lab" / "nets.py").write_text("from .blocks import WIDTH\n")
    (user_space / "wave.py").write_text("from wave import Wave_read\n")  # the user's wave.py, not the standard one
    monkeypatch.delitem(sys.modules, "wave", raising=False)  # as in a new process
    assert main(["list", "--import", "lab/nets.py"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"; it is a module of the package lab: give it as --import lab.nets, from {user_space}")
    assert main(["list", "--import", "lab.nets"]) == 0  # as the hint says
    capsys.readouterr()
    assert main(["list", "--import", "wave.py"]) == 2
    assert capsys.readouterr().err.strip().endswith("; the file's name shadows the installed package 'wave': rename it")


def test_report_counts_a_folder_runs_model_with_the_classes_it_recorded(tmp_path, capsys):
    """A folder dataset's class count is known from the run's dataset.json only: rebuilt with the model's default
    10 classes, a 2-class ResNet-20 read as 'its code changed since' (269,722 against the 269,202 it trained)."""
    trained = jaxconv.summary("resnet20", image_size=16, num_classes=2).params
    run = fake_run(tmp_path / "photos_run", {"model": "resnet20", "dataset": "folder"}, params=trained)
    (run / "dataset.json").write_text(json.dumps({"classes": ["cat", "dog"], "train_examples": 40, "eval_examples": 8}))
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "not shown" not in capsys.readouterr().err
    assert f"| photos_run | resnet20 | folder | 16 | {trained:,} |" in (tmp_path / "report" / "report.md").read_text()


def test_a_report_title_or_run_name_with_a_dollar_is_drawn_as_written(tmp_path):
    """'$...$' started matplotlib's TeX parser: `--title '$\\lr$ sweep'` or a run folder named `run$^$` was a
    60-100 line traceback."""
    run = fake_run(tmp_path / "run$^$", {"model": "resnet20"})
    assert main(["report", str(run), "--out", str(tmp_path / "report"), "--title", "$\\lr$ sweep"]) == 0
    assert (tmp_path / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_an_emptied_metrics_file_of_a_finished_run_is_noted(tmp_path, capsys):
    run = fake_run(tmp_path / "run", {"model": "resnet20"})
    (run / "metrics.jsonl").write_text("")
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "metrics.jsonl: empty, though its summary.json says the run trained 4 steps" in capsys.readouterr().err


def test_one_damaged_run_below_a_folder_is_left_out_of_the_report_of_the_others(tmp_path, capsys):
    """A line that is not a JSON object inside one run's metrics.jsonl refused the report of every run beside it."""
    good = fake_run(tmp_path / "runs" / "a", {"model": "resnet20"})
    bad = fake_run(tmp_path / "runs" / "b", {"model": "resnet20"})
    (bad / "metrics.jsonl").write_text("[1]\n" + (good / "metrics.jsonl").read_text())
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert f"jaxconv: note: left out {bad}: {bad / 'metrics.jsonl'}:1: not a JSON object" in capsys.readouterr().err
    assert "| a | resnet20 |" in (tmp_path / "report" / "report.md").read_text()
    assert main(["report", str(bad), "--out", str(tmp_path / "alone")]) == 2  # given by its own path: refused
