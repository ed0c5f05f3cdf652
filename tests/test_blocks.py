"""Blocks: the shared signature, the block semantics the papers define, and a user's own block."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from conftest import host_variables
from jaxconv.blocks import (
    BasicBlock,
    Block,
    Bottleneck,
    FusedMBConv,
    Inception,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionNaive,
    MBConv,
    PlainBasicBlock,
    ShuffleNetV2Unit,
    RegNetBottleneck,
)
from jaxconv.layers import Conv, DropPath
from jaxconv.models import ResNet


def param_shapes(block, x_shape, **kwargs):
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    variables = jax.eval_shape(lambda x: block.init(jax.random.key(0), x, **kwargs), x)
    out = jax.eval_shape(lambda v, x: block.apply(v, x, **kwargs), variables, x)
    return variables["params"], out.shape


def test_bottleneck_v1_strides_the_first_1x1_and_v15_the_3x3():
    conv = partial(Conv, use_bias=False, fit="floor")
    expected = {
        "v1": {"conv1": (56, 28), "conv2": (28, 28), "conv3": (28, 28), "shortcut_conv": (56, 28)},
        "v1.5": {"conv1": (56, 56), "conv2": (56, 28), "conv3": (28, 28), "shortcut_conv": (56, 28)},
    }
    for variant, sizes in expected.items():
        calls = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, Conv):
                calls[context.module.name] = (args[0].shape[1], out.shape[1])
            return out

        block = Bottleneck(256, stride=2, conv=conv, variant=variant)
        with nn.intercept_methods(record):
            _, shape = param_shapes(block, (1, 56, 56, 64))
        assert shape == (1, 28, 28, 256)
        assert calls == sizes


def test_plain_block_has_the_same_layers_without_the_shortcut():
    conv = partial(Conv, use_bias=False, fit="floor")
    residual, _ = param_shapes(BasicBlock(64, conv=conv), (1, 8, 8, 64))
    plain, _ = param_shapes(PlainBasicBlock(64, conv=conv), (1, 8, 8, 64))
    assert jax.tree_util.tree_map(lambda a: a.shape, residual) == jax.tree_util.tree_map(lambda a: a.shape, plain)
    # With zero weights the residual block passes its input through (ReLU of it); the plain one gives zero.
    x = jnp.asarray(np.random.default_rng(0).random((1, 8, 8, 64)), jnp.float32)
    zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape), residual)
    stats = {"mean": jnp.zeros(64), "var": jnp.ones(64)}
    batch_stats = {"norm1": stats, "norm2": stats}
    y_res = BasicBlock(64, conv=conv).apply({"params": zeros, "batch_stats": batch_stats}, x)
    y_plain = PlainBasicBlock(64, conv=conv).apply({"params": zeros, "batch_stats": batch_stats}, x)
    np.testing.assert_allclose(y_res, x, rtol=1e-6)
    np.testing.assert_allclose(y_plain, 0)


@pytest.mark.parametrize("block", [BasicBlock(16), Bottleneck(16), RegNetBottleneck(16, group_width=4)],
                         ids=lambda b: type(b).__name__)
def test_zero_init_last_starts_each_block_as_its_shortcut_with_a_norm_or_without(block):
    """Goyal et al. 2017: the last norm's scale at zero; without a norm, the last convolution (Fixup's rule 2)."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 16)), jnp.float32)
    with_norm = block.clone(zero_init_last=True)
    variables = with_norm.init(jax.random.key(0), x)
    last = max(k for k in variables["params"] if k.startswith("norm"))
    assert not np.any(variables["params"][last]["scale"])
    without = block.clone(zero_init_last=True, norm=None, conv=partial(Conv, use_bias=True))
    params = without.init(jax.random.key(0), x)["params"]
    last_conv = max(k for k in params if k.startswith("conv"))
    assert not np.any(params[last_conv]["kernel"]) and np.all(params["conv1"]["kernel"] != 0)
    np.testing.assert_array_equal(without.apply({"params": params}, x), jax.nn.relu(x))
    # zero_init_last off leaves the last convolution drawn like the others
    assert np.any(block.clone(norm=None).init(jax.random.key(0), x)["params"][last_conv]["kernel"])


def test_shortcut_options():
    conv = partial(Conv, use_bias=False, fit="floor")
    a, shape_a = param_shapes(BasicBlock(32, stride=2, conv=conv, shortcut="A"), (1, 16, 16, 16))
    b, _ = param_shapes(BasicBlock(32, stride=2, conv=conv, shortcut="B"), (1, 16, 16, 16))
    c, _ = param_shapes(BasicBlock(16, conv=conv, shortcut="C"), (1, 16, 16, 16))
    assert shape_a == (1, 8, 8, 32)
    assert "shortcut_conv" not in a and b["shortcut_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert "shortcut_conv" in c  # option C projects even when the shape is unchanged
    # Option A: the identity, subsampled, with zero channels added half before and half after.
    x = jnp.asarray(np.random.default_rng(0).random((1, 4, 4, 2)), jnp.float32)
    block = BasicBlock(6, stride=2, conv=conv, norm=None, shortcut="A", act=None)
    variables = block.init(jax.random.key(0), x)
    shortcut = block.apply(variables, x, method=lambda m, x: m.identity(x, False))
    np.testing.assert_array_equal(shortcut[..., 2:4], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(shortcut[..., :2], 0)
    np.testing.assert_array_equal(shortcut[..., 4:], 0)


def test_inception_channel_arithmetic():
    _, naive = param_shapes(InceptionNaive((128, 192, 96), norm=None), (1, 28, 28, 256))
    assert naive == (1, 28, 28, 128 + 192 + 96 + 256)  # "depth can only grow"
    params, reduced = param_shapes(Inception((64, 96, 128, 16, 32, 32), norm=None), (1, 28, 28, 192))
    assert reduced == (1, 28, 28, 256)  # GoogLeNet's 3a: 28x28x192 -> 28x28x256
    assert params["branch3"]["conv"]["kernel"].shape == (5, 5, 16, 32)
    with pytest.raises(ValueError, match="stride"):
        param_shapes(Inception((64, 96, 128, 16, 32, 32), stride=2), (1, 28, 28, 192))


def test_inception_v3_modules_follow_torchvision():
    """torchvision's widths give its channels and grids: Mixed_5b 35x35x192 -> 256, the reduction 6a 288 -> 768 at
    35 -> 17, 6b 768 -> 768 with 1x7 and 7x1 convolutions, the reduction 7a 768 -> 1280 at 17 -> 8, 7b 1280 ->
    2048 with 1x3 and 3x1 outputs side by side. The pooling branch averages 3x3 windows counting the zero padding
    (PyTorch's count_include_pad): at a corner, the sum of the 2x2 real values over 9."""
    cases = [(InceptionA((64, 48, 64, 64, 96, 32)), 35, 192, 35, 256),
             (InceptionB((384, 64, 96)), 35, 288, 17, 768),
             (InceptionC((192, 128, 192, 128, 192, 192)), 17, 768, 17, 768),
             (InceptionD((192, 320, 192, 192)), 17, 768, 8, 1280),
             (InceptionE((320, 384, 384, 448, 384, 192)), 8, 1280, 8, 2048)]
    shapes = {}
    for block, size, channels, out_size, out_channels in cases:
        shapes[type(block).__name__], out = param_shapes(block, (1, size, size, channels))
        assert out == (1, out_size, out_size, out_channels), type(block).__name__
    assert shapes["InceptionC"]["branch7x7dbl_5"]["conv"]["kernel"].shape == (1, 7, 128, 192)
    assert shapes["InceptionD"]["branch7x7x3_3"]["conv"]["kernel"].shape == (7, 1, 192, 192)
    assert shapes["InceptionE"]["branch3x3dbl_3b"]["conv"]["kernel"].shape == (3, 1, 384, 384)
    assert shapes["InceptionB"]["branch3x3dbl_3"]["conv"]["kernel"].shape == (3, 3, 96, 96)

    block = InceptionA((1, 1, 1, 1, 1, 2), norm=None, act=None)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 5, 2)), jnp.float32)
    shapes = jax.eval_shape(lambda x: block.init(jax.random.key(0), x), x)  # filled on the host: no compiles
    variables = jax.tree.map(lambda leaf: np.full(leaf.shape, 0.1, np.float32), shapes)
    variables["params"]["branch_pool"]["conv"] = {"kernel": np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2),
                                                  "bias": np.zeros(2, np.float32)}
    pooled = block.apply(variables, x)[..., -2:]
    np.testing.assert_allclose(pooled[0, 0, 0], x[0, :2, :2].sum(axis=(0, 1)) / 9, rtol=1e-6)
    np.testing.assert_allclose(pooled[0, 2, 2], x[0, 1:4, 1:4].mean(axis=(0, 1)), rtol=1e-6)


def test_mbconv_structure():
    conv = partial(Conv, use_bias=False, fit="floor")
    params, shape = param_shapes(MBConv(24, stride=2, conv=conv, kernel_size=3, expand_ratio=6), (1, 32, 32, 16))
    assert shape == (1, 16, 16, 24)
    assert params["expand"]["conv"]["kernel"].shape == (1, 1, 16, 96)
    assert params["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 96)  # one filter per channel
    assert params["se"]["fc1"]["kernel"].shape == (1, 1, 96, 4)  # 0.25 x the block's 16 inputs
    same, _ = param_shapes(MBConv(16, expand_ratio=1), (1, 8, 8, 16))
    assert "expand" not in same


def test_fused_mbconv_is_a_full_kxk_expansion_then_a_linear_1x1_projection():
    """EfficientNetV2's Fused-MBConv, against its definition: y = x + W2 * swish(W1 *3x3 x + b1) + b2 when the shape is
    unchanged (no norm here, so the convolutions carry biases); without expansion, one strided kxk conv with swish."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 7, 7, 8)), jnp.float32)
    block = FusedMBConv(8, expand_ratio=4, norm=None)
    shapes, _ = param_shapes(block, x.shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32) * 0.3, shapes)
    assert set(params) == {"expand", "project"} and params["expand"]["conv"]["kernel"].shape == (3, 3, 8, 32)

    def convolve(x, layer, padding, layout=("NHWC", "HWIO", "NHWC")):
        y = jax.lax.conv_general_dilated(x, layer["kernel"], (1, 1), padding, dimension_numbers=layout)
        return y + layer["bias"]

    hidden = jax.nn.silu(convolve(x, params["expand"]["conv"], [(1, 1)] * 2))
    expected = x + convolve(hidden, params["project"]["conv"], [(0, 0)] * 2)
    np.testing.assert_allclose(jax.jit(block.apply)({"params": params}, x), expected, rtol=1e-5, atol=1e-5)

    # expand_ratio 1 with new channels: one 3x3/2 conv with the activation (torchvision's), no residual.
    conv = partial(Conv, use_bias=False, fit="floor")
    fused, shape = param_shapes(FusedMBConv(16, stride=2, expand_ratio=1, conv=conv), (1, 7, 7, 8))
    assert set(fused) == {"fused"} and fused["fused"]["conv"]["kernel"].shape == (3, 3, 8, 16)
    assert shape == (1, 4, 4, 16)


def test_shufflenet_v2_unit_keeps_half_its_input_and_shuffles_the_branches_together(rng):
    """Stride 1 (Fig. 3c): the input's first half passes unchanged and, after the shuffle, fills the even channels;
    the odd ones are the second branch's, computed from the second half alone. Stride 2 (Fig. 3d): both branches
    see the whole input (no split), the width changes and the map halves (floor on odd sizes)."""
    conv = partial(Conv, use_bias=False, fit="floor")
    unit = ShuffleNetV2Unit(8, conv=conv)
    x = rng.standard_normal((2, 5, 5, 8)).astype(np.float32)
    variables = host_variables(unit, x)
    assert set(variables["params"]) == {"branch2_pointwise1", "branch2_depthwise", "branch2_pointwise2"}
    assert variables["params"]["branch2_pointwise1"]["conv"]["kernel"].shape == (1, 1, 4, 4)
    apply = jax.jit(unit.apply)  # one compile for both inputs
    y = np.asarray(apply(variables, x))
    np.testing.assert_array_equal(y[..., 0::2], x[..., :4])
    changed = x.copy()
    changed[..., :4] += 1.0  # the kept half only: the branch's channels stay
    y_changed = np.asarray(apply(variables, changed))
    np.testing.assert_array_equal(y_changed[..., 1::2], y[..., 1::2])
    np.testing.assert_array_equal(y_changed[..., 0::2], changed[..., :4])
    params, shape = param_shapes(ShuffleNetV2Unit(16, stride=2, conv=conv), (1, 9, 9, 8))
    assert shape == (1, 5, 5, 16)
    assert params["branch1_depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 8)  # depthwise on the whole input
    assert params["branch1_pointwise"]["conv"]["kernel"].shape == (1, 1, 8, 8)
    assert params["branch2_pointwise1"]["conv"]["kernel"].shape == (1, 1, 8, 8)
    assert params["branch2_depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 8)
    with pytest.raises(ValueError, match="the input's 8 channels must equal features=16"):
        param_shapes(ShuffleNetV2Unit(16, conv=conv), (1, 4, 4, 8))

def test_regnet_bottleneck_structure():
    """torchvision's ResBottleneckBlock: 1x1, 3x3 in groups of group_width (stride), SE squeezing to a quarter of
    the block's input width, 1x1; a projection when the shape changes. With zero weights it gives ReLU(x)."""
    conv = partial(Conv, use_bias=False, fit="floor")
    params, shape = param_shapes(RegNetBottleneck(48, stride=2, conv=conv, group_width=8, se_ratio=0.25),
                                 (1, 15, 15, 32))
    assert shape == (1, 8, 8, 48)
    assert params["conv1"]["kernel"].shape == (1, 1, 32, 48)
    assert params["conv2"]["kernel"].shape == (3, 3, 8, 48)  # 6 groups of 8 channels
    assert params["se"]["fc1"]["kernel"].shape == (1, 1, 48, 8) and params["se"]["fc2"]["bias"].shape == (48,)
    assert params["shortcut_conv"]["kernel"].shape == (1, 1, 32, 48)
    same, _ = param_shapes(RegNetBottleneck(48, conv=conv, group_width=16), (1, 8, 8, 48))
    assert "se" not in same and "shortcut_conv" not in same and same["conv2"]["kernel"].shape == (3, 3, 16, 48)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 48)), jnp.float32)
    zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape), same)
    stats = {"mean": jnp.zeros(48), "var": jnp.ones(48)}
    y = RegNetBottleneck(48, conv=conv, group_width=16).apply(
        {"params": zeros, "batch_stats": {"norm1": stats, "norm2": stats, "norm3": stats}}, x)
    np.testing.assert_allclose(y, jax.nn.relu(x), rtol=1e-6)
    with pytest.raises(ValueError, match="group_width=16 must divide the inner width 40"):
        param_shapes(RegNetBottleneck(40, conv=conv, group_width=16), (1, 8, 8, 40))


# --- a block of the user's own, through the public API only ------------------------------------


class PreActBlock(Block):
    """Pre-activation residual block (He et al. 2016, "Identity mappings"): BN-ReLU-conv twice."""

    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        y = self.activate(self.normalize(x, "norm1", train))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = self.conv(self.features, 1, self.stride, name="shortcut_conv")(y)
        y = self.conv(self.features, 3, self.stride, padding=1, name="conv1")(y)
        y = self.activate(self.normalize(y, "norm2", train))
        y = self.conv(self.features, 3, 1, padding=1, name="conv2")(y)
        return DropPath(self.drop_path)(y, deterministic=not train) + shortcut


def test_a_custom_block_builds_runs_trains_and_is_analyzed():
    model = ResNet(
        block=PreActBlock,
        depths=(2, 2),
        widths=(16, 32),
        stem=jaxconv.models.CifarStem,
        stem_width=16,
        num_classes=10,
        drop_path_rate=0.1,
    )
    x = np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params = variables["params"]
    assert set(params["stage2"]["block0"]) >= {"conv1", "conv2", "norm1", "norm2", "shortcut_conv"}
    logits, features = jax.jit(partial(model.apply, return_features=True))(variables, x)
    assert logits.shape == (4, 10) and features["stage2"].shape == (4, 8, 8, 32)

    # Trains: one SGD step lowers the loss on the batch.
    labels = jnp.arange(4)

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(1)})
        return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(4), labels])

    loss = jax.jit(loss)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    stepped = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, params, grads)
    assert float(loss(stepped)) < float(value)

    # Analyzed like a built-in network.
    result = jaxconv.summary(model, image_size=16)
    assert result.params == sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    convs = {layer.name: layer for layer in result.layers if layer.kind == "Conv"}
    conv1 = convs["stage1/block0/conv1"]
    assert conv1.macs == 16 * 16 * 16 * 9 * 16
    assert convs["stem/conv"].receptive_field == 3
    assert conv1.receptive_field == 5 and convs["stage1/block0/conv2"].receptive_field == 7
    assert convs["stage2/block0/conv1"].jump == 2
