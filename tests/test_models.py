"""Every registered model: builds, has the published parameter count, runs, trains.

Parametrized over the registry, so a newly registered model is tested the moment it exists.
Shapes and counts come from jax.eval_shape; real forward passes run on host-filled
parameters (see conftest) at a small input size.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv
from conftest import cached_summary, host_variables, small_input_size
from jaxconv.layers.conv import reference_convolutions
from reference import (
    ALLCNN_C_MILLIONS,
    CIFAR_RESNET_MILLIONS,
    LENET5_PARAMS,
    PAPER_PARAMS,
    TORCHVISION,
    small_inception_params,
)

ALL_MODELS = jaxconv.list_models()
# The forward pass runs for one network per code path (a family's variants differ in depth and width
# only); the others are checked by eval_shape, on the one convolution primitive per layer (no compile).
RUN_FORWARD = {"alexnet", "allcnn_c", "googlenet", "inception_small", "inception_small_naive", "lenet5",
               "mobilenet_v3_small", "plain18", "plain20", "resnet20", "vgg11"}
# One network of every other family runs in tests/test_pretrained.py's parity test (ResNet-18 and -50,
# VGG-11-BN, MobileNetV2, EfficientNet-B0, SqueezeNet 1.1, ...), its logits checked against torchvision's.
# For each family without a network in RUN_FORWARD, the output shapes of its cheapest variant are checked by
# eval_shape: every variant is traced at its full size by test_parameter_count's summary, which a geometry error
# would stop.
def _cheapest_per_family() -> list[str]:
    def cost(name):
        published = jaxconv.model_info(name).published
        return (published.gmacs or 0.0) if published else 0.0, name
    families = {jaxconv.model_info(name).family: name for name in RUN_FORWARD}
    for name in sorted(ALL_MODELS, key=cost):
        families.setdefault(jaxconv.model_info(name).family, name)
    return sorted(families.values())


SHAPE_CHECKED = _cheapest_per_family()
FORWARD_MODELS = sorted(RUN_FORWARD | set(SHAPE_CHECKED))


def parameter_count(name: str, **overrides) -> int:
    info = jaxconv.model_info(name)
    model = jaxconv.get_model(name, **overrides)
    x = jax.ShapeDtypeStruct((1, info.image_size, info.image_size, info.in_channels), jnp.float32)
    with reference_convolutions():  # one convolution primitive per layer: the CPU's rewrites trace far longer
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"]))


def published_count(name: str) -> int | None:
    if name in TORCHVISION:
        return TORCHVISION[name][0]
    if name in PAPER_PARAMS:
        return PAPER_PARAMS[name]
    if name == "lenet5":
        return LENET5_PARAMS
    return None


@pytest.mark.xdist_group("summaries")  # shares the summary cache with test_analysis and test_readme
@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count(name):
    count = cached_summary(name).params
    published = published_count(name)
    if published is not None:
        assert count == published
    elif name in CIFAR_RESNET_MILLIONS:
        assert round(count / 1e6, 2 if count < 1e6 else 1) == CIFAR_RESNET_MILLIONS[name]
    elif name.startswith("plain"):
        # The ResNet paper: plain nets and ResNets with option-A shortcuts have the same parameters.
        twin = name.replace("plain", "resnet")
        option_a = "A" if jaxconv.model_info(twin).family == "resnet" else None
        expected = cached_summary(twin).params if option_a is None else parameter_count(twin, shortcut="A")
        assert count == expected
    elif name == "allcnn_c":
        assert int(count / 1e5) / 10 == ALLCNN_C_MILLIONS
    elif name.startswith("inception_small"):
        assert count == small_inception_params("naive" if name.endswith("naive") else "reduced")
    else:
        pytest.fail(f"{name} has no published parameter count to check against; add one to tests/reference.py")


def test_paper_options_change_counts_as_published():
    assert parameter_count("alexnet", groups=2) == PAPER_PARAMS["alexnet_groups2"]
    # A Module given to summary() is analysed at its registered models' size: AlexNet's 227 (224 does not fit)
    grouped = jaxconv.summary(jaxconv.get_model("alexnet", groups=2))
    assert grouped.input_shape == (1, 227, 227, 3) and grouped.params == PAPER_PARAMS["alexnet_groups2"]
    assert parameter_count("googlenet", aux_logits=True) == PAPER_PARAMS["googlenet_aux"]
    # v1 and v1.5 differ in where the stride goes, not in parameters.
    assert parameter_count("resnet50", variant="v1") == TORCHVISION["resnet50"][0]
    # The lecture's ZFNet (conv3-5 of 512-1024-512) is a bigger network than the paper's.
    assert parameter_count("zfnet", widths=(96, 256, 512, 1024, 512)) > PAPER_PARAMS["zfnet"]


def check_outputs(logits, features, batch: int, num_classes: int) -> None:
    assert logits.shape == (batch, num_classes)
    assert features["pre_logits"].ndim == 2
    assert len(features) >= 3
    for key, value in features.items():
        assert value.shape[0] == batch, key


@pytest.mark.parametrize("name", FORWARD_MODELS)
def test_forward_on_a_small_input(name):
    """Logits and features have the right shapes; the output is finite and depends on the input.

    Networks outside RUN_FORWARD are checked with eval_shape at their full size instead of being run
    (one trace of the initialisation and its output).
    """
    from jaxconv.layers.conv import reference_convolutions

    info = jaxconv.model_info(name)
    model = jaxconv.get_model(name, num_classes=5)
    if name not in RUN_FORWARD:
        x = jax.ShapeDtypeStruct((2, info.image_size, info.image_size, info.in_channels), jnp.float32)
        with reference_convolutions():
            (logits, features), _ = jax.eval_shape(
                lambda x: model.init_with_output(jax.random.key(0), x, return_features=True), x)
        check_outputs(logits, features, 2, 5)
        return
    size = small_input_size(name)
    x = np.random.default_rng(1).standard_normal((2, size, size, info.in_channels)).astype(np.float32)
    variables = host_variables(model, x)
    logits, features = jax.jit(lambda v, x: model.apply(v, x, train=False, return_features=True))(variables, x)
    check_outputs(logits, features, 2, 5)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert float(jnp.std(logits)) > 0  # not a constant function of the input


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "allcnn_c"])
def test_gradient_steps_reduce_the_loss(name):
    """A few SGD steps in training mode (BatchNorm updating, dropout on) fit a fixed batch better.

    The loss is compared before and after with the same dropout mask, so only the parameters differ.
    """
    info = jaxconv.model_info(name)
    model = jaxconv.get_model(name, num_classes=4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, info.image_size, info.image_size, info.in_channels)).astype(np.float32)
    labels = jnp.arange(8) % 4
    variables = host_variables(model, x)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    optimizer = optax.sgd(0.02, momentum=0.9)

    def loss_fn(params, state, key):
        logits, new_state = model.apply(
            {"params": params, **state}, x, train=True, mutable=list(state), rngs={"dropout": key}
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state

    @jax.jit
    def step(params, state, opt_state, key):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, grads

    probe = jax.jit(lambda params, state: loss_fn(params, state, jax.random.key(99))[0])
    before = float(probe(params, state))
    opt_state = optimizer.init(params)
    start_stats = state
    for i in range(5):
        params, state, opt_state, grads = step(params, state, opt_state, jax.random.key(i))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(probe(params, start_stats)) < before
    if "batch_stats" in state:  # the running statistics moved
        moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), state, start_stats)
        assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_googlenet_aux_logits_are_sown_in_training():
    model = jaxconv.get_model("googlenet", num_classes=3, aux_logits=True)
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["aux_logits"], rngs={"dropout": jax.random.key(0)}),
        {"params": variables["params"]},
        x,
    )
    aux = state["aux_logits"]
    assert aux["aux1_logits"][0].shape == (2, 3) and aux["aux2_logits"][0].shape == (2, 3)


def test_convnext_stochastic_depth_and_feature_maps_follow_torchvision():
    """torchvision's rule, stochastic_depth_prob * block / (blocks - 1): 0 at the first of ConvNeXt-T's 18 blocks,
    0.1 at the last; features at strides 4, 4, 8, 16, 32 (the downsampling opens stages 2-4), pre_logits pooled."""
    from jaxconv.layers import DropPath

    model = jaxconv.get_model("convnext_tiny")
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    rates = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, DropPath) and context.method_name == "__call__":
            rates.append(context.module.rate)
        return next_fun(*args, **kwargs)

    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    with nn.intercept_methods(record):
        _, features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, x)
    assert rates == pytest.approx([0.1 * block / 17 for block in range(18)], abs=1e-12)
    assert {key: value.shape for key, value in features.items()} == {
        "stem": (2, 56, 56, 96), "stage1": (2, 56, 56, 96), "stage2": (2, 28, 28, 192), "stage3": (2, 14, 14, 384),
        "stage4": (2, 7, 7, 768), "pre_logits": (2, 768)}
    assert "downsample" not in variables["params"]["stage1"]["block0"]
    assert all("downsample" in variables["params"][f"stage{s}"]["block0"] for s in (2, 3, 4))
    assert not any("downsample" in variables["params"]["stage3"][f"block{b}"] for b in range(1, 9))


def test_mobilenet_v3_stages_follow_the_resolution_and_torchvision_table():
    """A stage opens at each stride-2 block: large's 1, 2, 3, 6, 3 blocks at strides 2-32, small's 1, 2, 5, 3 at 4-32;
    a block expands only when its expanded width differs from its input (the first of each), and its SE squeezes
    to make_divisible(expanded // 4) channels: large's 72 -> 24 (18 rounds up), small's first block 16 -> 8."""
    shapes = {}
    for name in ("mobilenet_v3_large", "mobilenet_v3_small"):
        model = jaxconv.get_model(name)
        x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        _, features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, x)
        shapes[name] = ({key: value.shape for key, value in features.items()}, variables["params"])
    large, params = shapes["mobilenet_v3_large"]
    assert large == {"stem": (2, 112, 112, 16), "stage1": (2, 112, 112, 16), "stage2": (2, 56, 56, 24),
                     "stage3": (2, 28, 28, 40), "stage4": (2, 14, 14, 112), "stage5": (2, 7, 7, 160),
                     "head": (2, 7, 7, 960), "pre_logits": (2, 1280)}
    assert [len(params[f"stage{s}"]) for s in range(1, 6)] == [1, 2, 3, 6, 3]
    assert set(params["stage1"]["block0"]) == {"depthwise", "project"}
    assert set(params["stage3"]["block0"]) == {"expand", "depthwise", "se", "project"}
    assert params["stage3"]["block0"]["se"]["fc1"]["kernel"].shape == (1, 1, 72, 24)
    small, params = shapes["mobilenet_v3_small"]
    assert small == {"stem": (2, 112, 112, 16), "stage1": (2, 56, 56, 16), "stage2": (2, 28, 28, 24),
                     "stage3": (2, 14, 14, 48), "stage4": (2, 7, 7, 96), "head": (2, 7, 7, 576),
                     "pre_logits": (2, 1024)}
    assert [len(params[f"stage{s}"]) for s in range(1, 5)] == [1, 2, 5, 3]
    assert set(params["stage1"]["block0"]) == {"depthwise", "se", "project"}
    assert params["stage1"]["block0"]["se"]["fc1"]["kernel"].shape == (1, 1, 16, 8)


def test_mobilenet_v3_width_multiplier_counts_as_torchvision():
    """torchvision's width_mult=0.75 (counted with torchvision 0.29.1): every width x0.75, rounded to multiples of 8."""
    assert parameter_count("mobilenet_v3_large", width=0.75) == 3_377_576
    assert parameter_count("mobilenet_v3_small", width=0.75) == 1_653_920


def test_densenet_stages_grow_by_the_growth_rate_and_transitions_halve():
    """DenseNet-121: 64 stem channels + 6 x 32 = 256, halved to 128 + 12 x 32 = 512, 256 + 24 x 32 = 1024,
    512 + 16 x 32 = 1024 at strides 4-32; DenseNet-161 (k = 48, 96 stem channels) ends at 2208, as torchvision's
    norm5. Each layer's bottleneck is 4k wide and sees every map before it."""
    for name, widths in (("densenet121", (64, 256, 512, 1024, 1024)), ("densenet161", (96, 384, 768, 2112, 2208))):
        model = jaxconv.get_model(name)
        x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        _, features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, x)
        assert {key: value.shape for key, value in features.items()} == {
            "stem": (2, 56, 56, widths[0]), "stage1": (2, 56, 56, widths[1]), "stage2": (2, 28, 28, widths[2]),
            "stage3": (2, 14, 14, widths[3]), "stage4": (2, 7, 7, widths[4]), "pre_logits": (2, widths[4])}
        params = variables["params"]
        growth = model.growth
        assert "transition" not in params["stage1"] and "transition" in params["stage4"]
        assert params["stage3"]["transition"]["conv"]["kernel"].shape == (1, 1, widths[2], widths[2] // 2)
        assert params["stage2"]["block5"]["conv1"]["kernel"].shape == (1, 1, widths[1] // 2 + 5 * growth, 4 * growth)
        assert params["stage2"]["block5"]["conv2"]["kernel"].shape == (3, 3, 4 * growth, growth)


def test_efficientnet_v2_fuses_the_early_stages_and_heads_at_1280():
    """EfficientNetV2-S as torchvision's table builds it: a 24-channel stem, three Fused-MBConv stages of 2, 4, 4 blocks
    (the first without expansion: one 3x3 conv with its activation; then a 3x3 expansion x4 and a 1x1 projection),
    three MBConv stages of 6, 9, 15 with SE on a quarter of the block's input, a 1280-channel head conv; strides 2-32
    at its 384 px eval size. V2-L's stem has 32 channels."""
    model = jaxconv.get_model("efficientnet_v2_s")
    x = jax.ShapeDtypeStruct((2, 384, 384, 3), jnp.float32)
    with reference_convolutions():  # one trace for the variables and the feature maps
        (_, features), variables = jax.eval_shape(
            lambda x: model.init_with_output(jax.random.key(0), x, return_features=True), x)
    assert {key: value.shape for key, value in features.items()} == {
        "stem": (2, 192, 192, 24), "stage1": (2, 192, 192, 24), "stage2": (2, 96, 96, 48), "stage3": (2, 48, 48, 64),
        "stage4": (2, 24, 24, 128), "stage5": (2, 24, 24, 160), "stage6": (2, 12, 12, 256), "head": (2, 12, 12, 1280),
        "pre_logits": (2, 1280)}
    params = variables["params"]
    assert [len(params[f"stage{s}"]) for s in range(1, 7)] == [2, 4, 4, 6, 9, 15]
    assert set(params["stage1"]["block1"]) == {"fused"}
    assert set(params["stage2"]["block0"]) == {"expand", "project"}
    assert params["stage2"]["block0"]["expand"]["conv"]["kernel"].shape == (3, 3, 24, 96)
    assert set(params["stage4"]["block0"]) == {"expand", "depthwise", "se", "project"}
    assert params["stage4"]["block0"]["se"]["fc1"]["kernel"].shape == (1, 1, 256, 16)  # 64 // 4
    assert params["stage5"]["block1"]["se"]["fc1"]["kernel"].shape == (1, 1, 960, 40)  # 160 // 4
    assert jaxconv.get_model("efficientnet_v2_l").stem_width == 32


def test_shufflenet_v2_stages_halve_the_map_and_open_with_a_two_branch_unit():
    """torchvision's stages_out_channels: x1.0's 24 after the stem and max pool (stride 4), 116, 232, 464 at strides
    8-32 and 1024 after conv5; x2.0's 244, 488, 976 and 2048. Only the stride-2 unit opening each stage has the first
    branch (depthwise 3x3/2 on the whole input, then 1x1 to half the width); the others convolve half their input."""
    for name, widths in (("shufflenet_v2_x1_0", (24, 116, 232, 464, 1024)),
                         ("shufflenet_v2_x2_0", (24, 244, 488, 976, 2048))):
        model = jaxconv.get_model(name)
        x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
        with reference_convolutions():  # one trace: the output and the variables' shapes together
            (_, features), variables = jax.eval_shape(
                lambda x: model.init_with_output(jax.random.key(0), x, return_features=True), x)
        assert {key: value.shape for key, value in features.items()} == {
            "stem": (2, 56, 56, widths[0]), "stage1": (2, 28, 28, widths[1]), "stage2": (2, 14, 14, widths[2]),
            "stage3": (2, 7, 7, widths[3]), "head": (2, 7, 7, widths[4]), "pre_logits": (2, widths[4])}
        params = variables["params"]
        assert [len(params[f"stage{s}"]) for s in (1, 2, 3)] == [4, 8, 4]
        for stage in ("stage1", "stage2", "stage3"):
            assert [any(key.startswith("branch1") for key in params[stage][block]) for block in params[stage]] == [
                True] + [False] * (len(params[stage]) - 1)
        half = widths[2] // 2
        assert params["stage2"]["block0"]["branch1_depthwise"]["conv"]["kernel"].shape == (3, 3, 1, widths[1])
        assert params["stage2"]["block0"]["branch1_pointwise"]["conv"]["kernel"].shape == (1, 1, widths[1], half)
        assert params["stage2"]["block1"]["branch2_pointwise1"]["conv"]["kernel"].shape == (1, 1, half, half)


def test_regnet_widths_are_generated_as_torchvision_generates_them():
    """From the registered generating parameters, the (blocks, width, group width) per stage of torchvision 0.29.1's
    BlockParams.from_init_params: RegNetX-8GF's first stage is narrower than its group width (min(120, 80) = 80),
    RegNetY-400MF's widths are multiples of its group width 8. RegNetY-400MF at 224 px: stages at strides 4-32, SE
    squeezing to a quarter of each block's input width (stage 3's first block: 104 -> 26; its others 208 -> 52)."""
    from jaxconv.archs.regnet import regnet_stages

    def stages(name):
        model = jaxconv.get_model(name)
        return regnet_stages(model.depth, model.w_0, model.w_a, model.w_m, model.group_width, model.bottleneck_ratio)

    assert stages("regnet_x_8gf") == [(2, 80, 80), (5, 240, 120), (15, 720, 120), (1, 1920, 120)]
    assert stages("regnet_y_400mf") == [(1, 48, 8), (3, 104, 8), (6, 208, 8), (6, 440, 8)]
    model = jaxconv.get_model("regnet_y_400mf")
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    with reference_convolutions():
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        _, features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, x)
    assert {key: value.shape for key, value in features.items()} == {
        "stem": (2, 112, 112, 32), "stage1": (2, 56, 56, 48), "stage2": (2, 28, 28, 104), "stage3": (2, 14, 14, 208),
        "stage4": (2, 7, 7, 440), "pre_logits": (2, 440)}
    params = variables["params"]["stage3"]
    assert params["block0"]["se"]["fc1"]["kernel"].shape == (1, 1, 208, 26)
    assert params["block1"]["se"]["fc1"]["kernel"].shape == (1, 1, 208, 52)
    assert params["block1"]["conv2"]["kernel"].shape == (3, 3, 8, 208)  # 26 groups of 8
    assert "shortcut_conv" in params["block0"] and "shortcut_conv" not in params["block1"]


def test_mnasnet_depths_round_as_torchvision_and_the_stem_scales():
    """torchvision's _get_depths (listed with torchvision 0.29.1): 32, 16, 24, 40, 80, 96, 192, 320 times the depth
    multiplier, rounded to a multiple of 8, up when down would lose more than 10% (0.75 x 24 = 18 -> 24, not 16);
    the stem scales too (torchvision's _version 2), the head stays 1280. Features at strides 2, 2, 4, 8, 16, 16, 32,
    32; the separable convolution (stage 1) has no expansion, the stacks expand 3x or 6x."""
    depths = {"mnasnet0_5": (16, 8, 16, 24, 40, 48, 96, 160), "mnasnet0_75": (24, 16, 24, 32, 64, 72, 144, 240),
              "mnasnet1_0": (32, 16, 24, 40, 80, 96, 192, 320), "mnasnet1_3": (40, 24, 32, 56, 104, 128, 248, 416)}
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)

    def shapes(x, model, with_features):
        variables = model.init(jax.random.key(0), x)
        return variables["params"], model.apply(variables, x, return_features=True)[1] if with_features else None

    for name, widths in depths.items():
        model = jaxconv.get_model(name)
        with reference_convolutions():  # features of the last (1.3) only
            params, features = jax.eval_shape(partial(shapes, model=model, with_features=name == "mnasnet1_3"), x)
        found = [params["stem"]["conv"]["kernel"].shape[-1]]
        found += [params[f"stage{s}"]["block0"]["project"]["conv"]["kernel"].shape[-1] for s in range(1, 8)]
        assert tuple(found) == widths, name
        assert params["head_conv"]["conv"]["kernel"].shape == (1, 1, widths[-1], 1280)
    assert set(params["stage1"]["block0"]) == {"depthwise", "project"}
    assert params["stage2"]["block0"]["expand"]["conv"]["kernel"].shape == (1, 1, 24, 72)  # 1.3: 24 x 3
    assert params["stage6"]["block3"]["depthwise"]["conv"]["kernel"].shape == (5, 5, 1, 248 * 6)
    assert [len(params[f"stage{s}"]) for s in range(1, 8)] == [1, 3, 3, 3, 2, 4, 1]
    assert {key: value.shape[1:] for key, value in features.items()} == {
        "stem": (112, 112, 40), "stage1": (112, 112, 24), "stage2": (56, 56, 32), "stage3": (28, 28, 56),
        "stage4": (14, 14, 104), "stage5": (14, 14, 128), "stage6": (7, 7, 248), "stage7": (7, 7, 416),
        "head": (7, 7, 1280), "pre_logits": (1280,)}


def test_inception_v3_grids_and_auxiliary_head_follow_torchvision():
    """At 299 px the stem gives 35x35x192 and the three grids 35x35x288, 17x17x768 and 8x8x2048, as torchvision's
    comments say. With train=True the auxiliary head's logits are sown ('aux_logits'); in evaluation it does not
    run, so the network initialises and evaluates at 75 px (torchvision's min_size), where the head, as
    torchvision's, could not run (its 5x5/3 pool and 5x5 convolution need the 17x17 grid of 299 px): training
    there says so."""
    from jaxconv.blocks import InceptionA, InceptionB
    from jaxconv.layers import GeometryError

    model = jaxconv.get_model("inception_v3", num_classes=3)
    x, small = (jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32) for size in (299, 75))
    train = lambda v, x: model.apply(v, x, train=True, return_features=True,  # noqa: E731
                                     mutable=["batch_stats", "aux_logits"], rngs={"dropout": jax.random.key(0)})
    with reference_convolutions():
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), small)
        (logits, features), state = jax.eval_shape(train, variables, x)
        small_logits, evaluation = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["aux_logits"]),
                                                  variables, small)
    assert {key: value.shape for key, value in features.items()} == {
        "stem": (2, 35, 35, 192), "stage5": (2, 35, 35, 288), "stage6": (2, 17, 17, 768), "stage7": (2, 8, 8, 2048),
        "pre_logits": (2, 2048)}
    assert logits.shape == state["aux_logits"]["aux_logits"][0].shape == small_logits.shape == (2, 3)
    assert evaluation == {}
    assert variables["params"]["aux"]["conv1"]["conv"]["kernel"].shape == (5, 5, 128, 768)
    assert variables["params"]["mixed6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    blocks = (("5b", InceptionA, (4,) * 6), ("6a", InceptionB, (4,) * 3))  # a few channels: a quick trace
    narrow = jaxconv.get_model("inception_v3", blocks=blocks, stem_widths=(4, 4, 8, 8, 8), aux_widths=(8, 8))
    with pytest.raises(GeometryError, match=r"stage5 is 7x7 for 75x75 images\): train at 299 px .*aux_logits=False"):
        jax.eval_shape(lambda x: narrow.init(jax.random.key(0), x, train=True), small)


def matmul_dtypes(jaxpr, found=None) -> dict:
    """(primitive, lhs, rhs, out dtype) -> count for every convolution and dot in a jaxpr and its sub-jaxprs."""
    from jax.extend.core import jaxprs_in_params

    found = {} if found is None else found
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            key = (eqn.primitive.name, *(v.aval.dtype.name for v in (*eqn.invars[:2], eqn.outvars[0])))
            found[key] = found.get(key, 0) + 1
        for sub in jaxprs_in_params(eqn.params):
            matmul_dtypes(sub, found)
    return found


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "googlenet_tv", "vgg11_bn", "mobilenet_v3_small"])
def test_bfloat16_training_runs_every_convolution_in_bfloat16(name):
    """Mixed precision as the accelerators want it: with dtype=bfloat16 the forward convolutions,
    both of their gradients and the classifier's matmuls take and give bfloat16 (tensor-core
    work), while the parameter gradients come back in float32 for the optimizer."""
    info = jaxconv.model_info(name)
    model = jaxconv.get_model(name, num_classes=3, dtype=jnp.bfloat16)
    size = small_input_size(name)
    x = jax.ShapeDtypeStruct((2, size, size, info.in_channels), jnp.bfloat16)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def loss(params, state, x):
        logits, _ = model.apply({"params": params, **state}, x, train=True, mutable=list(state),
                                rngs={"dropout": jax.random.key(0)})
        return logits.astype(jnp.float32).sum()

    forward = matmul_dtypes(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x).jaxpr)
    gradient = jax.make_jaxpr(jax.grad(loss))(params, state, x)
    training = matmul_dtypes(gradient.jaxpr)
    convolutions = sum(n for (op, *_), n in forward.items() if op == "conv_general_dilated")
    assert convolutions >= 5
    # Each convolution's kernel gradient and (but for the first) input gradient is a convolution too.
    assert sum(n for (op, *_), n in training.items() if op == "conv_general_dilated") >= 3 * convolutions - 1
    assert {key[1:] for key in training} == {("bfloat16", "bfloat16", "bfloat16")}, training
    assert {aval.dtype for aval in gradient.out_avals} == {jnp.dtype(jnp.float32)}


def test_bfloat16_compute_keeps_float32_parameters():
    model = jaxconv.get_model("resnet18", num_classes=3, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert logits.dtype == jnp.bfloat16


@pytest.mark.parametrize("option, value, needle", [
    ("zero_init_last", True, "every output and gradient would be zero"),
    ("shortcut", "B", "it has no shortcuts"),
    ("drop_path_rate", 0.1, "a plain block is all branch"),
])
def test_plain_networks_refuse_the_options_that_act_through_a_shortcut(option, value, needle):
    """Accepted and ignored (shortcut, stochastic depth), or every gradient zero (zero_init_last): refused."""
    for name in ("plain20", "plain18"):
        with pytest.raises(ValueError, match=f"{option}={value!r} cannot apply: .*{needle}"):
            jaxconv.get_model(name, **{option: value})
    jaxconv.get_model("resnet20", **{option: value})  # the residual twins take them


def test_variant_is_taken_by_every_resnet_and_changes_only_bottlenecks():
    """README: variant='v1' for the paper's ResNets. Basic blocks stride alike in v1 and v1.5: the same parameters."""
    x = jnp.ones((1, 32, 32, 3))

    def shapes(name, **options):
        model = jaxconv.get_model(name, num_classes=5, depths=(1, 1, 1, 1), stem_width=8, **options)
        return jax.tree_util.tree_map(lambda a: a.shape, jax.eval_shape(lambda: model.init(jax.random.key(0), x)))

    assert shapes("resnet18", variant="v1") == shapes("resnet18", variant="v1.5") == shapes("resnet18")
    assert jaxconv.get_model("resnet20", variant="v1").variant == "v1"
    with pytest.raises(ValueError, match="variant must be .*, got 'v2'"):
        jaxconv.get_model("resnet18", variant="v2")
    shapes("resnet50", variant="v1")  # bottlenecks: where the stride goes, same shapes


def test_squeezenets_classifier_starts_near_a_uniform_guess():
    """Its classifier convolution (ReLU after it, then the average) had He's init, std sqrt(2 / classes): a fresh
    10-class SqueezeNet started at a cross-entropy of about 11 (ln 10 = 2.3); torchvision's is normal(0, 0.01)."""
    model = jaxconv.get_model("squeezenet1_1", num_classes=10)
    images = jax.random.normal(jax.random.PRNGKey(1), (16, 64, 64, 3))
    variables = model.init(jax.random.PRNGKey(0), images[:1], train=False)
    logits = model.apply(variables, images, train=False)
    labels = jnp.arange(16) % 10
    assert float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()) < 2.5
    assert float(jnp.std(variables["params"]["head"]["kernel"])) == pytest.approx(0.01, rel=0.1)
