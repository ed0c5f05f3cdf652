"""Transfer learning: torchvision weights into a fresh run with a new head, frozen parts, resume, features.

The weights are seeded pseudo-random ones in torchvision's ResNet-18 state-dict layout
(jaxconv.pretrained.synthetic), for a ResNet-18 with one block per stage and narrow widths
so that a few real training steps fit in the test budget; the conversion itself is tested
against torchvision in test_pretrained.py.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict
from safetensors.numpy import save_file

from jaxconv.cli import main
from jaxconv.pretrained import WEIGHTS, convert_state_dict, load_pretrained, weights_info
from jaxconv.pretrained.convert import torch_layout
from jaxconv.pretrained.synthetic import random_images, random_state_dict
from jaxconv.pretrained.weights import sha256_of
from jaxconv.models import get_model
from jaxconv.train.config import ConfigError, base_config, validate
from jaxconv.train.loop import train
from jaxconv.train.optim import build_optimizer
from jaxconv.train.freezing import freezing_apply, freezing_optimizer, frozen_paths
from jaxconv.train.transfer import TransferError, checkpoint_variables, extract_features, initial_variables, load_variables
from tiny import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPTIONS = {"depths": (1, 1, 1, 1), "stem_width": 8}  # ResNet-18's layout, one block per stage, widths 8..64
SIZE = 32
SHAPE = (1, SIZE, SIZE, 3)

pytestmark = pytest.mark.xdist_group("transfer")


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return random_state_dict(torch_layout("resnet18", **OPTIONS), seed=3)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, state_dict) -> pathlib.Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18-small.safetensors"
    save_file(state_dict, str(path))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def finetune_config(data_dir, **changes) -> ml_collections.ConfigDict:
    values = {"model": "resnet18", "image_size": SIZE, "num_train_steps": 4, "eval_every_steps": 4,
              "checkpoint_every_steps": 2, **changes}
    config = tiny_config(data_dir, **values)
    config.model_options = ml_collections.ConfigDict(OPTIONS)
    return validate(config, device_count=jax.device_count())


def flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(dict(tree)).items()}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, data_dir, weights_file):
    """4 steps from the file, with the stem and the first stage frozen: (workdir, log messages)."""
    workdir = tmp_path_factory.mktemp("finetune") / "run"
    messages: list[str] = []
    summary = train(finetune_config(data_dir, init_weights=str(weights_file), freeze="stem,stage1"), workdir,
                    log=messages.append)
    assert summary["steps"] == 4 and summary["final_eval"]["examples"] == 40
    return workdir, messages


def test_a_fresh_run_loads_all_but_the_new_head_and_frozen_parts_stay_bit_identical(finetuned, state_dict):
    workdir, messages = finetuned
    loaded = [m for m in messages if m.startswith("initialised from")]
    assert len(loaded) == 1
    assert "re-initialised for 10 classes: head/bias (1000,) -> (10,), head/kernel (64, 1000) -> (64, 10)" in loaded[0]
    source = convert_state_dict("resnet18", state_dict, **OPTIONS)
    variables, meta = checkpoint_variables(workdir)
    assert meta["step"] == 4
    for collection in ("params", "batch_stats"):
        before, after = flat(source[collection]), flat(variables[collection])
        assert set(before) == set(after)
        for key in before:
            if key.startswith(("stem/", "stage1/")):  # frozen: not one bit moved, BatchNorm statistics included
                assert after[key].tobytes() == before[key].tobytes(), f"{collection}/{key} changed"
            elif not key.startswith("head/"):  # loaded, then trained
                assert not np.array_equal(after[key], before[key]), f"{collection}/{key} was not trained"
    assert variables["params"]["head"]["kernel"].shape == (64, 10)


def test_a_resumed_run_restores_its_own_checkpoint_and_never_reads_the_weights(finetuned, data_dir, tmp_path):
    workdir, _ = finetuned
    resumed = tmp_path / "run"
    shutil.copytree(workdir, resumed)
    messages: list[str] = []
    config = finetune_config(data_dir, init_weights=str(tmp_path / "gone.safetensors"), freeze="stem,stage1",
                             num_train_steps=6, eval_every_steps=6)
    assert train(config, resumed, log=messages.append)["steps"] == 6
    assert any("resuming from step 4" in m for m in messages)
    assert not any(m.startswith("initialised from") for m in messages)
    before, after = checkpoint_variables(workdir)[0], checkpoint_variables(resumed)[0]
    np.testing.assert_array_equal(after["params"]["stage1"]["block0"]["conv1"]["kernel"],
                                  before["params"]["stage1"]["block0"]["conv1"]["kernel"])
    assert not np.array_equal(after["params"]["head"]["kernel"], before["params"]["head"]["kernel"])


def test_another_runs_checkpoint_is_a_source_and_mismatches_are_named(finetuned):
    workdir, _ = finetuned
    variables, description = load_variables(str(workdir), "resnet18", OPTIONS)
    assert "jaxconv checkpoint, step 4" in description
    five_classes = get_model("resnet18", num_classes=5, **OPTIONS)
    fitting = initial_variables(str(workdir), "resnet18", OPTIONS, five_classes, SHAPE, log=lambda _: None)
    assert "head/kernel" not in fitting["params"] and len(fitting["params"]) == len(flat(variables["params"])) - 2
    np.testing.assert_array_equal(fitting["params"]["stem/conv/kernel"], variables["params"]["stem"]["conv"]["kernel"])
    wider = get_model("resnet18", num_classes=10, **{**OPTIONS, "stem_width": 16})
    with pytest.raises(TransferError, match=r"60 wrongly shaped \(params/stage1/block0/conv1/kernel: \(3, 3, 8, 8\) "
                                            r"in the source, \(3, 3, 16, 16\) in the model"):
        initial_variables(str(workdir), "resnet18", {**OPTIONS, "stem_width": 16}, wider, SHAPE)
    with pytest.raises(TransferError, match="a resnet18 run, not resnet20"):
        load_variables(str(workdir), "resnet20", {})


def test_a_source_runs_broken_latest_checkpoint_is_named_when_an_earlier_one_is_used(finetuned, tmp_path):
    import shutil

    source = tmp_path / "run"
    shutil.copytree(finetuned[0], source)
    steps = sorted(int(p.name) for p in (source / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) >= 2
    victim = max((p for p in (source / "checkpoints" / str(steps[-1])).rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:100])
    messages: list[str] = []
    _, description = load_variables(str(source), "resnet18", OPTIONS, log=messages.append)
    assert f"step {steps[-2]}" in description  # it fell back silently before
    assert len(messages) == 1 and messages[0].startswith(f"checkpoint {steps[-1]}") and "broken" in messages[0]


def test_a_file_for_another_shape_is_refused_naming_the_entries(weights_file):
    wider = get_model("resnet18", num_classes=10, **{**OPTIONS, "stem_width": 16})
    with pytest.raises(TransferError) as error:
        initial_variables(str(weights_file), "resnet18", {**OPTIONS, "stem_width": 16}, wider, SHAPE)
    assert error.value.key == "init_weights" and "wrongly shaped" in str(error.value)
    assert "layer1.0.conv2.weight: file (8, 8, 3, 3), resnet18 needs (16, 16, 3, 3)" in str(error.value)


def test_a_published_tag_is_fetched_hash_checked_and_loaded(weights_file, tmp_path, monkeypatch, state_dict):
    published = weights_info("resnet18", "IMAGENET1K_V1")
    local = dataclasses.replace(published, url=f"file:///{weights_file.name}", sha256=sha256_of(weights_file))
    monkeypatch.setitem(WEIGHTS, "resnet18", {"IMAGENET1K_V1": local})
    monkeypatch.setenv("JAXCONV_WEIGHTS_DIR", str(weights_file.parent))
    variables, description = load_variables("IMAGENET1K_V1", "resnet18", OPTIONS)
    assert description.startswith("resnet18 IMAGENET1K_V1")
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], state_dict["fc.weight"].T)
    monkeypatch.setitem(WEIGHTS, "resnet18", {"IMAGENET1K_V1": dataclasses.replace(local, sha256="0" * 64)})
    with pytest.raises(TransferError, match="does not match the published SHA-256"):
        load_variables("IMAGENET1K_V1", "resnet18", OPTIONS)


@pytest.mark.parametrize(
    "changes,key,needle",
    [
        ({"freeze": "stme"}, "freeze", "'stme' matches no parameter; the model's modules are head, stage1, stage2"),
        ({"freeze": "backbone,head"}, "freeze", "freezes every parameter"),
        ({"model": "resnet20", "init_weights": "IMAGENET1K_V1"}, "init_weights", "convert only to alexnet_tv"),
        ({"init_weights": " "}, "init_weights", "must name a weights file"),
    ],
)
def test_config_mistakes_name_the_key(changes, key, needle):
    config = base_config()
    config.update({"model": "resnet18", "image_size": SIZE, **changes})
    with pytest.raises(ConfigError) as error:
        validate(config, device_count=1)
    assert error.value.key == key and needle in str(error.value)


def test_missing_weights_exit_2_in_one_line_before_anything_is_written(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "experiments" / "finetune_resnet18.py"), "--workdir", str(workdir),
            f"--config.init_weights={tmp_path / 'resnet18.safetensors'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("jaxconv: error: config.init_weights=") and err[-1].endswith("no such file"), err
    assert not any("Traceback" in line for line in err)
    assert not workdir.exists()


def test_backbone_freezing_zeroes_updates_and_runs_batchnorm_in_inference_mode(weights_file):
    model, variables = load_pretrained("resnet18", weights_file, **OPTIONS)
    frozen = frozen_paths("backbone", model, SHAPE)
    params = flat(variables["params"])
    assert {p for p in params if f"params/{p}" not in frozen} == {"head/kernel", "head/bias"}
    assert {f"batch_stats/{k}" for k in flat(variables["batch_stats"])} <= frozen

    config = base_config()
    config.optimizer.update(name="sgd", momentum=0.9, weight_decay=1e-2)
    tx = freezing_optimizer(build_optimizer(config, optax.constant_schedule(0.1)), frozen)
    grads = jax.tree_util.tree_map(jnp.ones_like, variables["params"])
    updates, _ = tx.update(grads, tx.init(variables["params"]), variables["params"])
    for key, update in flat(updates).items():
        assert np.any(update != 0) == key.startswith("head/"), key

    images = random_images((2, SIZE, SIZE, 3))
    apply = freezing_apply(model.apply, frozen)
    logits, updated = jax.jit(lambda v, x: apply(v, x, train=True, mutable=["batch_stats"]))(variables, images)
    np.testing.assert_allclose(logits, jax.jit(model.apply)(variables, images), rtol=1e-5, atol=1e-5)
    for key, value in flat(updated["batch_stats"]).items():
        assert value.tobytes() == flat(variables["batch_stats"])[key].tobytes(), key


def test_features_of_any_stage(weights_file):
    model, variables = load_pretrained("resnet18", weights_file, **OPTIONS)
    images = random_images((2, SIZE, SIZE, 3), seed=1)
    logits, features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, images)
    stage2 = extract_features(model, variables, images, "stage2")
    assert stage2.shape == (2, 4, 4, 16)
    np.testing.assert_allclose(stage2, features["stage2"], rtol=1e-5, atol=1e-6)
    pre_logits = extract_features(model, variables, images)  # the head's input: logits = x W + b
    head = variables["params"]["head"]
    np.testing.assert_allclose(pre_logits @ head["kernel"] + head["bias"], logits, rtol=1e-4, atol=1e-4)
    pooled = extract_features(model, variables, images, "stage4", pool=True)  # ResNet pools stage4 into pre_logits
    np.testing.assert_allclose(pooled, pre_logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no feature 'stage5'; it has pre_logits, stage1, stage2, stage3, stage4"):
        extract_features(model, variables, images, "stage5")


def test_extract_features_says_what_it_takes():
    """A model name instead of the module, or a Flax module without return_features: a TypeError saying so."""
    import flax.linen as nn

    class NoFeatures(nn.Module):
        num_classes: int = 3

        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

    images = jnp.ones((1, 8, 8, 3))
    variables = NoFeatures().init(jax.random.key(0), images)
    with pytest.raises(TypeError, match="needs a model whose __call__ takes return_features=True .*; NoFeatures does not"):
        extract_features(NoFeatures(), variables, images)
    with pytest.raises(TypeError, match=r"takes the model itself \(a Flax module: .*\), got str 'resnet20'"):
        extract_features("resnet20", variables, images, "stage1")


def test_a_run_started_from_a_googlenet_run_keeps_the_input_transform_its_weights_need(tmp_path):
    """torchvision's GoogLeNet weights need transform_input=True, which a run from them gets without recording it:
    a second run from that run's workdir was built without it (its stem's features 134% off the first run's)."""
    from jaxconv.train.transfer import pretrained_options

    first, second = tmp_path / "first", tmp_path / "second"
    for run, source in ((first, str(tmp_path / "googlenet-1378be20.pth")), (second, str(first))):
        (run / "checkpoints" / "4").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"model": "googlenet_tv", "init_weights": source,
                                                     "model_options": {}}))
    assert pretrained_options("googlenet_tv", str(tmp_path / "googlenet-1378be20.pth")) == {"transform_input": True}
    for source in (first, second, first / "checkpoints", first / "checkpoints" / "4"):
        assert pretrained_options("googlenet_tv", str(source)) == {"transform_input": True}, source
    (tmp_path / "own").mkdir()  # a run that set it itself
    (tmp_path / "own" / "config.json").write_text(json.dumps({"model": "googlenet_tv", "init_weights": None,
                                                              "model_options": {"transform_input": True}}))
    assert pretrained_options("googlenet_tv", str(tmp_path / "own")) == {"transform_input": True}
    assert pretrained_options("resnet18", str(first)) == {}


def test_a_torchvision_file_fine_tuned_on_other_classes_is_a_source(tmp_path):
    """A ResNet-18 fine-tuned in PyTorch on 10 classes was refused ('pass num_classes=10', which a run cannot):
    its backbone is loaded, and its head too when the run has its classes."""
    ten = random_state_dict(torch_layout("resnet18", num_classes=10, **OPTIONS), seed=4)
    save_file(ten, str(tmp_path / "r18_10.safetensors"))
    source = str(tmp_path / "r18_10.safetensors")
    for classes, head_loaded in ((10, True), (3, False)):
        model = get_model("resnet18", num_classes=classes, **OPTIONS)
        lines = []
        fitting = initial_variables(source, "resnet18", OPTIONS, model, SHAPE, log=lines.append)
        assert ("head/kernel" in fitting["params"]) == head_loaded, lines
        np.testing.assert_array_equal(fitting["params"]["stem/conv/kernel"],
                                      np.transpose(ten["conv1.weight"], (2, 3, 1, 0)))
        if head_loaded:
            np.testing.assert_array_equal(fitting["params"]["head/kernel"], ten["fc.weight"].T)
