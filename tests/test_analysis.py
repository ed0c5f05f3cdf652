"""The analyzer against published numbers: torchvision's GMACs, XLA's cost model, the lectures' tables."""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxconv
from conftest import cached_summary
from jaxconv.blocks import Inception, InceptionNaive
from jaxconv.layers import Conv
from jaxconv.layers.geometry import as_pair, explicit_padding
from reference import (
    ALEXNET_CONV1,
    ALEXNET_RF,
    INCEPTION_NAIVE_PRINTED,
    INCEPTION_REDUCED_PRINTED,
    INCEPTION_REDUCED_SLIDE_TERMS,
    RESNET50_V1_GMACS,
    TORCHVISION,
    VGG16_LECTURE_INPUT,
    VGG16_LECTURE_PRINTED_MEMORY,
    VGG16_LECTURE_ROWS,
    VGG16_LECTURE_TOTAL_MILLIONS,
    VGG16_RF,
)

# Tests sharing expensive session caches run on one xdist worker (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("summaries")


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_macs_match_torchvision_within_one_percent(name):
    _, gmacs, size = TORCHVISION[name]
    result = cached_summary(name, image_size=size)
    # torchvision gives _ops to three decimals; for ShuffleNet V2 x0.5 (0.040476 -> 0.04) the rounding alone is
    # 1.2%, so half a unit of the last decimal is allowed as well (the exact count is checked below).
    assert result.macs / 1e9 == pytest.approx(gmacs, rel=0.01, abs=0.0005)


def test_shufflenet_v2_x0_5_macs_are_torchs_count():
    """torchvision's 0.04 GMACs for ShuffleNet V2 x0.5 is 40,476,448 rounded: torch.utils.flop_counter's count
    (FLOPs / 2, convolutions and the linear layer) of torchvision 0.29.1's model at 224 px."""
    assert cached_summary("shufflenet_v2_x0_5", image_size=224).macs == 40_476_448


def test_resnet50_v1_macs():
    assert cached_summary("resnet50", variant="v1").macs / 1e9 == pytest.approx(RESNET50_V1_GMACS, rel=0.01)


# --- XLA's cost model -----------------------------------------------------------------------------


def xla_flops(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_xla_counts_two_flops_per_mac_without_padding():
    # LeNet-5 has no padding: every multiply-accumulate touches real input, and XLA counts 2 FLOPs
    # for each, plus a little for biases, tanh and pooling.
    result = jaxconv.summary("lenet5")
    ratio = xla_flops(jaxconv.get_model("lenet5"), result.input_shape) / (2 * result.macs)
    assert 1.0 <= ratio < 1.03


def test_xla_skips_the_multiply_accumulates_on_zero_padding():
    """With padding, XLA's cost model counts only the taps that land on real pixels.

    torchvision's convention (and the analyzer's ``macs``) counts every tap, so for a padded
    network XLA's FLOPs / 2 equal the analyzer's MACs minus the taps on padding.
    """
    model = jaxconv.get_model("resnet18")
    # 128 px: every map stays at least as large as its kernel. On smaller maps (stage 4 at 64 px
    # is 2x2) jaxconv pads explicitly (layers/conv.py: convolve), and XLA then counts those taps.
    shape = (1, 128, 128, 3)
    valid, every = [0], [0]

    def taps_inside(size, kernel, stride, low, out):
        return sum(1 for o in range(out) for t in range(kernel) if 0 <= o * stride - low + t < size)

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, Conv) and context.method_name == "__call__":
            conv, x = context.module, args[0]
            kernel, stride = as_pair(conv.kernel_size, "k"), as_pair(conv.stride, "s")
            pads = explicit_padding(conv.padding, x.shape[1:3], kernel, stride)
            per_tap = x.shape[-1] // conv.groups * conv.features
            rows = taps_inside(x.shape[1], kernel[0], stride[0], pads[0][0], out.shape[1])
            cols = taps_inside(x.shape[2], kernel[1], stride[1], pads[1][0], out.shape[2])
            valid[0] += rows * cols * per_tap
            every[0] += out.shape[1] * out.shape[2] * kernel[0] * kernel[1] * per_tap
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct(shape, jnp.float32))
    result = jaxconv.summary("resnet18", image_size=128)
    dense = result.macs - every[0]
    assert dense == 512 * 1000  # the only non-conv MACs: the classifier
    ratio = xla_flops(model, shape) / (2 * (valid[0] + dense))
    assert 1.0 <= ratio < 1.02


# --- the lectures' VGG16 table ----------------------------------------------------------------------


def test_vgg16_table_row_by_row():
    result = cached_summary("vgg16")
    rows = [layer for layer in result.layers if layer.kind in ("Input", "Conv", "MaxPool", "Dense")]
    assert rows[0].output_shape[1:] == VGG16_LECTURE_INPUT
    assert len(rows) - 1 == len(VGG16_LECTURE_ROWS)
    for layer, (label, volume, weights) in zip(rows[1:], VGG16_LECTURE_ROWS):
        assert layer.output_shape[1:] == volume, (layer.name, label)
        biases = volume[-1] if weights else 0  # the lecture counts weights only ("not counting biases")
        assert layer.params == weights + biases, (layer.name, label)
    assert round(result.params / 1e6) == VGG16_LECTURE_TOTAL_MILLIONS


def test_vgg16_memory_the_lecture_rows_add_up_to():
    """The lecture prints "TOTAL memory: 24M"; its own rows add up to 15.2M values (docs/analysis.md)."""
    result = cached_summary("vgg16")
    rows_total = math.prod(VGG16_LECTURE_INPUT) + sum(math.prod(volume) for _, volume, _ in VGG16_LECTURE_ROWS)
    assert result.activations == rows_total == 15_237_608
    assert result.forward_activation_bytes == 4 * rows_total  # ~58 MiB per image, not ~96 MB
    assert abs(rows_total - VGG16_LECTURE_PRINTED_MEMORY) > 8_000_000


# --- the lectures' Inception op counts ------------------------------------------------------------------


def module_summary(block):
    return jaxconv.summary(block, image_size=28, in_channels=256)


def test_naive_inception_module_costs_854m():
    result = module_summary(InceptionNaive((128, 192, 96), norm=None))
    assert result.macs == 28 * 28 * 256 * (128 * 1 + 192 * 9 + 96 * 25) == 854_196_224
    assert round(result.macs, -6) == INCEPTION_NAIVE_PRINTED


def test_reduced_inception_module_reproduces_the_slide_terms():
    block = Inception((128, 64, 192, 64, 96, 64), norm=None)  # the slide's 1x1 reductions to 64
    result = module_summary(block)
    convs = sorted(layer.macs for layer in result.layers if layer.kind == "Conv")
    assert convs == sorted(INCEPTION_REDUCED_SLIDE_TERMS)
    assert result.macs == sum(INCEPTION_REDUCED_SLIDE_TERMS) == 271_351_808
    # The slide prints 358M: its own terms add up to 271M (docs/analysis.md).
    assert round(result.macs, -6) != INCEPTION_REDUCED_PRINTED


# --- receptive fields and the 3x3 argument -----------------------------------------------------------------


class ConvStack(nn.Module):
    """n convolutions of size k x k, stride 1, same padding, C channels, no biases."""

    n: int
    kernel: int = 3
    channels: int = 8

    @nn.compact
    def __call__(self, x, train=False):
        for i in range(self.n):
            x = nn.relu(Conv(self.channels, self.kernel, padding=self.kernel // 2, use_bias=False, name=f"conv{i}")(x))
        return x


def test_stacked_3x3_receptive_fields():
    assert module_fields(ConvStack(2)) == [3, 5]
    assert module_fields(ConvStack(3)) == [3, 5, 7]  # "three 3x3 conv (stride 1) layers ... one 7x7"


def module_fields(block):
    result = jaxconv.summary(block, image_size=32, in_channels=8)
    return [layer.receptive_field for layer in result.layers if layer.kind == "Conv"]


def test_two_3x3_versus_one_5x5_parameters_and_macs():
    channels, size = 16, 32
    two = jaxconv.summary(ConvStack(2, 3, channels), image_size=size, in_channels=channels)
    one = jaxconv.summary(ConvStack(1, 5, channels), image_size=size, in_channels=channels)
    c2, hw = channels**2, size * size
    assert (two.params, one.params) == (18 * c2, 25 * c2)
    assert (two.macs, one.macs) == (18 * c2 * hw, 25 * c2 * hw)
    assert module_fields(ConvStack(2, 3, channels))[-1] == module_fields(ConvStack(1, 5, channels))[-1] == 5


def test_alexnet_and_vgg16_receptive_fields():
    alexnet = {layer.name: layer for layer in cached_summary("alexnet").layers}
    assert alexnet["conv1"].receptive_field == ALEXNET_RF["conv1"]
    assert alexnet["pool5"].receptive_field == ALEXNET_RF["pool5"]
    assert alexnet["conv1"].output_shape[1:] == ALEXNET_CONV1["output"]
    assert alexnet["conv1"].params == ALEXNET_CONV1["params"]
    assert alexnet["conv1"].macs == ALEXNET_CONV1["macs"]
    vgg = {layer.name: layer for layer in cached_summary("vgg16").layers}
    assert vgg["stage5/block2/conv"].receptive_field == VGG16_RF["conv5_3"]
    assert vgg["pool5"].receptive_field == VGG16_RF["pool5"]
    assert vgg["pool5"].jump == 32


def test_receptive_field_takes_the_widest_branch():
    # GoogLeNet's inception 3a sees through its 5x5 branch; a residual block through its 3x3s.
    googlenet = {layer.name: layer for layer in cached_summary("googlenet").layers}
    before = googlenet["pool2"]
    five = googlenet["inception3a/branch3/conv"]
    assert five.receptive_field == before.receptive_field + 4 * before.jump
    resnet = {layer.name: layer for layer in cached_summary("resnet18").layers}
    block_in = resnet["stem/pool"]
    assert resnet["stage1/block0/conv2"].receptive_field == block_in.receptive_field + 4 * block_in.jump


# --- totals and formats -------------------------------------------------------------------------------------


def test_memory_estimates():
    result = jaxconv.summary("resnet18", image_size=64, batch_size=32)
    assert result.forward_activation_bytes == 4 * result.activations
    assert result.training_memory_bytes == 32 * result.forward_activation_bytes + 3 * 4 * result.params
    half = jaxconv.summary("resnet18", image_size=64, dtype="bfloat16")
    assert half.forward_activation_bytes == 2 * half.activations
    assert result.macs == half.macs  # per image, whatever the batch


def test_formats():
    result = jaxconv.summary("lenet5")
    data = json.loads(jaxconv.format_summary(result, "json"))
    assert {"params", "macs", "activations", "layers"} <= set(data)
    assert {"name", "output_shape", "params", "macs", "receptive_field"} <= set(data["layers"][1])
    assert data["params"] == 61_706
    csv = jaxconv.format_summary(result, "csv").splitlines()
    assert csv[0].startswith("layer,kind,output,params,MACs")
    assert len(csv) == 1 + len(result.layers)
    assert "| c1 | Conv |" in jaxconv.format_summary(result, "md")
    assert "61,706" in jaxconv.format_summary(result, "table")
    with pytest.raises(ValueError, match="format"):
        jaxconv.format_summary(result, "xml")


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown model"):
        jaxconv.summary("resnet5O")
    with pytest.raises(jaxconv.layers.GeometryError, match="conv1"):
        jaxconv.summary("alexnet", image_size=224)
    with pytest.raises(ValueError, match="batch size"):
        jaxconv.summary("lenet5", batch_size=0)



def test_layer_gradient_norms_are_each_kernels_gradient_in_forward_order():
    """scripts/gradient_norms.py and config.log_layer_grad_norms read these; sigmoid's vanish towards the input."""
    import optax
    from flax.traverse_util import flatten_dict

    from jaxconv.analysis.gradients import layer_gradient_norms

    images = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    labels = jnp.arange(4) % 10
    ratios = {}
    for act in ("sigmoid", "relu"):
        model = jaxconv.get_model("plain20", num_classes=10, act=act, norm=None)
        variables = jax.jit(lambda x, model=model: model.init(jax.random.key(1), x, train=False))(images[:1])
        norms = layer_gradient_norms(model, variables, images, labels)
        assert [name for name, _ in norms][:3] == ["stem/conv", "stage1/block0/conv1", "stage1/block0/conv2"]
        assert len(norms) == 20 and norms[-1][0] == "head"

        def loss(params, model=model):
            logits = model.apply({"params": params}, images, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        grads = flatten_dict(jax.jit(jax.grad(loss))(variables["params"]))
        for name, value in norms:
            expected = float(jnp.linalg.norm(grads[(*name.split("/"), "kernel")].ravel()))
            assert value == pytest.approx(expected, rel=1e-5)
        ratios[act] = norms[0][1] / norms[-1][1]
    # 19 sigmoid layers (derivative at most 1/4) between the first kernel and the head.
    assert ratios["sigmoid"] < 1e-6 < ratios["relu"]


# --- researchers' own layers: loops, transposed convolutions, resampling, norms, plain Flax ------------------


def summarise(module, size, channels=3):
    return jaxconv.summary(module, image_size=size, in_channels=channels)


def rows_of(result):
    return {layer.name: layer for layer in result.layers}


class _ScanBody(nn.Module):
    @nn.compact
    def __call__(self, x, _=None):
        return nn.relu(nn.Conv(32, (3, 3), name="c")(x)), None


class _Scanned(nn.Module):
    """1x1 stem 3->32 at 64 px, four scanned 3x3 convs 32->32, global mean, Dense(10)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(32, (1, 1), name="stem")(x)
        x, _ = nn.scan(_ScanBody, variable_axes={"params": 0}, split_rngs={"params": True}, length=4)(name="stack")(x, None)
        return nn.Dense(10, name="head")(jnp.mean(x, axis=(1, 2)))


def test_scanned_blocks_count_every_iteration():
    result = summarise(_Scanned(), 64)
    # stem 64*64*32*3 = 393,216; each 3x3 conv 64*64*32*(9*32) = 37,748,736; head 32*10 = 320
    assert result.macs == 393_216 + 4 * 37_748_736 + 320 == 151_388_480
    # input 64*64*3; stem and four convs 64*64*32 each; logits 10
    assert result.activations == 12_288 + 5 * 131_072 + 10
    stack = [layer for layer in result.layers if layer.name == "stack/c"]
    assert len(stack) == 1 and stack[0].kind == "Conv x4"
    assert stack[0].macs == 4 * 37_748_736 and stack[0].receptive_field == 9  # 1 + 4 * 2
    assert stack[0].params == 4 * (9 * 32 * 32 + 32)


class _Looped(nn.Module):
    """A 3x3 conv 4->4 at 8 px run three times by fori_loop (a scan), and one of two branches by cond."""

    @nn.compact
    def __call__(self, x, train=False):
        k = self.param("k", nn.initializers.lecun_normal(), (3, 3, 4, 4))
        conv = lambda y: jax.lax.conv_general_dilated(y, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jnp.tile(x, (1, 1, 1, 4))[..., :4]
        x = jax.lax.fori_loop(0, 3, lambda i, y: nn.relu(conv(y)), x)
        x = jax.lax.cond(jnp.mean(x) > 0, lambda y: conv(conv(y)), lambda y: y, x)
        return nn.Dense(10, name="head")(jnp.mean(x, axis=(1, 2)))


def test_loops_and_conditionals_count_their_convolutions():
    result = summarise(_Looped(), 8, 1)
    per_conv = 8 * 8 * 4 * 9 * 4  # 9,216
    assert result.macs == 3 * per_conv + 2 * per_conv + 40  # the loop's three, the larger branch's two, head 4*10
    ops = [layer for layer in result.layers if layer.kind.startswith("conv_general_dilated")]
    assert [op.receptive_field for op in ops] == [7, 9, 11]  # 1 + 3 * 2, then the branch's two
    assert ops[0].kind == "conv_general_dilated x3"


class _Transposed(nn.Module):
    """3x3/2 conv 3->64 (64 -> 32 px), then a 4x4/2 transposed conv 64->32 (32 -> 64 px)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name="down")(x))
        x = nn.ConvTranspose(32, (4, 4), strides=(2, 2), padding="SAME", name="up")(x)
        return jnp.mean(x, axis=(1, 2))


def test_transposed_convolution_counts_taps_on_real_input():
    up = rows_of(summarise(_Transposed(), 64))["up"]
    assert up.macs == 32 * 32 * 16 * 64 * 32 == 33_554_432  # input positions x taps x Cin x Cout, as fvcore
    # down: RF 3, jump 2; the taps are 2 / 2 = 1 input pixel apart: 3 + (4 - 1) * 1 = 6, jump 2 / 2 = 1
    assert (up.receptive_field, up.jump) == (6, 1)


class _Upsampled(nn.Module):
    """3x3/2 conv (8 -> 4 px: RF 3, jump 2), x2 upsampling, 3x3 conv."""

    mode: str

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(16, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name="down")(x)
        n, h, w, c = x.shape
        if self.mode == "repeat":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        elif self.mode == "pixel_shuffle":
            x = x.reshape(n, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c // 4)
        else:
            x = jax.image.resize(x, (n, 2 * h, 2 * w, c), self.mode)
        x = nn.Conv(4, (3, 3), name="after")(x)
        return jnp.mean(x, axis=(1, 2))


@pytest.mark.parametrize("mode", ["repeat", "nearest", "pixel_shuffle", "bilinear"])
def test_upsampling_halves_the_jump(mode):
    result = summarise(_Upsampled(mode), 8)
    after = rows_of(result)["after"]
    # x2 upsampling of (RF 3, jump 2): jump 1, RF 3 (nearest; linear interpolation reads 2 neighbours:
    # 3 + 1 * 2 = 5); the 3x3 conv after adds 2 * 1
    assert (after.receptive_field, after.jump) == ((7, 1) if mode == "bilinear" else (5, 1))
    channels = 4 if mode == "pixel_shuffle" else 16
    # down 4*4*16*27 = 6,912; after 8*8*4*9*channels; resizing weights are not a layer's
    assert result.macs == 6_912 + 8 * 8 * 4 * 9 * channels


class _SpaceToDepth(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c)
        return nn.Conv(4, (3, 3), name="c")(x)


def test_space_to_depth_doubles_the_jump():
    c = rows_of(summarise(_SpaceToDepth(), 8))["c"]
    # 2x2 pixels per position: RF 2, jump 2; the 3x3 conv: 2 + 2 * 2 = 6
    assert (c.receptive_field, c.jump) == (6, 2)


class _Normed(nn.Module):
    norm: str

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3), use_bias=False, name="c1")(x)
        x = nn.Conv(4, (3, 3), use_bias=False, name="c2")(x)
        norm = {"group": nn.GroupNorm(num_groups=2), "layer": nn.LayerNorm(), "instance": nn.GroupNorm(num_groups=None,
                group_size=1)}[self.norm]
        return norm(x)


@pytest.mark.parametrize("norm", ["group", "layer", "instance"])
def test_normalisation_statistics_are_not_windows(norm):
    result = summarise(_Normed(norm), 8)
    # two 3x3 convs: RF 5, jump 1; the norm's mean and variance over the map do not widen it
    assert (result.layers[-1].receptive_field, result.layers[-1].jump) == (5, 1)


class _WeightFirst(nn.Module):
    """3x3 conv, a 1x1 'conv' written W @ x (the weight the left operand), 3x3 conv."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3), name="c1")(x)
        w = self.param("w", nn.initializers.lecun_normal(), (6, 4))
        x = jnp.moveaxis(jax.lax.dot_general(w, x, (((1,), (3,)), ((), ()))), 0, -1)
        return nn.Conv(4, (3, 3), name="c2")(x)


def test_image_as_the_right_operand_keeps_its_geometry():
    result = summarise(_WeightFirst(), 8)
    layers = rows_of(result)
    assert (layers["c2"].receptive_field, layers["c2"].jump) == (5, 1)  # 3 + 0 (1x1) + 2
    own = [layer for layer in result.layers if layer.kind == "dot_general"]
    assert len(own) == 1 and own[0].macs == 8 * 8 * 6 * 4 and own[0].params == 24  # 1,536 MACs, W is 6x4
    assert sum(layer.params for layer in result.layers) == result.params


class _Local(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.ConvLocal(4, (3, 3), name="loc")(x)


def test_patch_extraction_is_not_counted():
    # nn.ConvLocal: 8*8 positions x 4 outputs x 27 weights each; its one-hot patch kernel is no layer
    assert summarise(_Local(), 8).macs == 8 * 8 * 4 * 27 == 6_912


class _PlainFlax(nn.Module):
    """docs/extending.md's small_cnn: plain Flax, pooling by nn.max_pool."""

    @nn.compact
    def __call__(self, x, train=False):
        for width in (32, 64):
            x = nn.Conv(width, (3, 3), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def test_pooling_functions_are_rows():
    result = summarise(_PlainFlax(), 32)
    # input 3,072; conv and norm 32*32*32 twice; pool 16*16*32; conv and norm 16*16*64 twice; pool 8*8*64; 10
    assert result.activations == 3_072 + 2 * 32_768 + 8_192 + 2 * 16_384 + 4_096 + 10 == 113_674
    pools = [layer for layer in result.layers if layer.kind == "reduce_window_max"]
    assert [p.output_shape for p in pools] == [(1, 16, 16, 32), (1, 8, 8, 64)]
    assert [(p.receptive_field, p.jump) for p in pools] == [(4, 2), (10, 4)]  # 3 + 1; 8 + 1 * 2


class _Shared(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        conv = nn.Conv(3, (3, 3), name="shared")
        return conv(conv(x))


def test_a_shared_module_lists_its_parameters_once():
    result = summarise(_Shared(), 8)
    assert [layer.params for layer in result.layers[1:]] == [84, 0]  # 3*3*3*3 + 3, on the first call
    assert sum(layer.params for layer in result.layers) == result.params == 84


def test_small_models_gmacs_keep_their_digits():
    from jaxconv.declarations import gmacs_figure, gmacs_text

    macs = cached_summary("lenet5").macs
    assert macs == 416_520  # published as 0.000 GMACs by `list` before
    assert gmacs_text(gmacs_figure(macs)) == "0.000417" and gmacs_text(gmacs_figure(3_858_000_000)) == "3.858"
