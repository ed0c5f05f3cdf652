"""The default experiment: ResNet-20 on the built-in shapes dataset, sized for a 2-core CPU.

`jaxconv train` with no arguments runs it (data generation, compilation and training in
under 10 minutes on a 2-core CPU). On an accelerator, raise num_epochs.
"""

from jaxconv.train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet20"
    config.dataset = "shapes"
    config.image_size = 32
    config.batch_size = 32  # on a CPU, as many images per second as 64, and twice the updates
    config.num_train_steps = 1000  # 32,000 images: 1.6 epochs of the 20,000 training images
    config.optimizer.name = "sgd"
    config.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule = "cosine"
    config.warmup_epochs = 0.3
    config.augment = "flip"
    config.eval_crop = "resize"
    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 250
    return config
