"""Numbers published by others, which the tests check jaxconv against.

The models' own published figures are declared once, in their families' files
(``register(..., published=...)``), and read from there; this file holds the rest. Sources:
torchvision.models weights metadata (num_params, _ops in "GFLOPS" = GMACs);
the papers' layer lists as tabulated in shared/REFERENCE.md; He et al. 2016 Table 6
(CIFAR ResNet sizes); Springenberg et al. 2015 (All-CNN-C); LeCun et al. 1998 as
rebuilt with full C3 connectivity; the lecture notes in shared/lectures/.
"""

import jaxconv.models  # noqa: F401 -- registers the families, whose files declare what others published
from jaxconv.compare.published import published_models

# torchvision, 1000 classes: (trainable parameters, GMACs, the size they are quoted at), as each family's
# file declares them from torchvision's weights metadata (num_params, _ops in "GFLOPS" = GMACs).
TORCHVISION = {name: (p.params, p.gmacs, p.image_size) for name, p in published_models().items() if p.from_torchvision}

# torchvision's ResNet-50 with the paper's v1 bottleneck (stride on the first 1x1).
RESNET50_V1_GMACS = 3.858

# Paper architectures, biases included, 1000 classes (REFERENCE.md): alexnet, zfnet and googlenet as their
# families declare them, and two option variants nobody declares.
PAPER_PARAMS = {
    **{name: p.params for name, p in published_models().items() if not p.from_torchvision and p.params},
    "alexnet_groups2": 60_965_224,  # the two-GPU channel groups: the paper's "60M"
    "googlenet_aux": 13_378_280,
}

# He et al. 2016, Table 6: parameters of the CIFAR-10 ResNets, in millions (2 significant digits).
CIFAR_RESNET_MILLIONS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}

# LeNet-5 with full C3 connectivity, 32x32x1 input, 10 classes: 156 + 2,416 + 48,120 + 10,164 + 850.
LENET5_PARAMS = 61_706

# Springenberg et al. 2015, Table 6: All-CNN-C has "1.3 M" parameters (the table truncates).
ALLCNN_C_MILLIONS = 1.3


def small_inception_params(module: str) -> int:
    """inception_small (archs/inception_small.py), counted by hand from its layer list.

    stem: 3x3 conv 3->64 without bias + BN (2 x 64); four modules at GoogLeNet 3a's half widths
    (1x1 32; 1x1 48 -> 3x3 64; 1x1 8 -> 5x5 16; pool -> 1x1 16), each conv followed by BN;
    global average pool; linear to 10 classes. Naive modules drop the 1x1 reductions and the
    pool projection, so their input channels pass through and grow by 32 + 64 + 16 per module.
    """
    stem = 3 * 64 * 9 + 2 * 64
    if module == "reduced":
        inputs, out = (64, 128, 128, 128), 128
        per_module = [c * (32 + 48 + 8 + 16) + 48 * 64 * 9 + 8 * 16 * 25 + 2 * (32 + 48 + 64 + 8 + 16 + 16) for c in inputs]
    else:
        inputs, out = (64, 176, 288, 400), 512
        per_module = [c * (32 + 64 * 9 + 16 * 25) + 2 * (32 + 64 + 16) for c in inputs]
    return stem + sum(per_module) + out * 10 + 10

# The lecture's VGG16 table (lecture 001): output volume and weights (biases not counted).
VGG16_LECTURE_ROWS = [
    ("CONV3-64", (224, 224, 64), 1_728),
    ("CONV3-64", (224, 224, 64), 36_864),
    ("POOL2", (112, 112, 64), 0),
    ("CONV3-128", (112, 112, 128), 73_728),
    ("CONV3-128", (112, 112, 128), 147_456),
    ("POOL2", (56, 56, 128), 0),
    ("CONV3-256", (56, 56, 256), 294_912),
    ("CONV3-256", (56, 56, 256), 589_824),
    ("CONV3-256", (56, 56, 256), 589_824),
    ("POOL2", (28, 28, 256), 0),
    ("CONV3-512", (28, 28, 512), 1_179_648),
    ("CONV3-512", (28, 28, 512), 2_359_296),
    ("CONV3-512", (28, 28, 512), 2_359_296),
    ("POOL2", (14, 14, 512), 0),
    ("CONV3-512", (14, 14, 512), 2_359_296),
    ("CONV3-512", (14, 14, 512), 2_359_296),
    ("CONV3-512", (14, 14, 512), 2_359_296),
    ("POOL2", (7, 7, 512), 0),
    ("FC", (4096,), 102_760_448),
    ("FC", (4096,), 16_777_216),
    ("FC", (1000,), 4_096_000),
]
VGG16_LECTURE_INPUT = (224, 224, 3)
VGG16_LECTURE_TOTAL_MILLIONS = 138
VGG16_LECTURE_PRINTED_MEMORY = 24_000_000  # "TOTAL memory: 24M * 4 bytes ~= 96MB / image"

# The lecture's Inception module at a 28x28x256 input (lecture 001).
INCEPTION_NAIVE_PRINTED = 854_000_000  # "Total: 854M ops"
INCEPTION_REDUCED_SLIDE_TERMS = [  # "[1x1 conv, 64] 28x28x64x1x1x256", ... as listed on the slide
    28 * 28 * 64 * 1 * 1 * 256,
    28 * 28 * 64 * 1 * 1 * 256,
    28 * 28 * 128 * 1 * 1 * 256,
    28 * 28 * 192 * 3 * 3 * 64,
    28 * 28 * 96 * 5 * 5 * 64,
    28 * 28 * 64 * 1 * 1 * 256,
]
INCEPTION_REDUCED_PRINTED = 358_000_000  # "Total: 358M ops"

# Receptive fields from the lectures (lecture 001 / 003 and the AlexNet/VGG geometry).
ALEXNET_RF = {"conv1": 11, "pool5": 195}
VGG16_RF = {"conv5_3": 196, "pool5": 212}

# AlexNet conv1 (lecture 001): 55x55x96 output, (11*11*3 + 1) * 96 = 34,944 parameters; lecture 002:
# "Number of flops for first CONV ... = 105415200 ~ 105M".
ALEXNET_CONV1 = {"output": (55, 55, 96), "params": 34_944, "macs": 105_415_200}
