"""ResNet-50 (v1.5) on ImageNet for 90 epochs: batch 256, SGD momentum 0.9, learning rate 0.1 ÷10 at
epochs 30, 60 and 80, weight decay 1e-4, random-resized crops and flips, centre-crop evaluation at 224.

The schedule is Goyal et al. 2017's 90-epoch baseline (§5.1: ÷10 at epochs 30, 60 and 80). He et al.
2016 divided "when the error plateaus" (up to 60·10⁴ iterations); torchvision's reference script
(--epochs 90 --lr-step-size 30) divides at 30 and 60 only, and decays every parameter, where
jaxconv spares biases and normalisation parameters (add --config.decay_epochs=30,60 for its steps).

Scale learning_rate with the batch (0.1 x batch / 256) when changing batch_size. Needs the
manually downloaded ImageNet (`jaxconv train` says where to put the files). bfloat16 compute
is for accelerators; on a CPU use --config.dtype=float32.
"""

from jaxconv.train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet50"
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.batch_size = 256
    config.num_epochs = 90.0
    config.optimizer.name = "sgd"
    config.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule = "step"
    config.decay_epochs = (30.0, 60.0, 80.0)
    config.decay_factor = 0.1
    config.augment = "inception"
    config.eval_crop = "center"
    config.dtype = "bfloat16"
    config.log_every_steps = 100
    config.eval_every_steps = 5_000
    config.checkpoint_every_steps = 5_000
    config.keep_checkpoints = 3
    return config
