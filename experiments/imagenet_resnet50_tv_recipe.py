"""ResNet-50 with torchvision's "new training recipe", the one behind IMAGENET1K_V2 (80.858% top-1,
95.434% top-5 at 224 px, published in torchvision's weights metadata).

Source: V. Vryniotis, "How to Train State-Of-The-Art Models Using TorchVision's Latest Primitives"
(PyTorch blog, 2021-11-18) and torchvision's references/classification README, whose command is

    torchrun --nproc_per_node=8 train.py --model resnet50 --batch-size 128 --lr 0.5
      --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear
      --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002
      --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0
      --train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4

What this file takes over exactly: ResNet-50 (v1.5), 600 epochs, global batch 1024 (8 x 128),
SGD momentum 0.9 at 0.5 with a 5-epoch linear warm-up and cosine decay, weight decay 2e-5 and
none on normalisation parameters (jaxconv also skips biases, which torchvision decays), label smoothing 0.1, Mixup 0.2 / CutMix 1.0 (one
of them per batch), random erasing 0.1, an exponential moving average of the weights
and BatchNorm statistics, reset to the weights through the warm-up (torchvision updates it every 32
steps with decay 0.99998 adjusted to its batch and epochs, about 0.99891 per 32 steps, i.e. 0.999966
per step, which is the per-step decay used here),
TrivialAugment-Wide after the Inception crop and flip (``--auto-augment ta_wide``; jaxconv's
operations match torchvision's pixel for pixel, tests/test_autoaugment.py), and training at 176 px.

Differs in small ways: torchvision's warm-up starts at 0.01 x the rate and, like its cosine, steps once
per epoch; jaxconv's rises from 0 and decays step by step. With Mixup/CutMix the logged training top-1 is
scored against the images' own labels (torchvision's against the mixed target's largest share), and the
evaluation loss is the plain cross-entropy (torchvision's is label-smoothed).

What jaxconv does not have yet, so a run of this file is not expected to reach 80.858%: the
repeated-augmentation sampler (each image 4 times per batch across GPUs), and a separate
evaluation size (torchvision evaluates at 224 after resizing to 232, the "FixRes" gain of about
a point over evaluating at the training size; here evaluation is at 176 as well). Needs the
manually downloaded ImageNet; bfloat16 is for accelerators (on a CPU use --config.dtype=float32).
"""

from jaxconv.train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet50"
    config.dataset = "imagenet2012"
    config.image_size = 176
    config.batch_size = 1024
    config.num_epochs = 600.0
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 2e-5
    config.learning_rate = 0.5
    config.schedule = "cosine"
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.mixup_alpha = 0.2
    config.cutmix_alpha = 1.0
    config.random_erasing = 0.1
    config.ema_decay = 0.999966
    config.augment = "inception"
    config.auto_augment = "trivial"
    config.eval_crop = "center"
    config.dtype = "bfloat16"
    config.log_every_steps = 100
    config.eval_every_steps = 5_000
    config.checkpoint_every_steps = 5_000
    return config
