"""Pretrained weights: torchvision's layout for every model, logit parity, the registry, prediction.

Neither torch nor a network is needed: tests/fixtures/parity/ holds torchvision's state-dict
listings (key -> shape, BatchNorm eps/momentum) of every convertible model and torchvision's
logits for seeded pseudo-random weights, made by scripts/make_parity_fixtures.py; the same
seeded weights are generated here (jaxconv.pretrained.synthetic) and converted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

import jaxconv
from jaxconv.cli import main
from jaxconv.declarations import Preprocessing
from jaxconv.layers import BatchNorm
from jaxconv.layers.conv import reference_convolutions
from jaxconv.pretrained import (
    SUPPORTED,
    WEIGHTS,
    WeightsFormatError,
    WeightsHashError,
    WeightsMismatchError,
    WeightsNotFoundError,
    convert_state_dict,
    load_pretrained,
    weights_info,
)
from jaxconv.pretrained.convert import (
    build_model,
    conversion_plan,
    is_ignored,
    read_state_dict,
    torch_layout,
    torchvision_keys,
)
from jaxconv.pretrained.predict import imagenet_classes, preprocess, resized_size
from jaxconv.pretrained.synthetic import checksum, random_images, random_state_dict

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "parity"
# One model per family: those whose declaration gives the size its parity fixture was made at.
PARITY_MODELS = tuple(name for name in SUPPORTED if torchvision_keys(name).parity_size)
RELATIVE_TOLERANCE = 1e-4
# XLA:CPU's own formulations of grouped and depthwise convolutions (jaxconv.layers.conv.convolve) meet
# torchvision here through ResNeXt-50, MobileNetV2/V3 and EfficientNet, and the plain convolution in
# tests/test_layers.py; these families run on one convolution primitive per layer, which compiles 3-5x faster.
ON_REFERENCE_CONVOLUTIONS = {"regnet_y_400mf", "convnext_tiny"}

@functools.cache
def torchvision_listing() -> dict:
    with gzip.open(FIXTURES / "layouts.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def torchvision_layout(name: str) -> dict[str, tuple[int, ...]]:
    return {key: tuple(shape) for key, shape in torchvision_listing()["layouts"][name]}


@functools.cache
def synthetic_state(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded weights in the layout of torchvision's published file for ``name``."""
    return random_state_dict(torchvision_layout(name), seed)


# ------------------------------------------------------------------------------------------------
# Layout: every convertible model expects exactly torchvision's entries (shapes only, no compute).


def test_every_model_with_weights_converts():
    assert set(WEIGHTS) == set(SUPPORTED)
    assert set(torchvision_listing()["layouts"]) == set(SUPPORTED)


@pytest.mark.parametrize("name", SUPPORTED)
def test_layout_matches_torchvision(name):
    plan = conversion_plan(name)  # torch_layout(name), traced once for both checks
    expected = {e.torch_key: e.torch_shape for e in plan}
    torchvision = torchvision_layout(name)
    kept = {k: s for k, s in torchvision.items() if k in expected or not is_ignored(name, k)}
    assert sorted(set(kept) ^ set(expected)) == []
    assert {k: s for k, s in kept.items() if expected[k] != s} == {}
    ignored = sorted(set(torchvision) - set(kept))
    assert all(k.endswith("num_batches_tracked") or k.startswith(("aux1.", "aux2.")) for k in ignored)
    # The model's trainable parameters are those torchvision publishes for the weights.
    params = sum(int(np.prod(e.shape)) for e in plan if e.collection == "params")
    assert all(w.num_params == params for w in WEIGHTS[name].values())


def batchnorm_setting(model) -> tuple[float, float]:
    """(eps, PyTorch momentum) of the model's BatchNorm (its ``norm`` option)."""
    norm = model.norm
    keywords = norm.keywords if isinstance(norm, functools.partial) else {}
    return keywords.get("epsilon", BatchNorm.epsilon), round(1 - keywords.get("momentum", BatchNorm.momentum), 6)


@pytest.mark.parametrize("name", [n for n in SUPPORTED if torchvision_listing()["batchnorm"][n]["eps"]])
def test_batchnorm_eps_and_momentum_match_torchvision(name):
    torchvision = torchvision_listing()["batchnorm"][name]
    assert len(torchvision["eps"]) == len(torchvision["momentum"]) == 1
    # round(): MNASNet's PyTorch momentum is 1 - 0.9997 as a float, 0.00029999999999996696.
    assert batchnorm_setting(build_model(name)) == (torchvision["eps"][0], round(torchvision["momentum"][0], 6))


# ------------------------------------------------------------------------------------------------
# Parity: torchvision's logits, reproduced.


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| over the batch of logits."""
    return float(np.abs(actual - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_logits_equal_torchvision(name, tmp_path):
    fixture = np.load(FIXTURES / f"{name}.npz")
    state = synthetic_state(name, int(fixture["weight_seed"]))
    # The parity model has no auxiliary heads (GoogLeNet); their weights do not enter the checksum.
    used = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    size, batch = int(fixture["image_size"]), int(fixture["batch"])
    images = random_images((batch, size, size, 3), int(fixture["input_seed"]))
    stream_changed = "numpy's random stream differs from the fixtures'; rerun scripts/make_parity_fixtures.py"
    assert checksum(used) == pytest.approx(float(fixture["weights_checksum"]), rel=1e-9), stream_changed
    assert checksum(images) == pytest.approx(float(fixture["input_checksum"]), rel=1e-9), stream_changed

    # Through a file, as a user would: safetensors, no torch.
    if name in ("resnet18", "convnext_tiny", "mobilenet_v3_large", "densenet121", "efficientnet_v2_s", "shufflenet_v2_x1_0", "regnet_y_400mf", "mnasnet0_5", "inception_v3"):
        from safetensors.numpy import save_file

        save_file(state, str(tmp_path / f"{name}.safetensors"))
        model, variables = load_pretrained(name, tmp_path / f"{name}.safetensors")
    else:
        model, variables = build_model(name), convert_state_dict(name, state)
    with reference_convolutions() if name in ON_REFERENCE_CONVOLUTIONS else contextlib.nullcontext():
        logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
    assert logits.shape == fixture["logits"].shape
    assert relative_error(logits, fixture["logits"]) < RELATIVE_TOLERANCE


def test_densenet_loads_the_published_key_names_and_todays():
    """DenseNet's published files say 'denselayer1.norm.1.weight' (torchvision's first names, which its loader
    rewrites with a regex); a state dict of torchvision's model as built today says 'norm1'. Both convert alike."""
    published = synthetic_state("densenet121")
    assert "features.denseblock1.denselayer1.norm.1.running_var" in published
    assert "features.denseblock1.denselayer1.conv.2.weight" in published
    today = {key.replace("norm.1", "norm1").replace("norm.2", "norm2").replace("conv.1", "conv1")
             .replace("conv.2", "conv2"): value for key, value in published.items()}
    assert "features.denseblock4.denselayer16.conv2.weight" in today
    a, b = convert_state_dict("densenet121", published), convert_state_dict("densenet121", today)
    assert jax.tree.all(jax.tree.map(np.array_equal, a, b))
    assert b["params"]["stage2"]["block0"]["conv1"]["kernel"].shape == (1, 1, 128, 128)  # 256 // 2 after transition 1


def test_mnasnet_version_1_file_is_refused_with_its_stem_shapes():
    """torchvision's MNASNet _version 1 kept a 32-channel stem at every multiplier (its loader rebuilds that stem);
    the published files are version 2, whose stem scales. A version-1 0.5 file names the shapes that differ."""
    state = dict(synthetic_state("mnasnet0_5"))
    state["layers.0.weight"] = np.zeros((32, 3, 3, 3), np.float32)
    with pytest.raises(WeightsMismatchError, match=r"layers.0.weight: file \(32, 3, 3, 3\), mnasnet0_5 needs \(16,"):
        convert_state_dict("mnasnet0_5", state)


def test_inception_v3_takes_the_published_auxiliary_head_with_it_or_without():
    """torchvision's Inception v3 file carries the auxiliary head (AuxLogits.*, in its count of 27,161,264): it loads
    into the head with aux_logits=True (the default) and is ignored with aux_logits=False; the rest is the same.
    The published weights get transform_input=True, as torchvision gives them."""
    published = synthetic_state("inception_v3")
    assert "AuxLogits.conv1.conv.weight" in published and "AuxLogits.fc.bias" in published
    with_head = convert_state_dict("inception_v3", published)
    without = convert_state_dict("inception_v3", published, aux_logits=False)
    assert set(with_head["params"]) - set(without["params"]) == {"aux"}
    head = with_head["params"]["aux"]
    assert np.array_equal(head["fc"]["kernel"], published["AuxLogits.fc.weight"].T)
    assert head["conv1"]["conv"]["kernel"].shape == (5, 5, 128, 768)
    del with_head["params"]["aux"], with_head["batch_stats"]["aux"]
    assert jax.tree.all(jax.tree.map(np.array_equal, with_head, without))
    assert build_model("inception_v3").transform_input and not jaxconv.get_model("inception_v3").transform_input


# ------------------------------------------------------------------------------------------------
# Files that do not fit, and other sources.


def test_mismatched_state_dict_lists_missing_unexpected_and_misshaped_entries():
    state = dict(synthetic_state("resnet18"))
    del state["layer4.1.bn2.running_var"], state["layer1.0.conv1.weight"]
    state["layer5.0.conv1.weight"] = np.zeros((3, 3), np.float32)
    state["fc.weight"] = np.zeros((10, 512), np.float32)
    with pytest.raises(WeightsMismatchError) as error:
        convert_state_dict("resnet18", state)
    message = str(error.value)
    assert "2 missing (layer1.0.conv1.weight, layer4.1.bn2.running_var)" in message
    assert "1 unexpected (layer5.0.conv1.weight)" in message
    assert "1 wrongly shaped (fc.weight: file (10, 512), resnet18 needs (1000, 512))" in message


def test_another_models_file_and_a_new_head_are_named():
    another_model = r"165 unexpected .*24 wrongly shaped .*is it a file for another model"
    with pytest.raises(WeightsMismatchError, match=another_model):
        convert_state_dict("resnet18", synthetic_state("resnet50"))
    state = dict(synthetic_state("resnet18"))
    state["fc.weight"], state["fc.bias"] = np.zeros((10, 512), np.float32), np.zeros(10, np.float32)
    with pytest.raises(WeightsMismatchError, match="only the classifier differs: pass num_classes=10"):
        convert_state_dict("resnet18", state)
    variables = convert_state_dict("resnet18", state, num_classes=10)
    assert variables["params"]["head"]["kernel"].shape == (512, 10)


def test_timm_vgg_classifier_layout_converts_like_torchvision():
    """timm stores VGG's classifier as convolutions (pre_logits.fc1 (O, 512, 7, 7), fc2, head.fc)."""
    options = {"classifier_width": 32, "num_classes": 10}  # a small classifier keeps this cheap
    state = random_state_dict(torch_layout("vgg11", **options), seed=3)
    renamed = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2", "classifier.6": "head.fc"}
    timm = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        if module == "classifier.0" and leaf == "weight":
            value = value.reshape(32, 512, 7, 7)
        elif module == "classifier.3" and leaf == "weight":
            value = value.reshape(32, 32, 1, 1)
        timm[f"{renamed.get(module, module)}.{leaf}"] = value
    expected = convert_state_dict("vgg11", state, **options)
    converted = convert_state_dict("vgg11", timm, **options)
    assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, converted, expected))


TORCHFILES = pathlib.Path(__file__).parent / "fixtures" / "torchfile"
# resnet18_tiny.pth: seeded weights (seed 7) of ResNet-18 with these options, torch.save'd in the legacy
# format by scripts/make_torchfile_fixtures.py (tests/test_torchfile.py tests the reader itself).
TINY = {"depths": (1, 1, 1, 1), "stem_width": 1, "num_classes": 3}


def test_pth_loads_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    expected = convert_state_dict("resnet18", random_state_dict(torch_layout("resnet18", **TINY), seed=7), **TINY)
    nameless = tmp_path / "weights"  # no suffix: known by torch.save's magic number
    nameless.write_bytes((TORCHFILES / "resnet18_tiny.pth").read_bytes())
    for path in (TORCHFILES / "resnet18_tiny.pth", nameless):
        model, variables = load_pretrained("resnet18", path, **TINY)
        assert model.num_classes == 3
        assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, variables, expected))
    # Floating tensors are read as float32 (as torch's .float() gave), integers as they are.
    state = read_state_dict(TORCHFILES / "tensors.pth")
    assert {k: state[k].dtype.name for k in ("half", "bfloat", "double", "long", "char", "bn.num_batches_tracked")} \
        == {"half": "float32", "bfloat": "float32", "double": "float32", "long": "int64", "char": "int8",
            "bn.num_batches_tracked": "int64"}
    with pytest.raises(WeightsFormatError, match="evil_system.pth: refuses to unpickle posix.system"):
        load_pretrained("resnet18", TORCHFILES / "evil_system.pth")


# families/NAME.pth: a small instance of each torchvision family jaxconv loads (but SqueezeNet, whose widths are
# not options), seeded weights in torchvision's key layout, torch.save'd (legacy format for the families whose
# files predate PyTorch 1.6, zip for the later) by scripts/make_torchfile_fixtures.py --families.
FAMILY_FILES = json.loads((TORCHFILES / "families.json").read_text())


@pytest.mark.parametrize("name", sorted(FAMILY_FILES["options"]))
def test_each_familys_pth_file_loads(name, monkeypatch):
    """The .pth path of every family, as users load torchvision's files: the same variables as its key layout gives."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts"))
    from make_torchfile_fixtures import as_model_options

    options = as_model_options(FAMILY_FILES["options"][name])
    model, variables = load_pretrained(name, TORCHFILES / "families" / f"{name}.pth", **options)
    expected = convert_state_dict(name, random_state_dict(torch_layout(name, **options), FAMILY_FILES["seed"]), **options)
    assert model.num_classes == 3
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, variables, expected))


def test_integer_weights_are_refused_naming_the_first(tmp_path):
    """An int8 (quantised) file has the right keys and shapes but not the weights; num_batches_tracked stays int64."""
    from safetensors.numpy import save_file

    state = random_state_dict(torch_layout("resnet18", **TINY), seed=7)
    state["bn1.num_batches_tracked"] = np.asarray(1000, np.int64)
    convert_state_dict("resnet18", state, **TINY)  # the int64 counter is ignored
    quantised = {k: np.round(v * 50).astype(np.int8) if v.dtype == np.float32 else v for k, v in state.items()}
    save_file(quantised, str(tmp_path / "int8.safetensors"))
    first = next(k for k in read_state_dict(tmp_path / "int8.safetensors") if k != "bn1.num_batches_tracked")
    with pytest.raises(WeightsFormatError, match=rf"int8.safetensors: entry '{first}' is int8: resnet18 needs "
                                                 r"floating-point weights \(a quantised file\?\)"):
        load_pretrained("resnet18", tmp_path / "int8.safetensors", **TINY)
    with pytest.raises(WeightsFormatError, match="entry 'fc.weight' is uint8"):
        convert_state_dict("resnet18", {**state, "fc.weight": state["fc.weight"].astype(np.uint8)}, **TINY)


def test_unreadable_files_and_unsupported_models_are_named(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsFormatError, match="not a readable .safetensors file"):
        load_pretrained("resnet18", path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained("resnet18", tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="no torchvision weights convert to 'resnet20'"):
        load_pretrained("resnet20", path)


# ------------------------------------------------------------------------------------------------
# The registry of published weights: facts, the cache, the hash check.


def test_registry_holds_the_published_facts():
    """The weight sets the families declare: torchvision's file names, hashes and accuracies."""
    declared = {(w.model, w.tag) for tags in WEIGHTS.values() for w in tags.values()}
    assert {("resnet50", "IMAGENET1K_V2"), ("efficientnet_b1", "IMAGENET1K_V2")} <= declared
    assert {name for name, _ in declared} == set(SUPPORTED)  # every convertible model has published weights
    for name, tags in WEIGHTS.items():
        for weight_set in tags.values():
            # torchvision's file names carry the first 8 hex digits of the file's SHA-256 (10 in ShuffleNet V2's
            # two ported files and MNASNet 0.5/1.0's).
            assert weight_set.url == f"https://download.pytorch.org/models/{weight_set.file_name}"
            assert weight_set.file_name.endswith(f"-{weight_set.sha256}.pth") and len(weight_set.sha256) in (8, 10)
            assert 50 < weight_set.top1 < weight_set.top5 < 100
        # compare's published accuracy is the default (first) weight set's.
        published = jaxconv.model_info(name).published
        assert (published.top1, published.top5) == (next(iter(tags.values())).top1, next(iter(tags.values())).top5)
    assert weights_info("resnet50", "IMAGENET1K_V2").top1 == 80.858  # REFERENCE.md: torchvision's new recipe
    assert weights_info("resnet50", "IMAGENET1K_V2").preprocessing.resize == 232  # the V2 recipe
    assert weights_info("resnet50").tag == "IMAGENET1K_V1"
    # torchvision's MobileNetV3-Large weights: V1 at resize 256, the reg-tuned V2 recipe at 232 (mobilenetv3.py).
    assert [(w.top1, w.top5, w.preprocessing.resize) for w in WEIGHTS["mobilenet_v3_large"].values()] == [
        (74.042, 91.340, 256), (75.274, 92.566, 232)]
    # torchvision's DenseNet weights (ported from LuaTorch): one set each, at resize 256 (densenet.py).
    assert [(w.top1, w.top5, w.preprocessing.resize, w.file_name) for w in WEIGHTS["densenet161"].values()] == [
        (77.138, 93.560, 256, "densenet161-8d451a50.pth")]
    # torchvision's EfficientNetV2 weights, evaluated at resize = crop (S 384, M 480 bilinear); L's, ported from the
    # paper's TensorFlow code, at 480 bicubic with mean = std = 0.5 (efficientnet.py).
    assert [(w.file_name, w.top1, w.top5) for w in WEIGHTS["efficientnet_v2_m"].values()] == [
        ("efficientnet_v2_m-dc08266a.pth", 85.112, 97.156)]
    assert weights_info("efficientnet_v2_s").preprocessing == Preprocessing(384, 384, "bilinear")
    assert weights_info("efficientnet_v2_l").preprocessing == Preprocessing(480, 480, "bicubic", (0.5,) * 3, (0.5,) * 3)
    # torchvision's ShuffleNet V2 weights: x0.5 and x1.0 ported (resize 256), x1.5 and x2.0 its new recipe (232).
    assert [(w.top1, w.top5, w.preprocessing.resize, w.file_name)
            for name in ("shufflenet_v2_x0_5", "shufflenet_v2_x2_0") for w in WEIGHTS[name].values()] == [
        (60.552, 81.746, 256, "shufflenetv2_x0.5-f707e7126e.pth"),
        (76.230, 93.006, 232, "shufflenetv2_x2_0-8be3c8ee.pth")]
    # torchvision's RegNetY-32GF weights: V1, the V2 recipe at resize 232, and SWAG's end-to-end fine-tuning at 384 px
    # and linear probe at 224 px (bicubic); RegNetY-128GF has only the SWAG sets (regnet.py).
    assert [(w.tag, w.top1, w.top5, w.preprocessing.resize, w.preprocessing.crop, w.preprocessing.interpolation,
             w.file_name) for w in WEIGHTS["regnet_y_32gf"].values()] == [
        ("IMAGENET1K_V1", 80.878, 95.340, 256, 224, "bilinear", "regnet_y_32gf-4dee3f7a.pth"),
        ("IMAGENET1K_V2", 83.368, 96.498, 232, 224, "bilinear", "regnet_y_32gf-8db6d4b5.pth"),
        ("IMAGENET1K_SWAG_E2E_V1", 86.838, 98.362, 384, 384, "bicubic", "regnet_y_32gf_swag-04fdfa75.pth"),
        ("IMAGENET1K_SWAG_LINEAR_V1", 84.622, 97.480, 224, 224, "bicubic", "regnet_y_32gf_lc_swag-e1583746.pth")]
    assert sorted(WEIGHTS["regnet_y_128gf"]) == ["IMAGENET1K_SWAG_E2E_V1", "IMAGENET1K_SWAG_LINEAR_V1"]
    # torchvision's MNASNet weights: 0.5 and 1.0 from the paper's recipe at resize 256, 0.75 and 1.3 from its new
    # recipe at 232 (mnasnet.py).
    assert [(w.top1, w.top5, w.preprocessing.resize, w.sha256) for name in ("mnasnet0_5", "mnasnet1_3")
            for w in WEIGHTS[name].values()] == [(67.734, 87.490, 256, "3ffadce67e"), (76.506, 93.522, 232, "a4c69d6f")]
    # torchvision's Inception v3 weights (ported from TensorFlow): resize 342, 299 px crop (inception.py).
    assert [(w.top1, w.top5, w.preprocessing.resize, w.preprocessing.crop, w.file_name, w.num_params)
            for w in WEIGHTS["inception_v3"].values()] == [
        (77.294, 93.450, 342, 299, "inception_v3_google-0cc3c7bd.pth", 27_161_264)]
    assert weights_info("efficientnet_b3").preprocessing == dataclasses.replace(
        weights_info("efficientnet_b3").preprocessing, resize=320, crop=300, interpolation="bicubic"
    )
    with pytest.raises(KeyError, match="its weights: IMAGENET1K_V1, IMAGENET1K_V2"):
        weights_info("resnet50", "IMAGENET1K_V3")


def test_missing_weights_say_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCONV_WEIGHTS_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError) as error:
        jaxconv.get_model("resnet50", weights="IMAGENET1K_V2", download=False)
    message = str(error.value)
    assert "download https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert f"save it as {tmp_path / 'cache' / 'resnet50-11ad3fa6.pth'}" in message
    assert "https://huggingface.co/timm/resnet50.tv2_in1k/resolve/main/model.safetensors" in message


def test_a_file_with_the_wrong_hash_is_refused(tmp_path):
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(b"something else entirely")
    with pytest.raises(WeightsHashError, match="does not match the published SHA-256 prefix f37072fd"):
        jaxconv.get_model("resnet18", weights="IMAGENET1K_V1", weights_dir=tmp_path, download=False)


def test_a_file_with_the_published_hash_loads(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from jaxconv.pretrained.weights import sha256_of

    path = tmp_path / "resnet18-local.safetensors"
    save_file(synthetic_state("resnet18"), str(path))
    digest = sha256_of(path)
    published = weights_info("resnet18", "IMAGENET1K_V1")
    for sha256 in (digest, digest[:8]):  # a full digest, and a file-name prefix as torchvision's
        local = dataclasses.replace(published, url=f"file:///{path.name}", sha256=sha256)
        monkeypatch.setitem(WEIGHTS, "resnet18", {"IMAGENET1K_V1": local})
        model, variables = jaxconv.get_model("resnet18", weights="IMAGENET1K_V1", weights_dir=tmp_path,
                                             download=False)
        assert model.num_classes == 1000
        np.testing.assert_array_equal(variables["params"]["head"]["kernel"], synthetic_state("resnet18")["fc.weight"].T)
    local = dataclasses.replace(published, url=f"file:///{path.name}", sha256="0" * 64)
    monkeypatch.setitem(WEIGHTS, "resnet18", {"IMAGENET1K_V1": local})
    with pytest.raises(WeightsHashError, match=f"SHA-256 {digest} does not match the published SHA-256 0000"):
        jaxconv.get_model("resnet18", weights="IMAGENET1K_V1", weights_dir=tmp_path, download=False)


def test_download_is_verified_before_it_is_kept(tmp_path, monkeypatch):
    """A file:// URL stands in for the network: the download lands in the cache only if its hash matches."""
    from safetensors.numpy import save_file

    from jaxconv.pretrained.weights import fetch, sha256_of

    source = tmp_path / "server" / "resnet18-local.safetensors"
    source.parent.mkdir()
    save_file(synthetic_state("resnet18"), str(source))
    published = weights_info("resnet18", "IMAGENET1K_V1")
    cache = tmp_path / "cache"
    wrong = dataclasses.replace(published, url=source.as_uri(), sha256="0" * 8)
    monkeypatch.setitem(WEIGHTS, "resnet18", {"IMAGENET1K_V1": wrong})
    with pytest.raises(WeightsHashError):
        fetch("resnet18", "IMAGENET1K_V1", cache)
    assert not cache.exists()  # nothing half-downloaded or unverified is left behind, not even the folder it made
    right = dataclasses.replace(published, url=source.as_uri(), sha256=sha256_of(source))
    monkeypatch.setitem(WEIGHTS, "resnet18", {"IMAGENET1K_V1": right})
    assert fetch("resnet18", "IMAGENET1K_V1", cache) == cache / source.name
    assert sha256_of(cache / source.name) == sha256_of(source)


# ------------------------------------------------------------------------------------------------
# Prediction.


def test_imagenet_class_names_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000
    assert (names[0], names[281], names[999]) == ("tench", "tabby", "toilet tissue")


def test_preprocessing_is_torchvisions_resize_crop_normalize():
    assert resized_size(480, 640, 256) == (256, 341)  # torchvision: int(256 * 640 / 480)
    assert resized_size(640, 480, 232) == (309, 232)
    color = np.array([200, 100, 50], np.uint8)
    image = np.broadcast_to(color, (300, 400, 3)).copy()
    out = preprocess(image, weights_info("resnet50", "IMAGENET1K_V2").preprocessing)
    expected = (color / 255.0 - np.array((0.485, 0.456, 0.406))) / np.array((0.229, 0.224, 0.225))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-5)
    # The crop is centred: a bright band in the middle columns stays in the middle.
    image[:, 190:210] = 255
    out = preprocess(image, weights_info("resnet50", "IMAGENET1K_V2").preprocessing)
    bright = np.flatnonzero(out[0, :, 0] > expected[0] + 0.5)
    assert abs((bright.min() + bright.max()) / 2 - 111.5) <= 1


def test_a_long_strip_is_cropped_without_resizing_it_whole(monkeypatch):
    """A 1 x 1000 px image resizes to 256 x 256,000 (3.7 GB at its peak; 1 x 60,000 would need 47 GB): past
    a size only the centre crop is resampled, equal to cropping the whole resize within a grey level."""
    from jaxconv.pretrained import predict

    strip = np.random.default_rng(0).integers(0, 256, (3, 500, 3), dtype=np.uint8)  # 256 x 42,666 when whole
    pre = weights_info("resnet50", "IMAGENET1K_V2").preprocessing
    whole = preprocess(strip, pre)
    monkeypatch.setattr(predict, "_WHOLE_RESIZE_PIXELS", 0)
    cropped = preprocess(strip, pre)
    grey_levels = np.abs(whole - cropped) * np.asarray(pre.std, np.float32) * 255
    assert cropped.shape == (224, 224, 3) and grey_levels.max() <= 1.01 and (grey_levels > 0.5).mean() < 0.01


@pytest.fixture(scope="module")
def prediction_inputs(tmp_path_factory):
    """Two small PNGs (one in a folder, with a text file beside it) and seeded resnet18 weights."""
    import tensorflow as tf
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    first = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    second = np.broadcast_to(np.linspace(0, 255, 80, dtype=np.float32)[:, None, None], (80, 60, 3)).astype(np.uint8)
    (root / "first.png").write_bytes(tf.io.encode_png(first).numpy())
    (root / "folder").mkdir()
    (root / "folder" / "second.png").write_bytes(tf.io.encode_png(second).numpy())
    (root / "folder" / "notes.txt").write_text("not an image")
    save_file(synthetic_state("resnet18"), str(root / "resnet18.safetensors"))
    return root


def test_predict_prints_top_k_classes_and_skips_non_images(prediction_inputs, capsys):
    root = prediction_inputs
    weights = str(root / "resnet18.safetensors")
    args = ["predict", str(root / "first.png"), str(root / "folder"), "--model", "resnet18", "--weights", weights]
    assert main([*args, "--format", "json", "--top", "3"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert f"skipped {root / 'folder' / 'notes.txt'}: not an image" in captured.err
    # not the BMP check's "pos 28 out of range" (a short file), nor TensorFlow's C++ warning beside its error
    assert f"{root / 'folder' / 'notes.txt'}: not an image (no JPEG, PNG, GIF, BMP or WebP signature)" in captured.err
    assert "rendezvous" not in captured.err
    assert report["skipped"] == 1
    assert report["preprocessing"] == {"tag": "IMAGENET1K_V1", "resize": 256, "crop": 224, "interpolation": "bilinear",
                                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert [r["file"] for r in report["results"]] == [str(root / "first.png"), str(root / "folder" / "second.png")]

    # The same numbers as preprocessing and running the model directly.
    import tensorflow as tf

    model, variables = load_pretrained("resnet18", weights)
    pre = weights_info("resnet18").preprocessing
    images = np.stack([preprocess(tf.io.decode_png((root / r["file"]).read_bytes(), channels=3).numpy(), pre)
                       for r in report["results"]])
    probabilities = np.asarray(jax.nn.softmax(model.apply(variables, images, train=False), axis=-1))
    for result, row in zip(report["results"], probabilities):
        top = result["top"]
        assert [t["class"] for t in top] == list(np.argsort(-row)[:3])
        assert [t["label"] for t in top] == [imagenet_classes()[t["class"]] for t in top]
        np.testing.assert_allclose([t["probability"] for t in top], np.sort(row)[::-1][:3], rtol=1e-4)
        assert sum(t["probability"] for t in top) <= 1.0

    assert main([*args[:2], "--model", "resnet18", "--weights", weights, "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(root / "first.png") and len(lines) == 3
    assert lines[1].strip().endswith(f"{imagenet_classes()[report['results'][0]['top'][0]['class']]} "
                                     f"({report['results'][0]['top'][0]['class']})")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--weights", "IMAGENET1K_V9"], "--weights IMAGENET1K_V9: neither a file nor a published tag of resnet18"),
        (["--weights", "IMAGENET1K_V1", "--no-download", "--weights-dir", "{root}/empty"],
         "download https://download.pytorch.org/models/resnet18-f37072fd.pth and save it as {root}/empty/"),
        (["--weights", "{root}/resnet18.safetensors", "--weights-tag", "V2"], "--weights-tag V2: resnet18's published"),
        (["--weights", "{root}/resnet18.safetensors", "--model", "resnet20"], "--model resnet20: no ImageNet weights"),
        (["--weights", "{root}/resnet18.safetensors", "--top", "5000"], "--top 5000: there are 1000 ImageNet classes"),
        (["--weights", "IMAGENET1K_V1", "--weights-dir", "{root}/first.png"], "--weights-dir {root}/first.png: is a file"),
        (["{root}/empty", "--weights", "{root}/resnet18.safetensors"], "{root}/empty: holds no file"),
    ],
)
def test_predict_bad_arguments_are_one_line_with_status_2(prediction_inputs, capsys, extra, needle):
    root = str(prediction_inputs)
    (prediction_inputs / "empty").mkdir(exist_ok=True)
    model = [] if "--model" in extra else ["--model", "resnet18"]
    argv = ["predict", f"{root}/first.png", *model, *[e.format(root=root) for e in extra]]
    if extra[0].endswith("/empty"):  # only an empty folder to predict
        argv = ["predict", *[e.format(root=root) for e in extra], "--model", "resnet18"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxconv: error:") and needle.format(root=root) in err[0]


def test_predict_without_any_image_exits_2(prediction_inputs, capsys):
    root = prediction_inputs
    argv = ["predict", str(root / "folder" / "notes.txt"), "--model", "resnet18",
            "--weights", str(root / "resnet18.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "none of the 1 input(s) is an image that could be read (" in err
    assert "notes.txt" in err.strip().splitlines()[-1]  # the last line names the file, not only the one before
    missing = [str(root / "nope.png"), str(root / "nope2.jpg")]
    assert main(["predict", *missing, "--model", "resnet18", "--weights", str(root / "resnet18.safetensors")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"jaxconv: error: {', '.join(missing)}: no such file or folder; give image files, or folders of them"]


def test_a_weights_path_that_is_not_one_is_named():
    with pytest.raises(TypeError, match="the weights file must be a path .* got None"):
        load_pretrained("resnet18", None)


def test_a_folder_or_a_weights_file_holding_a_nan_is_refused_in_one_line(tmp_path):
    """A folder is not 'a file that does not exist'; a NaN would load and make every prediction NaN."""
    from safetensors.numpy import save_file

    state = random_state_dict(torch_layout("resnet18", **TINY), seed=7)
    key = sorted(k for k, v in state.items() if v.dtype.kind == "f")[3]
    state[key] = state[key].copy()
    state[key].flat[0] = np.nan
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsFormatError, match=f"nan.safetensors: entry '{key}' holds non-finite values"):
        load_pretrained("resnet18", tmp_path / "nan.safetensors", **TINY)
    with pytest.raises(FileNotFoundError, match="is a folder: give the .pth or .safetensors file itself "
                                                r"\(in it: nan.safetensors\)"):
        load_pretrained("resnet18", tmp_path, **TINY)


def test_predict_ranks_by_the_logits_when_the_probabilities_underflow(tmp_path):
    """A dominant class left the other probabilities 0 in float32: the top 5 read [7, 0, 1, 2, 3] (ties broken by
    index) where the logits say [7, 900, 500, 42, 3], as torchvision's topk on the logits does."""
    import jax.numpy as jnp
    from PIL import Image

    from jaxconv.declarations import Preprocessing
    from jaxconv.pretrained import predict

    class Dominant:
        def apply(self, variables, x, train=False):
            logits = jnp.full((x.shape[0], 1000), -1000.0)
            for index, value in ((7, 0.0), (900, -120.0), (500, -130.0), (42, -140.0), (3, -150.0)):
                logits = logits.at[:, index].set(value)
            return logits

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "x.png")
    (found,) = predict.predict_files([tmp_path / "x.png"], Dominant(), {},
                                     Preprocessing(32, 32, "bilinear", (0.0,) * 3, (1.0,) * 3))
    assert [index for index, _, _ in found.top] == [7, 900, 500, 42, 3]
    assert found.top[0][2] == 1.0 and found.top[1][2] == 0.0  # the probabilities shown are still softmax's


def test_a_weights_file_takes_the_preprocessing_of_the_set_it_is_named_as(tmp_path):
    """predict gave torchvision's mobilenet_v2-7ebf99e0.pth (IMAGENET1K_V2: resize 232) the first set's resize of
    256; export recorded no preprocessing at all for a file not named as a published one."""
    from safetensors.numpy import save_file

    from jaxconv import export
    from jaxconv.pretrained.weights import weight_set_of_file

    assert [(w.tag, how) for w, how in (weight_set_of_file("mobilenet_v2", "/w/mobilenet_v2-7ebf99e0.pth"),
                                        weight_set_of_file("mobilenet_v2", "mine.pth"),
                                        weight_set_of_file("mobilenet_v2", "mine.pth", "IMAGENET1K_V2"))] == [
        ("IMAGENET1K_V2", "file name"), ("IMAGENET1K_V1", "assumed"), ("IMAGENET1K_V2", "given")]
    assert weight_set_of_file("mobilenet_v2", "/w/mobilenet_v2-7ebf99e0.pth")[0].preprocessing.resize == 232
    save_file(synthetic_state("resnet18"), str(tmp_path / "mine.safetensors"))
    _, _, shape, metadata = export.from_weights("resnet18", str(tmp_path / "mine.safetensors"))
    assert shape == (1, 224, 224, 3) and metadata["preprocessing"]["resize"] == 256
    assert "mine.safetensors is not named as a published file, so IMAGENET1K_V1's preprocessing is assumed" in \
        metadata["preprocessing"]["note"]
    assert metadata["class_names"][:2] == ["tench", "goldfish"] and len(metadata["class_names"]) == 1000
