"""GoogLeNet / Inception v1 (Szegedy et al. 2015), as in the paper and as torchvision builds it."""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.archs.common import classifier_output, pooled_head, transform_input
from jaxconv.blocks import ConvNormAct, Inception
from jaxconv.blocks.base import Activation, ModuleDef
from jaxconv.layers import AvgPool, BatchNorm, Conv, Dropout, LocalResponseNorm, MaxPool, relu
from jaxconv.layers.norm import norm_factory
from jaxconv.declarations import PAPER_COUNT, Published, TorchvisionKeys, torchvision_figures, torchvision_weights
from jaxconv.registry import register

# Table 1 of the paper: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module.
INCEPTION_WIDTHS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
STAGES = (("3a", "3b"), ("4a", "4b", "4c", "4d", "4e"), ("5a", "5b"))


class AuxHead(nn.Module):
    """The paper's auxiliary classifier: 5x5/3 avg pool -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC."""

    num_classes: int
    conv: ModuleDef = Conv
    norm: ModuleDef | None = None
    act: Activation = relu
    dropout: float = 0.7
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = AvgPool(5, 3, name="pool")(x)
        x = ConvNormAct(128, kernel_size=1, conv=self.conv, norm=self.norm, act=self.act, name="proj")(x, train)
        x = self.act(nn.Dense(1024, dtype=self.dtype, name="fc1")(x.reshape(x.shape[0], -1)))
        x = Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


class GoogLeNet(nn.Module):
    """Stem (7x7/2 conv, pool, 1x1 + 3x3 convs, pool) -> Inception 3a-3b -> pool -> 4a-4e ->
    pool -> 5a-5b -> global average pool -> dropout -> linear.

    The paper's version (``googlenet``) has biased convolutions, LRN in the stem, 5x5
    convolutions in the third branch and dropout 0.4; ``aux_logits=True`` adds the two
    auxiliary classifiers after 4a and 4d (their logits are sown into the 'aux_logits'
    collection as aux1_logits and aux2_logits; training adds them to the loss, weight 0.3). torchvision's version
    (``googlenet_tv``) has BatchNorm (eps 1e-3) after every bias-free convolution, no LRN, a
    3x3 convolution in the "5x5" branch, a 2x2 last pool and dropout 0.2. Max pools round up
    (fit='ceil'), as Caffe and torchvision do: 112 -> 56 -> 28 -> 14 -> 7.

    ``transform_input=True`` maps images normalized with the ImageNet mean and std to
    (x - 0.5) / 0.5, the normalization torchvision's published GoogLeNet weights were trained
    with (torchvision turns it on when it loads them, and so does
    ``jaxconv.load_pretrained('googlenet_tv', ...)``; ``jaxconv.archs.common.transform_input``).

    Features: 'stem', 'stage3', 'stage4', 'stage5', 'pre_logits'.
    """

    num_classes: int = 1000
    norm: ModuleDef | None = None
    lrn: bool = True
    branch3_kernel: int = 5
    last_pool: int = 3
    aux_logits: bool = False
    transform_input: bool = False
    dropout: float = 0.4
    act: Activation = relu
    dtype: Any = jnp.float32
    axis_name: str | None = None  # sync BatchNorm over this device axis (set by the training system)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        conv = partial(Conv, use_bias=self.norm is None, fit="floor", dtype=self.dtype)
        norm = norm_factory(self.norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        unit = partial(ConvNormAct, conv=conv, norm=norm, act=self.act)
        features: dict[str, jnp.ndarray] = {}

        if self.transform_input:
            x = transform_input(x)
        x = unit(64, 2, kernel_size=7, name="conv1")(x, train)
        x = MaxPool(3, 2, fit="ceil", name="pool1")(x)
        if self.lrn:
            x = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0, name="lrn1")(x)
        x = unit(64, kernel_size=1, name="conv2")(x, train)
        x = unit(192, kernel_size=3, name="conv3")(x, train)
        if self.lrn:
            x = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0, name="lrn2")(x)
        x = MaxPool(3, 2, fit="ceil", name="pool2")(x)
        features["stem"] = x

        inception = partial(Inception, conv=conv, norm=norm, act=self.act, branch3_kernel=self.branch3_kernel)
        for stage, modules in zip((3, 4, 5), STAGES):
            if stage == 4:
                x = MaxPool(3, 2, fit="ceil", name="pool3")(x)
            if stage == 5:
                x = MaxPool(self.last_pool, 2, fit="ceil", name="pool4")(x)
            for module in modules:
                x = inception(INCEPTION_WIDTHS[module], name=f"inception{module}")(x, train)
                if self.aux_logits and module in ("4a", "4d"):
                    aux_name = "aux1" if module == "4a" else "aux2"
                    aux = AuxHead(self.num_classes, conv=conv, norm=norm, act=self.act, dtype=self.dtype, name=aux_name)
                    self.sow("aux_logits", f"{aux_name}_logits", aux(x, train))
            features[f"stage{stage}"] = x

        logits = pooled_head(
            x, features, num_classes=self.num_classes, dropout=self.dropout, train=train, dtype=self.dtype
        )
        return classifier_output(logits, features, return_features)


def torchvision_prefix(module: tuple[str, ...], params) -> str:
    """jaxconv module path -> torchvision's GoogLeNet module: ('inception3a', 'branch2', 'norm') ->
    'inception3a.branch2.1.bn'."""
    if module[0] == "head":
        return "fc"
    if module[0].startswith("aux"):
        raise ValueError(
            "googlenet_tv with aux_logits=True cannot take torchvision's auxiliary heads: torchvision's pool "
            "to 4x4 adaptively where jaxconv's AuxHead uses the paper's 5x5/3 pooling; load with "
            "aux_logits=False (torchvision also drops them when it loads its published weights)"
        )
    layer = {"conv": "conv", "norm": "bn"}[module[-1]]
    if module[0].startswith("conv"):
        return f"{module[0]}.{layer}"
    branch = {
        "branch1": "branch1",
        "branch2_reduce": "branch2.0",
        "branch2": "branch2.1",
        "branch3_reduce": "branch3.0",
        "branch3": "branch3.1",
        "branch4": "branch4.1",
    }[module[1]]
    return f"{module[0]}.{branch}.{layer}"


register(
    "googlenet",
    GoogLeNet,
    image_size=224,
    family="googlenet",
    description="GoogLeNet 2014 (paper: 5x5 branches, LRN; aux_logits=True for the auxiliary heads)",
    published=Published(6_998_552, count_source=PAPER_COUNT + " (without auxiliary heads)",
                        ilsvrc_entry="GoogLeNet, ILSVRC 2014", ilsvrc_top5_error=6.7),
)
register(
    "googlenet_tv",
    partial(GoogLeNet, norm=partial(BatchNorm, epsilon=1e-3), lrn=False, branch3_kernel=3, last_pool=2, dropout=0.2),
    image_size=224,
    family="googlenet",
    description="torchvision's GoogLeNet (BatchNorm, 3x3 in the '5x5' branch, no aux heads)",
    published=torchvision_figures(6_624_904, 1.498),
    weights=[torchvision_weights(
        "IMAGENET1K_V1", "googlenet-1378be20.pth", 69.778, 89.530,
        note="trained on (x - 0.5) / 0.5 inputs: loaded with transform_input=True, so it takes ImageNet-normalized "
             "images like the others; the file's auxiliary heads are dropped")],
    # torchvision loads these weights with transform_input=True: they were trained on (x - 0.5) / 0.5
    # inputs, and the model re-normalises ImageNet-normalized images to that. The file carries the
    # auxiliary heads, which torchvision drops too.
    # Parity at 67 px exercises PyTorch's ceil_mode pools on odd sizes.
    torchvision=TorchvisionKeys(torchvision_prefix, ignored=("aux1.*", "aux2.*"),
                                load_options={"transform_input": True}, builder="googlenet",
                                builder_options={"aux_logits": True, "transform_input": True, "init_weights": False},
                                parity_options={"aux_logits": False, "transform_input": True, "init_weights": False},
                                parity_size=67),
)
