"""AlexNet on ImageNet as Krizhevsky et al. 2012 trained it.

227x227 inputs (the 11x11/4 conv1 does not fit the paper's "224"), crops of images whose
shorter side is rescaled to 256/224 of that, horizontal flips and PCA lighting noise
(sigma 0.1); SGD with momentum 0.9, batch 128, weight decay 5e-4, learning rate 0.01 divided
by 10 three times (the paper divided "when the validation error stopped improving"; here at
epochs 30, 60 and 80 of 90), dropout 0.5 in FC6/FC7 (in the model), 10-crop evaluation.
Pixels are normalised by the channel mean and standard deviation (the paper subtracted the
mean only; dividing by the std lets the He initialisation of the layers work unchanged).
"""

from jaxconv.train.config import base_config


def get_config():
    config = base_config()
    config.model = "alexnet"
    config.dataset = "imagenet2012"
    config.image_size = 227
    config.batch_size = 128
    config.num_epochs = 90.0
    config.optimizer.name = "sgd"
    config.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule = "step"
    config.decay_epochs = (30.0, 60.0, 80.0)
    config.decay_factor = 0.1
    config.augment = "alexnet"
    config.eval_crop = "center"
    config.ten_crop = True
    config.dtype = "bfloat16"
    config.log_every_steps = 100
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 5_000
    return config
