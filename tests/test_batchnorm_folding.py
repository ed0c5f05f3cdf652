"""Folding BatchNorm into convolutions keeps evaluation outputs (float32, 1e-5 relative)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from conftest import host_variables
from jaxconv.analysis import fold_batchnorm
from jaxconv.layers import BatchNorm, Conv


def nontrivial_statistics(variables, seed=0):
    """Running means, variances, scales and shifts far from their initial 0/1 values."""
    rng = np.random.default_rng(seed)

    def randomize(path, leaf):
        name = path[-1].key
        if name == "mean":
            return rng.normal(0, 0.5, leaf.shape).astype(np.float32)
        if name == "var":
            return rng.uniform(0.3, 3.0, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "bias" and leaf.ndim == 1:
            return rng.normal(0, 0.2, leaf.shape).astype(np.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(randomize, variables)


@pytest.mark.parametrize("name,size,options", [
    ("resnet50", 32, {}), ("vgg16_bn", 32, {}),
    # BatchNorm after FC6 and FC7 too: it folds into the dense layers
    ("alexnet", 67, {"widths": (8, 8, 8, 8, 8), "classifier_width": 16, "norm": "batch", "classifier_norm": True}),
])
def test_folded_network_matches_in_eval_mode(name, size, options):
    model = jaxconv.get_model(name, num_classes=10, **options)
    x = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype(np.float32)
    variables = nontrivial_statistics(host_variables(model, x))
    folded_model, folded = fold_batchnorm(model, variables, x.shape)
    assert "batch_stats" not in folded
    flat = jax.tree_util.tree_leaves_with_path(folded["params"])
    assert not any("norm" in jax.tree_util.keystr(path) for path, _ in flat)
    expected = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    actual = jax.jit(lambda v, x: folded_model.apply(v, x, train=False))(folded, x)
    error = float(jnp.max(jnp.abs(actual - expected)) / jnp.max(jnp.abs(expected)))
    assert error < 1e-5
    assert float(jnp.std(expected)) > 0


def test_inception_v3_folds_its_auxiliary_head_too():
    """The auxiliary head runs in training only, yet its convolutions and BatchNorms are in the variables: they fold
    like the others, so the BatchNorm-free twin (aux_logits kept) has every parameter. A narrow Inception v3 (the
    stem, a 35x35 module, a grid reduction; a few channels) at 75 px."""
    from jaxconv.blocks import InceptionA, InceptionB

    blocks = (("5b", InceptionA, (4,) * 6), ("6a", InceptionB, (4,) * 3))
    model = jaxconv.get_model("inception_v3", num_classes=10, blocks=blocks, stem_widths=(4, 4, 8, 8, 8),
                              aux_widths=(8, 8))
    x = np.random.default_rng(1).standard_normal((2, 75, 75, 3)).astype(np.float32)
    variables = nontrivial_statistics(host_variables(model, x))
    folded_model, folded = fold_batchnorm(model, variables, x.shape)
    assert set(folded["params"]["aux"]["conv1"]["conv"]) == {"kernel", "bias"} and folded_model.aux_logits
    expected = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    actual = jax.jit(lambda v, x: folded_model.apply(v, x, train=False))(folded, x)
    assert float(jnp.max(jnp.abs(actual - expected)) / jnp.max(jnp.abs(expected))) < 1e-5


class PreActivation(nn.Module):
    norm: object = BatchNorm

    @nn.compact
    def __call__(self, x, train=False):
        x = self.norm()(x, use_running_average=not train)  # normalises the input: no conv to fold into
        return Conv(4, 3, padding=1)(nn.relu(x))


def test_batchnorm_without_a_preceding_conv_is_refused():
    model = PreActivation()
    x = jnp.ones((1, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="BatchNorm_0"):
        fold_batchnorm(model, variables, x.shape)


def test_nothing_to_fold():
    model = jaxconv.get_model("lenet5")
    with pytest.raises(ValueError, match="no BatchNorm"):
        fold_batchnorm(model, {"params": {}}, (1, 32, 32, 1))


class NormAndShortcut(jaxconv.blocks.Block):
    """A block whose conv output is read by its BatchNorm and also added back: ``act(norm(y)) + y``."""

    @nn.compact
    def __call__(self, x, train=False):
        y = self.conv(self.features, 3, self.stride, padding=1, name="conv1")(x)
        return self.activate(self.normalize(y, "norm1", train)) + y


def test_conv_whose_output_is_also_read_elsewhere_is_refused():
    """Folding the norm into conv1 would change the ``+ y`` too (20% off, silently): refused, naming the layer."""
    from jaxconv.models import CifarStem, ResNet

    model = ResNet(block=NormAndShortcut, depths=(1, 1, 1), widths=(4, 8, 8), stem=CifarStem, stem_width=4,
                   num_classes=10)
    x = jnp.ones((1, 8, 8, 3))
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
    with pytest.raises(ValueError, match="also read elsewhere.*stage1/block0/conv1"):
        fold_batchnorm(model, variables, x.shape)
