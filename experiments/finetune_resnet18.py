"""Fine-tuning torchvision's ImageNet ResNet-18 on the built-in shapes dataset, sized for a 2-core CPU.

The weights are torchvision's ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth, 69.76%
top-1). By default they are fetched into ~/.cache/jaxconv/weights (or $JAXCONV_WEIGHTS_DIR)
and hash-checked; without a network, jaxconv says what to download and where to put it. A
file you already have — the .pth (read with torch) or timm's safetensors republication
(resnet18.tv_in1k, no torch needed) — is given with

    jaxconv train --config experiments/finetune_resnet18.py --config.init_weights=PATH

The 1000-class head is replaced by a fresh 10-class one; every other weight and BatchNorm
statistic is loaded. --config.freeze=backbone trains only the head (a linear probe: frozen
BatchNorms keep their ImageNet statistics and no gradient flows through the backbone, which
halves the step time here). A resumed run restores its own checkpoint and never reads the
weights again.

32-pixel images (the last stage sees 1x1; ImageNet's 224 would cost 50 times more) and 4,000
training images keep a run to a few minutes on a 2-core CPU; on an accelerator, raise
image_size (e.g. 128) and num_train_steps. The learning rate is a tenth of training from
scratch, as usual when fine-tuning.
"""

from jaxconv.train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet18"
    config.init_weights = "IMAGENET1K_V1"  # or a .pth / .safetensors path, or another run's workdir
    config.freeze = None  # 'backbone' for a linear probe, or module patterns such as 'stem,stage1'
    config.dataset = "shapes"
    config.shapes_train_examples = 4_000
    config.shapes_test_examples = 1_000
    config.image_size = 32
    config.batch_size = 32
    config.num_train_steps = 250  # 8,000 images: 2 epochs
    config.optimizer.name = "sgd"
    config.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule = "cosine"
    config.warmup_epochs = 0.2
    config.augment = "flip"
    config.eval_crop = "resize"
    config.log_every_steps = 25
    config.eval_every_steps = 125
    config.checkpoint_every_steps = 125
    return config
