"""Inference export: reloaded SavedModel and StableHLO exports give the JAX model's logits.

The model is a ResNet-18 with one block per stage and narrow widths, with seeded
pseudo-random torchvision-layout weights whose BatchNorm statistics are far from 0/1, so
that folding them wrongly would show.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxconv.checkpoint import Checkpoints
from jaxconv.data.procedural import CLASS_NAMES
from jaxconv.cli import main
from jaxconv.export import ExportSourceMissing, export_model, inference_function, load_exported, load_saved_model
from jaxconv.pretrained.convert import convert_state_dict, torch_layout
from jaxconv.pretrained.synthetic import random_images, random_state_dict
from jaxconv.models import get_model

OPTIONS = {"depths": (1, 1, 1, 1), "stem_width": 8}
SHAPE = (1, 32, 32, 3)
BATCHNORMS = 12  # stem, two per block, one per downsampling shortcut (stages 2-4)


@pytest.fixture(scope="module")
def pretrained():
    model = get_model("resnet18", **OPTIONS)
    variables = convert_state_dict("resnet18", random_state_dict(torch_layout("resnet18", **OPTIONS), seed=5),
                                   **OPTIONS)
    return model, variables


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def reference(model, variables, images):
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)


def test_float32_savedmodel_and_stablehlo_match_the_jax_model_for_any_batch(pretrained, tmp_path):
    model, variables = pretrained
    record = export_model(model, variables, tmp_path / "out", input_shape=SHAPE, platforms=("cpu",), check=False,
                          metadata={"model": "resnet18"})
    assert record["batchnorm_folded"] == BATCHNORMS and record["input"]["shape"] == [None, 32, 32, 3]
    assert json.loads((tmp_path / "out" / "export.json").read_text())["files"] == record["files"]
    for batch in (3, 1):
        images = random_images((batch, 32, 32, 3), seed=batch)
        expected = reference(model, variables, images)
        assert float(np.std(expected)) > 0.1
        assert relative_error(load_saved_model(tmp_path / "out")(images), expected) < 1e-5
        assert relative_error(load_exported(tmp_path / "out")(images), expected) < 1e-5


def test_bfloat16_export_computes_in_bfloat16_within_its_precision(pretrained, tmp_path):
    model, variables = pretrained
    record = export_model(model, variables, tmp_path / "bf16", input_shape=SHAPE, dtype="bfloat16",
                          formats=("jax_export",), platforms=("cpu",), check=False)
    assert record["dtype"] == "bfloat16" and list(record["files"]) == ["jax_export"]
    images = random_images((4, 32, 32, 3), seed=7)
    expected = reference(model, variables, images)
    error = relative_error(load_exported(tmp_path / "bf16")(images), expected)
    assert 1e-4 < error < 3e-2  # bfloat16 keeps 8 significant bits: visibly not float32, still the same function
    _, weights, _ = inference_function(model, variables, input_shape=SHAPE, dtype="bfloat16")
    assert {leaf.dtype.name for leaf in jax.tree_util.tree_leaves(weights)} == {"bfloat16"}


def test_export_refuses_a_used_directory_and_unknown_formats(pretrained, tmp_path):
    model, variables = pretrained
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        export_model(model, variables, tmp_path / "used", input_shape=SHAPE)
    with pytest.raises(ValueError, match="formats are saved_model, jax_export"):
        export_model(model, variables, tmp_path / "new", input_shape=SHAPE, formats=("onnx",))


def test_one_format_and_one_platform_may_be_given_as_strings(pretrained, tmp_path):
    """formats='jax_export' is that format, not the letters j, a, x, ..."""
    model, variables = pretrained
    record = export_model(model, variables, tmp_path / "out", input_shape=SHAPE, formats="jax_export",
                          platforms="cpu", check=False)
    assert list(record["files"]) == ["jax_export"] and record["platforms"] == ["cpu"]


def test_an_export_that_does_not_reproduce_the_model_is_refused_and_nothing_is_left(pretrained, tmp_path,
                                                                                    monkeypatch):
    """The reload check refuses an export 1% off the JAX model (a folding that changed the function did 20%)."""
    import jaxconv.export

    model, variables = pretrained
    real = jaxconv.export.inference_function

    def one_percent_off(*args, **kwargs):
        predict, weights, facts = real(*args, **kwargs)
        return (lambda w, x: predict(w, x) * 1.01), weights, facts

    monkeypatch.setattr(jaxconv.export, "inference_function", one_percent_off)
    with pytest.raises(ValueError, match=r"export check failed: the reloaded jax_export's logits differ .* by 1.0e-02"):
        export_model(model, variables, tmp_path / "out", input_shape=SHAPE, formats=("jax_export",),
                     platforms=("cpu",))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, pretrained):
    """A `jaxconv train` workdir as the loop leaves it: config.json and an Orbax checkpoint of the state."""
    _, variables = pretrained
    model = get_model("resnet18", num_classes=10, **OPTIONS)
    rng = np.random.default_rng(1)
    head = {"kernel": rng.normal(0, 0.1, (64, 10)).astype(np.float32), "bias": np.zeros(10, np.float32)}
    params = {**variables["params"], "head": head}
    root = tmp_path_factory.mktemp("run")
    config = {"model": "resnet18", "model_options": {"depths": [1, 1, 1, 1], "stem_width": 8}, "dataset": "shapes",
              "image_size": 32, "init_weights": None}
    (root / "config.json").write_text(json.dumps(config))
    checkpoints = Checkpoints(root, log=lambda _: None)
    state = {"step": np.asarray(7, np.int32), "params": params, "batch_stats": variables["batch_stats"]}
    checkpoints.save(7, jax.device_put(state), {"step": 7, "model": "resnet18", "num_classes": 10, "image_size": 32})
    checkpoints.wait()
    checkpoints.close()
    return root, model, {"params": params, "batch_stats": variables["batch_stats"]}


def test_export_command_exports_a_runs_checkpoint(workdir, tmp_path, capsys):
    root, model, variables = workdir
    out = tmp_path / "export"
    assert main(["export", "--workdir", str(root), "--out", str(out), "--format", "jax_export",
                 "--platforms", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"exported resnet18 ({BATCHNORMS} BatchNorms folded, float32) to {out}")
    assert lines[1].startswith(f"  {out / 'model.jax_export'}  max |export - JAX| / max |JAX| = ")
    assert float(lines[1].rsplit("= ", 1)[1]) < 1e-5
    record = json.loads((out / "export.json").read_text())
    assert record["num_classes"] == 10 and record["preprocessing"]["mean"] == [127.5] * 3
    assert record["preprocessing"]["eval_crop"] == "resize" and record["preprocessing"]["resize"] == [32, 32]
    assert record["class_names"] == list(CLASS_NAMES)  # the logits' order, for whoever serves the export
    assert "checkpoint step 7" in record["source"]
    images = random_images((2, 32, 32, 3), seed=11)
    assert relative_error(load_exported(out)(images), reference(model, variables, images)) < 1e-5


def test_a_folder_runs_export_names_its_classes_and_its_evaluation_view(workdir, tmp_path):
    """A model fine-tuned on a folder of class folders: export.json says which logit is which class (the
    folders' names, as the run recorded them) and how the run evaluated (a centre crop after 256/224)."""
    root, _, _ = workdir
    run = tmp_path / "run"
    shutil.copytree(root, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": "folder", "eval_crop": "center"}))
    classes = [f"class_{i:02d}" for i in range(10)]
    (run / "dataset.json").write_text(json.dumps({"classes": classes, "train_examples": 50, "eval_examples": 10}))
    out = tmp_path / "export"
    assert main(["export", "--workdir", str(run), "--out", str(out), "--format", "jax_export",
                 "--platforms", "cpu"]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["class_names"] == classes
    assert record["preprocessing"]["eval_crop"] == "center"
    assert record["preprocessing"]["resize_shorter_side"] == 37 and record["preprocessing"]["center_crop"] == 32
    assert record["preprocessing"]["mean"] == [123.675, 116.28, 103.53]  # ImageNet's, as torchvision's models take


@pytest.mark.parametrize("fmt", ["saved_model", "jax_export"])
def test_an_export_that_fills_the_disk_says_so_and_leaves_nothing(workdir, tmp_path, capsys, monkeypatch, fmt):
    """On a real 6 MiB disk TensorFlow's SaveV2 reported the full disk as ResourceExhaustedError, which export
    then called running out of memory ('lower --batch-size or --image-size'); the StableHLO file's write
    fails as an OSError. Both: one line that the disk is full, exit 2, no folder left."""
    import tensorflow as tf

    def full(*args, **kwargs):
        if fmt == "saved_model":  # the message TensorFlow gave on the tmpfs, shortened
            raise tf.errors.ResourceExhaustedError(None, None, "/mnt/tiny/.export.partial-6650/saved_model/variables/"
                                                   "variables_temp/part-00000-of-00001.data-00000-of-00001; No space "
                                                   "left on device [Op:SaveV2]")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", full)
    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    out = tmp_path / "export"
    assert main(["export", "--workdir", str(workdir[0]), "--out", str(out), "--format", fmt,
                 "--platforms", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(rf"jaxconv: error: --out {re.escape(str(out))}: writing failed \(no space "
                                          r"left on the device \([\d.]+ MiB free\)\)", err[0]), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,needle",
    [
        ([], "give either --workdir RUN"),
        (["--weights", "w.safetensors"], "--weights w.safetensors needs --model NAME"),
        (["--model", "resnet5", "--weights", "w.pth"], "unknown model 'resnet5'"),
        (["--model", "resnet18", "--weights", "nowhere.pth"], "weights file 'nowhere.pth' does not exist"),
        (["--model", "resnet18", "--weights", "w.pth", "--weights-tag", "V9"],
         "--weights-tag V9: it names the published weights whose preprocessing a --weights file takes; resnet18's "
         "are IMAGENET1K_V1"),
        (["--workdir", "nowhere"], "nowhere: no config.json there"),
        (["--workdir", "RUN", "--format", "onnx"], "--format 'onnx': expected a comma-separated list of saved_model"),
        (["--workdir", "RUN", "--platforms", "metal"], "--platforms 'metal': expected"),
        (["--workdir", "RUN", "--out", ""], "--out is empty"),
    ],
)
def test_export_command_mistakes_are_one_line_with_status_2(workdir, tmp_path, capsys, args, needle):
    args = [str(workdir[0]) if a == "RUN" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    assert main(["export", *out, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_export_command_refuses_a_used_output_directory(workdir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["export", "--workdir", str(workdir[0]), "--out", str(tmp_path / "out")]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_export_command_with_a_fixed_batch_names_it_for_the_images_and_the_logits(workdir, tmp_path, capsys):
    out = tmp_path / "fixed"
    assert main(["export", "--workdir", str(workdir[0]), "--out", str(out), "--format", "jax_export",
                 "--platforms", "cpu", "--batch-size", "3", "--no-check"]) == 0
    assert "images (3, 32, 32, 3) float32 -> logits (3, 10) float32" in capsys.readouterr().out


def start_export(root, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jaxconv.cli", "export", "--workdir", str(root), "--out", str(out),
                             "--platforms", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def staging_folders(out) -> list:
    return [p for p in out.parent.glob(f".{out.name}.partial-*")]


def wait_for_staging(process, out, timeout=120.0) -> bool:
    """True once the export has begun writing (its hidden folder beside OUT is there)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if staging_folders(out):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("when", ["starting", "writing"])
def test_sigterm_during_an_export_leaves_nothing_or_a_complete_export(workdir, tmp_path, when):
    """Once SIGTERM left a folder with the model files and no export.json, which loaded as a good export
    and made the same command refuse the folder; now it stops as Ctrl-C does, in one line, exit 143."""
    out = tmp_path / "sub" / "out"
    process = start_export(workdir[0], out)
    if when == "writing":
        assert wait_for_staging(process, out), process.communicate()
        time.sleep(random.uniform(0, 3))  # anywhere in the writing, the check, or the renaming
    else:
        time.sleep(random.uniform(0.5, 3))
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    if process.returncode == 0:  # it had finished
        assert (out / "export.json").is_file() and load_exported(out)
    else:
        assert process.returncode in (143, -signal.SIGTERM), (process.returncode, err)  # -15: before main()
        if process.returncode == 143:
            assert err.strip().splitlines()[-1] == "jaxconv: terminated", err
        assert not out.exists() and not (tmp_path / "sub").exists()


def test_an_export_killed_midway_leaves_no_output_and_the_next_export_removes_its_leftovers(workdir, tmp_path,
                                                                                           capsys):
    out = tmp_path / "out"
    process = start_export(workdir[0], out)
    assert wait_for_staging(process, out), process.communicate()
    process.kill()
    process.communicate()
    assert not out.exists() and len(staging_folders(out)) == 1
    assert main(["export", "--workdir", str(workdir[0]), "--out", str(out), "--format", "jax_export",
                 "--platforms", "cpu", "--no-check"]) == 0
    assert (out / "export.json").is_file() and not staging_folders(out)


def test_loading_an_unfinished_export_is_refused(tmp_path):
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "model.jax_export").write_bytes(b"a stopped export's file")
    for load in (load_exported, load_saved_model):
        with pytest.raises(ExportSourceMissing, match="stopped: not a finished export \\(no export.json"):
            load(tmp_path / "stopped")


def truncate_checkpoint(root, step) -> None:
    for file in (root / "checkpoints" / str(step)).glob("state/ocdbt.process_*/d/*"):
        os.truncate(file, 10)


@pytest.fixture
def two_checkpoints(workdir, tmp_path):
    """A copy of the run with a second checkpoint, step 9, beside step 7."""
    root = tmp_path / "run"
    shutil.copytree(workdir[0], root)
    checkpoints = Checkpoints(root, log=lambda _: None)
    state = {"step": np.asarray(9, np.int32), **workdir[2]}
    checkpoints.save(9, jax.device_put(state), {"step": 9, "model": "resnet18", "num_classes": 10, "image_size": 32})
    checkpoints.wait()
    checkpoints.close()
    return root


def export_err(root, out, *args) -> tuple[int, list[str]]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["export", "--workdir", str(root), "--out", str(out), "--format", "jax_export",
                       "--platforms", "cpu", "--no-check", *args])
    return status, err.getvalue().strip().splitlines()


def test_export_reads_past_a_damaged_checkpoint_as_eval_does_and_says_why(two_checkpoints, tmp_path):
    """Export used to take step 7 silently, call a damaged --step 9 missing, and give no reason when
    every checkpoint was damaged."""
    truncate_checkpoint(two_checkpoints, 9)
    status, err = export_err(two_checkpoints, tmp_path / "latest")
    assert status == 0 and len(err) == 1, err
    assert "checkpoint 9 in" in err[0] and "has 10 bytes" in err[0] and "(truncated?)); left out" in err[0]
    assert "checkpoint step 7" in json.loads((tmp_path / "latest" / "export.json").read_text())["source"]
    status, err = export_err(two_checkpoints, tmp_path / "asked", "--step", "9")
    assert status == 2 and len(err) == 1 and not (tmp_path / "asked").exists(), err
    assert "checkpoint 9 in" in err[0] and "is unusable (" in err[0] and err[0].endswith("(truncated?)); there are 7")
    truncate_checkpoint(two_checkpoints, 7)
    status, err = export_err(two_checkpoints, tmp_path / "none")
    assert status == 2 and len(err) == 1, err
    assert "no usable checkpoint in" in err[0] and "every one is damaged (9: " in err[0] and "; 7: " in err[0]


def test_export_of_a_run_whose_model_changed_since_says_the_checkpoint_does_not_fit(workdir, tmp_path):
    """A model file edited after training (its widths) gave flax's ScopeParamShapeError traceback."""
    root = tmp_path / "run"
    shutil.copytree(workdir[0], root)
    config = json.loads((root / "config.json").read_text())
    config["model_options"]["stem_width"] = 16
    (root / "config.json").write_text(json.dumps(config))
    status, err = export_err(root, tmp_path / "out")
    assert status == 2 and len(err) == 1 and not (tmp_path / "out").exists(), err
    assert "checkpoints/7 does not fit this model (wrongly shaped: params/" in err[0]
    assert "(8,) in the checkpoint vs (16,) in the model" in err[0]
