"""Layers: the output-size rule, pooling, LRN, BatchNorm statistics, dropout, layer scale, channel shuffle, activations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import layers
from jaxconv.layers import GeometryError


def init_apply(module, x, **kwargs):
    variables = module.init(jax.random.key(0), x, **kwargs)
    return module.apply(variables, x, **kwargs), variables


# --- the output-size rule -------------------------------------------------------------------


def test_alexnet_conv1_fits_227_not_224():
    conv = layers.Conv(96, 11, 4, name="conv1")
    out = jax.eval_shape(lambda x: conv.init_with_output(jax.random.key(0), x)[0], jnp.zeros((1, 227, 227, 3)))
    assert out.shape == (1, 55, 55, 96)  # the lecture's 55x55x96
    with pytest.raises(GeometryError) as error:
        jax.eval_shape(lambda x: conv.init(jax.random.key(0), x), jnp.zeros((1, 224, 224, 3)))
    message = str(error.value)
    for part in ("conv1", "H=224", "F=11", "P=0", "S=4", "54.25", "227"):
        assert part in message


def test_geometry_error_is_raised_while_tracing_shapes():
    # eval_shape never computes: the error comes from the shapes alone.
    with pytest.raises(GeometryError, match="3.5"):
        jax.eval_shape(
            lambda x: layers.Conv(8, 3, 2, name="c").init(jax.random.key(0), x),
            jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32),
        )  # (8 - 3)/2 + 1 = 3.5


@pytest.mark.parametrize(
    "size,kernel,stride,pad,expected",
    [(7, 3, 1, 0, 5), (7, 3, 2, 0, 3), (32, 5, 1, 2, 32), (227, 11, 4, 0, 55), (224, 3, 1, 1, 224)],
)
def test_output_size_rule_examples_from_the_lecture(size, kernel, stride, pad, expected):
    # Lecture 003: "for a 7x7 input and a 3x3 filter with stride 1 and pad 0 we would get a 5x5
    # output. With stride 2 we would get a 3x3 output"; F=5, P=2 preserves the size.
    assert layers.output_size(size, kernel, stride, (pad, pad)) == expected


def test_window_larger_than_input_is_rejected_in_every_mode():
    for fit in ("exact", "floor", "ceil"):
        with pytest.raises(GeometryError, match="< 1"):
            layers.output_size(3, 5, 1, (0, 0), fit=fit, layer="tiny")


def test_floor_matches_pytorch_and_exact_refuses():
    # ResNet's stem: (224 - 7 + 6)/2 + 1 = 112.5; PyTorch keeps 112.
    assert layers.output_size(224, 7, 2, (3, 3), fit="floor") == 112
    with pytest.raises(GeometryError, match="112.5"):
        layers.output_size(224, 7, 2, (3, 3))


def test_conv_floor_output_equals_explicit_crop():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 10, 10, 2)), jnp.float32)
    floor = layers.Conv(3, 3, 2, padding=1, fit="floor")
    variables = floor.init(jax.random.key(0), x)
    cropped = layers.Conv(3, 3, 2, padding=((1, 0), (1, 0)))  # (10 - 3 + 1)/2 + 1 = 5 exactly
    np.testing.assert_allclose(floor.apply(variables, x), cropped.apply(variables, x), rtol=1e-6)


def test_conv_same_padding_and_groups():
    x = jnp.ones((2, 15, 15, 4))
    y, variables = init_apply(layers.Conv(8, 3, 2, padding="SAME", groups=2), x)
    assert y.shape == (2, 8, 8, 8)  # ceil(15 / 2)
    assert variables["params"]["kernel"].shape == (3, 3, 2, 8)
    with pytest.raises(ValueError, match="groups=3"):
        init_apply(layers.Conv(8, 3, padding=1, groups=3), x)


def test_conv_matches_a_direct_cross_correlation(rng):
    x = rng.standard_normal((1, 5, 6, 2)).astype(np.float32)
    module = layers.Conv(3, (2, 3), stride=1, padding=0)
    variables = module.init(jax.random.key(1), x)
    kernel = np.asarray(variables["params"]["kernel"])
    expected = np.zeros((1, 4, 4, 3), np.float32)
    for i in range(4):
        for j in range(4):
            expected[0, i, j] = np.einsum("hwc,hwco->o", x[0, i : i + 2, j : j + 3], kernel)
    np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


# --- pooling -----------------------------------------------------------------------------------


def test_overlapping_max_pool_and_ceil_mode():
    x = jnp.arange(2 * 55 * 55 * 3, dtype=jnp.float32).reshape(2, 55, 55, 3)
    assert layers.MaxPool(3, 2).apply({}, x).shape == (2, 27, 27, 3)  # AlexNet pool1
    y = jnp.ones((1, 112, 112, 1))
    with pytest.raises(GeometryError):
        layers.MaxPool(3, 2).apply({}, y)  # 55.5
    assert layers.MaxPool(3, 2, fit="ceil").apply({}, y).shape == (1, 56, 56, 1)  # GoogLeNet: 112 -> 56
    assert layers.MaxPool(3, 2, fit="floor").apply({}, y).shape == (1, 55, 55, 1)


def test_max_pool_values(rng):
    x = rng.standard_normal((1, 4, 4, 1)).astype(np.float32)
    y = layers.MaxPool(2, 2).apply({}, x)
    expected = x[0, :, :, 0].reshape(2, 2, 2, 2).max(axis=(1, 3))
    np.testing.assert_allclose(y[0, :, :, 0], expected)


def test_avg_pool_padding_counts_like_pytorch():
    x = jnp.ones((1, 4, 4, 1))
    with_pad = layers.AvgPool(3, 1, padding=1).apply({}, x)
    without = layers.AvgPool(3, 1, padding=1, count_include_pad=False).apply({}, x)
    assert float(with_pad[0, 0, 0, 0]) == pytest.approx(4 / 9)  # corner sees 4 ones of 9 cells
    assert float(without[0, 0, 0, 0]) == pytest.approx(1.0)
    # ceil mode: the extra window past the padded edge is divided by what it covers.
    z = jnp.arange(5, dtype=jnp.float32).reshape(1, 1, 5, 1) * jnp.ones((1, 5, 1, 1))
    ceil = layers.AvgPool(2, 2, fit="ceil").apply({}, z)
    assert ceil.shape == (1, 3, 3, 1)
    assert float(ceil[0, 0, 2, 0]) == pytest.approx(4.0)  # the last window covers only column 4


def test_global_and_adaptive_average_pooling(rng):
    x = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(layers.GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2)), rtol=1e-6)
    y = layers.AdaptiveAvgPool((2, 3)).apply({}, x)
    # PyTorch's cells: rows [0,3) [2,5); columns [0,3) [2,5) [4,7).
    np.testing.assert_allclose(y[:, 1, 2], x[:, 2:5, 4:7].mean(axis=(1, 2)), rtol=1e-6)
    same = layers.AdaptiveAvgPool((5, 7)).apply({}, x)
    np.testing.assert_array_equal(same, x)


# --- normalisation -----------------------------------------------------------------------------


def test_local_response_norm_matches_the_paper_formula(rng):
    x = rng.standard_normal((1, 2, 2, 8)).astype(np.float32) * 10
    y = layers.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0).apply({}, x)
    c = 3
    window = x[..., max(0, c - 2) : c + 3]
    expected = x[..., c] / (2.0 + 1e-4 * (window**2).sum(-1)) ** 0.75
    np.testing.assert_allclose(y[..., c], expected, rtol=1e-5)
    edge = x[..., 0] / (2.0 + 1e-4 * (x[..., 0:3] ** 2).sum(-1)) ** 0.75
    np.testing.assert_allclose(y[..., 0], edge, rtol=1e-5)


def test_batchnorm_running_statistics(rng):
    x = (rng.standard_normal((16, 4, 4, 3)) * 3 + 5).astype(np.float32)
    bn = layers.BatchNorm()
    variables = bn.init(jax.random.key(0), x, use_running_average=False)
    y, updated = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    # Training: normalised with the batch statistics.
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1, atol=1e-3)
    # Running statistics: 0.9 * old + 0.1 * batch (PyTorch's momentum=0.1).
    stats = updated["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)
    # Evaluation: the running statistics, not the batch's.
    evaluated = bn.apply({**variables, **updated}, x, use_running_average=True)
    expected = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(evaluated, expected, rtol=1e-4, atol=1e-4)


# --- dropout and stochastic depth ------------------------------------------------------------------


def test_dropout_is_identity_in_eval_and_scales_in_training():
    x = jnp.ones((1000, 10))
    drop = layers.Dropout(0.5)
    assert drop.apply({}, x, deterministic=True) is x
    y = drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    kept = np.asarray(y) != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_allclose(np.asarray(y)[kept], 2.0)


def test_drop_path_drops_whole_examples():
    x = jnp.ones((2000, 3, 3, 4))
    layer = layers.DropPath(0.25)
    assert layer.apply({}, x, deterministic=True) is x
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
    per_example = y.reshape(2000, -1)
    dropped = (per_example == 0).all(axis=1)
    kept = np.isclose(per_example, 1 / 0.75).all(axis=1)
    assert np.all(dropped | kept)
    assert 0.2 < dropped.mean() < 0.3
    with pytest.raises(ValueError, match="rate"):
        layers.DropPath(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})


def test_squeeze_excite_gates_channels(rng):
    x = rng.standard_normal((2, 5, 5, 8)).astype(np.float32)
    se = layers.SqueezeExcite(2)
    y, variables = init_apply(se, x)
    params = variables["params"]
    assert params["fc1"]["kernel"].shape == (1, 1, 8, 2) and params["fc2"]["kernel"].shape == (1, 1, 2, 8)
    gate = np.asarray(y) / x
    # One gate per example and channel, constant over space, in (0, 1).
    np.testing.assert_allclose(gate, np.broadcast_to(gate[:, :1, :1, :], gate.shape), rtol=1e-4)
    assert np.all((gate > 0) & (gate < 1))


def test_layer_scale_starts_at_its_value_per_channel_and_keeps_the_compute_dtype():
    x = jnp.ones((2, 3, 3, 8), jnp.bfloat16)
    layer = layers.LayerScale(1e-6)
    variables = layer.init(jax.random.key(0), x)
    scale = variables["params"]["scale"]
    assert scale.shape == (8,) and scale.dtype == jnp.float32  # 1-D: weight decay skips it (test_train)
    np.testing.assert_array_equal(scale, np.full(8, 1e-6, np.float32))
    y = layer.apply({"params": {"scale": jnp.arange(8, dtype=jnp.float32)}}, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.broadcast_to(np.arange(8), (2, 3, 3, 8)))


def test_channel_shuffle_is_torchvisions_reshape_transpose_flatten(rng):
    """torchvision's channel_shuffle on (N, C, H, W): view as (N, groups, C / groups, H, W), swap those two axes,
    flatten back. On NHWC the same permutation: group g's j-th channel lands at j * groups + g."""
    x = rng.standard_normal((2, 3, 4, 12)).astype(np.float32)
    for groups in (1, 2, 3, 4):
        nchw = x.transpose(0, 3, 1, 2)
        torchvision = nchw.reshape(2, groups, 12 // groups, 3, 4).transpose(0, 2, 1, 3, 4).reshape(2, 12, 3, 4)
        y = np.asarray(layers.channel_shuffle(jnp.asarray(x), groups))
        np.testing.assert_array_equal(y, torchvision.transpose(0, 2, 3, 1))
        order = [g * (12 // groups) + j for j in range(12 // groups) for g in range(groups)]
        np.testing.assert_array_equal(y, x[..., order])
    assert [int(c) for c in layers.channel_shuffle(jnp.arange(6.0), 2)] == [0, 3, 1, 4, 2, 5]  # halves interleaved
    with pytest.raises(ValueError, match="groups=5 must be a positive divisor of the 12 channels"):
        layers.channel_shuffle(jnp.asarray(x), 5)


# --- activations -----------------------------------------------------------------------------------


def test_softmax_example_from_the_lecture():
    # Lecture 002: scores [2, 4, 2, 1] -> softmax [0.1025, 0.7573, 0.1025, 0.0377].
    probs = layers.get_activation("softmax")(jnp.array([2.0, 4.0, 2.0, 1.0]))
    np.testing.assert_allclose(probs, [0.1025, 0.7573, 0.1025, 0.0377], atol=1e-4)


def test_activation_definitions():
    x = jnp.linspace(-4, 4, 17)
    np.testing.assert_allclose(layers.get_activation("relu")(x), np.maximum(x, 0))
    np.testing.assert_allclose(layers.get_activation("leaky_relu")(x), np.where(x > 0, x, 0.01 * x), rtol=1e-6)
    sig = 1 / (1 + np.exp(-np.asarray(x)))
    np.testing.assert_allclose(layers.get_activation("sigmoid")(x), sig, rtol=1e-5)
    np.testing.assert_allclose(layers.get_activation("tanh")(x), 2 * (1 / (1 + np.exp(-2 * np.asarray(x)))) - 1,
                               rtol=1e-5, atol=1e-6)  # tanh(x) = 2 sigmoid(2x) - 1
    swish = layers.get_activation("swish")
    np.testing.assert_allclose(swish(x), np.asarray(x) * sig, rtol=1e-5)
    # Lecture 002: f'(x) = f(x) + sigma(x) (1 - f(x)).
    derivative = jax.vmap(jax.grad(swish))(x)
    f = np.asarray(x) * sig
    np.testing.assert_allclose(derivative, f + sig * (1 - f), rtol=1e-5, atol=1e-6)
    # GELU as PyTorch's nn.GELU() (ConvNeXt's): x * Phi(x) with the exact normal CDF, not the tanh approximation
    # (at x = 1: 0.841345 exact, 0.841192 approximated).
    phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in np.asarray(x, np.float64)])
    np.testing.assert_allclose(layers.get_activation("gelu")(x), np.asarray(x) * phi, rtol=1e-6, atol=1e-7)
    assert float(layers.gelu(jnp.float32(1.0))) == pytest.approx(0.8413447, abs=1e-6)
    # MobileNetV3's, as PyTorch's nn.Hardsigmoid and nn.Hardswish: 0 for x <= -3, x / 6 + 1/2 between, 1 for x >= 3.
    hard = np.clip(np.asarray(x) / 6 + 0.5, 0, 1)
    np.testing.assert_allclose(layers.get_activation("hard_sigmoid")(x), hard, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layers.get_activation("hard_swish")(x), np.asarray(x) * hard, rtol=1e-6, atol=1e-7)
    assert float(layers.hard_swish(jnp.float32(1.0))) == pytest.approx(2 / 3, abs=1e-7)
    assert float(layers.hard_sigmoid(jnp.float32(-3.5))) == 0.0 and float(layers.hard_sigmoid(jnp.float32(3.5))) == 1.0
    with pytest.raises(ValueError, match="relu"):
        layers.get_activation("gelu_fast")


# --- convolutions on maps smaller than the kernel ------------------------------------------


def _same_values_and_gradients(ours, reference, x, w, rng):
    """Asserts equal outputs and input/kernel gradients; returns the cotangent used."""
    # Jitted: op by op, a sum over 25 taps of bundles dispatches hundreds of small programs (45 s).
    # Each through a new lambda: jit's trace cache, keyed on the function, would otherwise hand a
    # later make_jaxpr(ours) this trace, whatever reference_convolutions() says.
    expected = jax.jit(lambda x, w: reference(x, w))(x, w)
    np.testing.assert_allclose(jax.jit(lambda x, w: ours(x, w))(x, w), expected, rtol=1e-5, atol=1e-5)
    grad = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
    ours_grads, reference_grads = (jax.jit(lambda x, w, g, f=f: jax.vjp(f, x, w)[1](g))(x, w, grad) for f in (ours, reference))
    for ours_grad, reference_grad in zip(ours_grads, reference_grads):
        np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-5, atol=1e-5)
    return grad


def _compiled_gradient(f, x, w, grad) -> str:
    """The optimized HLO text of f's vector-Jacobian product."""
    return jax.jit(lambda x, w, g: jax.vjp(f, x, w)[1](g)).lower(x, w, grad).compile().as_text()


def test_dense_convolution_input_reaches_its_gradient_as_a_buffer():
    """On XLA:CPU a differentiated dense convolution's input passes through a conditional, so that the backward
    pass's layout copy reads it instead of recomputing the chain that produced it (issue 23); values, reverse- and
    forward-mode derivatives are the plain convolution's, and nothing is added without differentiation."""
    from jax import lax

    from jaxconv.layers.conv import NHWC, convolve

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 8, 8)), jnp.float32)
    pads = ((1, 1), (1, 1))

    def plain(x, w):
        return lax.conv_general_dilated(jax.nn.relu(x * 2.0 + 1.0), w, (1, 1), pads, dimension_numbers=NHWC)

    def ours(x, w):
        return convolve(jax.nn.relu(x * 2.0 + 1.0), w, (1, 1), pads)

    grad = _same_values_and_gradients(ours, plain, x, w, rng)
    tangents = (jnp.ones_like(x), jnp.full_like(w, 0.5))
    for got, expected in zip(jax.jvp(ours, (x, w), tangents), jax.jvp(plain, (x, w), tangents)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert "conditional(" in _compiled_gradient(ours, x, w, grad)
    assert "conditional(" not in jax.jit(ours).lower(x, w).compile().as_text()


@pytest.mark.parametrize("height,width,kernel,stride,pad", [
    (2, 2, 3, 1, 1),  # ResNet-18's stage 3 at 32 px
    (1, 1, 3, 1, 1),  # its stage 4
    (2, 3, 3, 2, 1),  # stride 2, uneven map, floor of the output-size rule
    (3, 3, 7, 2, 3),
    (5, 5, 3, 2, 0),  # input larger than the kernel, output (2x2) smaller
])
def test_small_map_convolution_matches_the_plain_one(height, width, kernel, stride, pad):
    from jax import lax

    from jaxconv.layers.conv import NHWC, convolve

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, height, width, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 4, 5)), jnp.float32)
    pads = ((pad, pad), (pad, pad))

    def plain(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC)

    def ours(x, w):
        return convolve(x, w, (stride, stride), pads)

    grad = _same_values_and_gradients(ours, plain, x, w, rng)
    # What it is for: XLA swaps the operands of the plain convolution (a window-reversed
    # convolution, which its CPU backend runs on a slow generic loop), and of neither of ours.
    assert "rhs_reversal" not in _compiled_gradient(ours, x, w, grad)


@pytest.mark.parametrize("kernel,stride,channels", [
    (3, 1, 6), (3, 2, 6), (5, 2, 6),  # a sum over taps, its gradients by autodiff
    (3, 1, 16), (5, 1, 24),  # stride 1, bundles of 16 and 12 channels: the kernel gradient by dense convolutions
    (3, 2, 16),  # stride 2: by autodiff again
])
def test_depthwise_by_taps_matches_the_grouped_convolution(kernel, stride, channels):
    """EfficientNet's depthwise convolutions run as a sum over taps on the CPU backend."""
    from jax import lax

    from jaxconv.layers.conv import NHWC, convolve, reference_convolutions

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 9, 8, channels)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 1, channels)), jnp.float32)
    pads = ((kernel // 2, kernel // 2),) * 2

    def grouped(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC,
                                        feature_group_count=channels)

    def ours(x, w):
        return convolve(x, w, (stride, stride), pads, groups=channels)

    grad = _same_values_and_gradients(ours, grouped, x, w, rng)
    # On the CPU backend no grouped convolution is left (the dense kernel gradient's convolutions
    # have no feature groups); the analyzer's reference trace keeps one.
    compiled = _compiled_gradient(ours, x, w, grad)
    assert "feature_group_count" not in compiled
    assert ("convolution(" in compiled) == (stride == 1 and channels >= 8 and kernel <= 5)
    with reference_convolutions():
        traced = str(jax.make_jaxpr(ours)(x, w))
    assert traced.count("conv_general_dilated") == 1 and f"feature_group_count={channels}" in traced


@pytest.mark.parametrize("channels,out,groups,size,kernel,stride", [
    (32, 32, 8, 9, 3, 1),  # ResNeXt's 3x3, 4 channels a group: bundled in fours (block-diagonal kernels)
    (64, 64, 4, 6, 3, 2),  # 16 channels a group: one dense convolution per group
    (16, 24, 2, 7, 5, 2),  # AlexNet's two towers, more outputs than inputs
    (24, 48, 12, 5, 1, 1),  # a grouped 1x1, 2 channels a group (ShuffleNet's)
    (32, 32, 8, 2, 3, 1),  # on a map smaller than the kernel
])
def test_grouped_convolution_by_dense_ones_matches_the_grouped_one(channels, out, groups, size, kernel, stride):
    """Grouped convolutions run as dense convolutions over bundles of groups on the CPU backend (issue 18)."""
    from jax import lax

    from jaxconv.layers.conv import NHWC, convolve, reference_convolutions

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, size, size, channels)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, channels // groups, out)), jnp.float32)
    pads = ((kernel // 2, kernel // 2),) * 2

    def grouped(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC,
                                        feature_group_count=groups)

    def ours(x, w):
        return convolve(x, w, (stride, stride), pads, groups=groups)

    grad = _same_values_and_gradients(ours, grouped, x, w, rng)
    # No grouped convolution is left on the CPU backend: XLA:CPU runs them 80-2,200x slower per MAC.
    assert "feature_group_count" not in _compiled_gradient(ours, x, w, grad)
    with reference_convolutions():  # the analyzer still sees one grouped convolution (its MACs)
        traced = str(jax.make_jaxpr(ours)(x, w))
    assert traced.count("conv_general_dilated") == 1 and f"feature_group_count={groups}" in traced


@pytest.mark.parametrize("layer, needle", [
    (lambda: layers.Conv(8, 0), "Conv: kernel_size=0 must be positive"),
    (lambda: layers.Conv(8, 3, stride=0), "Conv: stride=0 must be positive"),
    (lambda: layers.Conv(8, 3, stride=-1), "Conv: stride=-1 must be positive"),
    (lambda: layers.Conv(8, 3, padding=1, dilation=0), "Conv: dilation=0 must be positive"),
    (lambda: layers.MaxPool(0), "MaxPool: window=0 must be positive"),
    (lambda: layers.AdaptiveAvgPool(0), "AdaptiveAvgPool: output_size=0 must be positive"),
    (lambda: layers.Dropout(1.5), r"Dropout: rate=1.5 must be in \[0, 1\)"),
])
def test_layers_given_bad_sizes_or_rates_say_which_layer_and_value(layer, needle):
    """Not a ZeroDivisionError, a lowering error, or (Dropout(1.5)) every unit silently zeroed in training."""
    x = jnp.ones((1, 8, 8, 3))
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    with pytest.raises(ValueError, match=needle):
        layer().init(rngs, x, **({"deterministic": False} if "Dropout" in needle else {}))


def test_a_model_given_an_activation_that_is_neither_a_name_nor_a_function_is_refused_at_once():
    import jaxconv

    with pytest.raises(ValueError, match="unknown activation 123; choose one of .*relu"):
        jaxconv.get_model("resnet20", act=123)
