"""ResNet-20 on CIFAR-10 as in He et al. 2016, §4.2 (Fig. 6; 8.75% error in the paper).

Batch 128, SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1 divided by 10 at
32k and 48k iterations, 64k iterations in all; 4-pixel padding, random 32x32 crops and
horizontal flips. (The paper holds out 5k of the 50k training images for validation; this
recipe trains on all 50k and evaluates on the 10k test set.)
"""

from jaxconv.train.config import base_config

ITERATIONS = 64_000
STEPS_PER_EPOCH = 50_000 // 128


def get_config():
    config = base_config()
    config.model = "resnet20"
    config.dataset = "cifar10"
    config.image_size = 32
    config.batch_size = 128
    config.num_train_steps = ITERATIONS
    config.optimizer.name = "sgd"
    config.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule = "step"
    config.decay_epochs = (32_000 / STEPS_PER_EPOCH, 48_000 / STEPS_PER_EPOCH)
    config.decay_factor = 0.1
    config.augment = "cifar"
    config.eval_crop = "resize"
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 2_000
    config.log_every_steps = 100
    return config
