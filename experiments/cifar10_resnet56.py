"""ResNet-56 on CIFAR-10 as in He et al. 2016, §4.2 (6.97% error in the paper).

The recipe of cifar10_resnet20.py: batch 128, SGD momentum 0.9, weight decay 1e-4, learning
rate 0.1 ÷10 at 32k and 48k iterations, 64k iterations, pad-4 crops and flips.
"""

from jaxconv.train.config import base_config

ITERATIONS = 64_000
STEPS_PER_EPOCH = 50_000 // 128


def get_config():
    config = base_config()
    config.model = "resnet56"
    config.dataset = "cifar10"
    config.image_size = 32
    config.batch_size = 128
    config.num_train_steps = ITERATIONS
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.schedule = "step"
    config.decay_epochs = (32_000 / STEPS_PER_EPOCH, 48_000 / STEPS_PER_EPOCH)
    config.decay_factor = 0.1
    config.augment = "cifar"
    config.eval_crop = "resize"
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 2_000
    config.log_every_steps = 100
    return config
