"""Every config key of an experiment, declared once: default, what it takes, one line of help.

``base_config()``, the per-key validation, `jaxconv train --help`'s key list and the README's
key table all come from ``KEYS``. Checks that relate several keys (a batch divisible by the
devices, a model that takes the image size) stay in ``jaxconv.train.config.validate``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from jaxconv.errors import UserError

# Keys every config.json has held since the first jaxconv: one missing means the file was damaged, and a
# default in its place would make another run of it.
RUN_DEFINING_KEYS = ("model", "dataset", "image_size", "batch_size", "num_train_steps", "seed")

INT32_MAX = 2**31 - 1  # sizes, counts and steps become int32 array dimensions and counters
FLOAT32_MAX = 3.4028234663852886e38  # rates, factors and epochs are float32 on the devices
MAX_IMAGE_SIZE = 4096  # larger than any classification network is trained at; beyond it, a typo
MAX_SHAPES_EXAMPLES = 5_000_000


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        shown = " ".join(repr(value).split())  # one line: a ConfigDict's repr spans several
        # "file" is the experiment file itself (given by --config or a sweep), not a key a user could set
        super().__init__(f"experiment file {value}: {allowed}" if key == "file" else f"config.{key}={shown}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


# -- what a key takes -------------------------------------------------------------------------------

class Check:
    """What a key's values may be: ``check`` raises ConfigError, ``describe`` says it in a few words."""

    python_type: type | None = None  # the ConfigDict field's type (None-able keys become placeholders of it)

    def check(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Integer(Check):
    low: int = 1
    high: int = INT32_MAX
    python_type = int

    def check(self, key, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, f"must be {self.describe()}")
        if value < self.low:
            raise ConfigError(key, value, f"must be {self.describe()}")
        if value > self.high:
            raise ConfigError(key, value, f"must be at most {self.high:,}")
        return value

    def describe(self):
        return "a positive integer" if self.low == 1 else f"an integer ≥ {self.low}"


@dataclasses.dataclass(frozen=True)
class Number(Check):
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    python_type = float

    def check(self, key, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(key, value, "must be a finite number")
        if abs(value) > FLOAT32_MAX:  # the step computes in float32, where it would be infinite
            raise ConfigError(key, value, f"must be a finite float32 number (at most {FLOAT32_MAX:.3g} in size)")
        bad_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        bad_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if bad_low or bad_high:
            raise ConfigError(key, value, f"must be in {self.describe()}")
        return float(value)

    def describe(self):
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        closed_high = self.high is not None and not self.high_open
        return f"{'(' if self.low_open else '['}{low}, {high}{']' if closed_high else ')'}"


@dataclasses.dataclass(frozen=True)
class Flag(Check):
    python_type = bool

    def check(self, key, value):
        if not isinstance(value, bool):
            raise ConfigError(key, value, "must be true or false")
        return value

    def describe(self):
        return "true or false"


@dataclasses.dataclass(frozen=True)
class Choice(Check):
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]]
    python_type = str

    def options(self) -> tuple[str, ...]:
        return self.choices() if callable(self.choices) else self.choices

    def check(self, key, value):
        if value not in self.options():
            raise ConfigError(key, value, f"must be one of {', '.join(self.options())}")
        return value

    def describe(self):
        return " | ".join(self.options())


@dataclasses.dataclass(frozen=True)
class Text(Check):
    """A non-empty string (a name, a path, a pattern)."""

    what: str = "a non-empty string"
    blank: bool = False  # a blank one passes here, to be refused by a check that says more about it
    python_type = str

    def check(self, key, value):
        if not isinstance(value, str) or not (value.strip() or self.blank):
            raise ConfigError(key, value, f"must be {self.what}")
        return value

    def describe(self):
        return self.what


@dataclasses.dataclass(frozen=True)
class Epochs(Check):
    """Increasing positive epochs (the step schedule's decays)."""

    python_type = tuple

    def check(self, key, value):
        ok = isinstance(value, (tuple, list)) and all(
            not isinstance(e, bool) and isinstance(e, (int, float)) and math.isfinite(e) and e > 0 for e in value)
        if not ok or list(value) != sorted(value):
            raise ConfigError(key, value, "must be increasing positive epochs, e.g. 30,60,80")
        return tuple(float(e) for e in value)

    def describe(self):
        return "increasing epochs, e.g. 30,60,80"


@dataclasses.dataclass(frozen=True)
class Modules(Check):
    python_type = tuple

    def check(self, key, value):
        if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(s, str) for s in value):
            raise ConfigError(key, value, "must be a list of module names or .py files, e.g. ('my_blocks.py',)")
        return tuple(value)

    def describe(self):
        return "modules or .py files"


@dataclasses.dataclass(frozen=True)
class Options(Check):
    """Free keyword overrides (model_options)."""

    def check(self, key, value):
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "must be a mapping of model fields, e.g. {'depths': (3, 3, 3)}")
        return value

    def describe(self):
        return "a mapping"


# -- the keys ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Key:
    name: str  # dotted within a group: 'optimizer.momentum'
    default: Any
    check: Check
    help: str
    group: str
    nullable: bool = False  # None allowed (and means what `help` says)
    resumable: bool = False  # a resumed run may change it without --allow-change
    optimizers: tuple[str, ...] = ()  # an optimizer.* key that only these optimizers read

    def validate(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        return self.check.check(self.name, value)


def _datasets() -> tuple[str, ...]:
    from jaxconv.data.catalog import DATASETS

    return tuple(DATASETS)


def _augmentations() -> tuple[str, ...]:
    from jaxconv.data.catalog import AUGMENTATIONS

    return AUGMENTATIONS


def _eval_crops() -> tuple[str, ...]:
    from jaxconv.data.catalog import EVAL_CROPS

    return EVAL_CROPS


OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("constant", "step", "cosine")
PARALLEL = ("shard_map", "pmap")
BN_MODES = ("sync", "local")
DTYPES = ("float32", "bfloat16")
NAN_POLICIES = ("stop", "rollback")

_probability = Number(0, 1, high_open=True)
_positive = Number(0, low_open=True)
_non_negative = Number(0)

KEYS: tuple[Key, ...] = (
    # What to train.
    Key("model", "resnet20", Text("a registered model's name, e.g. 'resnet20' (see `jaxconv list`)"),
        "a registered model (`jaxconv list`), yours included (imports)", "model"),
    Key("model_options", {}, Options(), "keyword overrides for the model, e.g. {'norm': 'group'}", "model"),
    Key("imports", (), Modules(), "modules or .py files imported first (your models); the run records them",
        "model", resumable=True),
    Key("dataset", "shapes", Choice(_datasets), "the dataset", "data"),
    Key("data_dir", None, Text("a directory"), "TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)",
        "data", nullable=True, resumable=True),
    Key("folder", None, Text("a directory"), "the 'folder' dataset's root: ROOT/<class>/<image>", "data",
        nullable=True),
    Key("shapes_train_examples", 20_000, Integer(high=MAX_SHAPES_EXAMPLES), "the built-in dataset's training size",
        "data"),
    Key("shapes_test_examples", 2_000, Integer(high=MAX_SHAPES_EXAMPLES), "the built-in dataset's test size", "data"),
    Key("image_size", None, Integer(high=MAX_IMAGE_SIZE), "input size in pixels (default: the model's own)", "data",
        nullable=True),
    # How long, in what batches.
    Key("batch_size", 128, Integer(), "global: summed over every device of every process", "length"),
    Key("eval_batch_size", None, Integer(), "default: batch_size", "length", nullable=True, resumable=True),
    Key("grad_accumulation_steps", 1, Integer(),
        "cut the batch into this many micro-batches (every k-th example), one update (less memory)", "length"),
    Key("num_epochs", 10.0, _positive, "length of the run in epochs", "length", resumable=True),
    Key("num_train_steps", None, Integer(), "length in steps; overrides num_epochs when set", "length",
        nullable=True, resumable=True),
    # The optimizer: its name and its own settings.
    Key("optimizer.name", "sgd", Choice(OPTIMIZERS), "the optimizer", "optimizer"),
    Key("optimizer.momentum", 0.9, _probability, "momentum (0: none)", "optimizer", optimizers=("sgd", "rmsprop")),
    Key("optimizer.nesterov", False, Flag(), "Nesterov momentum", "optimizer", optimizers=("sgd",)),
    Key("optimizer.decay", 0.9, _probability, "RMSprop's decay of the squared-gradient average", "optimizer",
        optimizers=("rmsprop",)),
    Key("optimizer.b1", 0.9, _probability, "Adam's first-moment decay", "optimizer", optimizers=("adamw",)),
    Key("optimizer.b2", 0.999, _probability, "Adam's second-moment decay", "optimizer", optimizers=("adamw",)),
    Key("optimizer.epsilon", 1e-8, _positive,
        "for stability: adamw adds it to the denominator, rmsprop under the square root (TensorFlow/Keras's "
        "RMSprop, whose momentum also sums steps already scaled by the learning rate, so a decay reaches the steps "
        "over 1/(1 - momentum) steps; PyTorch's differs in both)", "optimizer",
        optimizers=("rmsprop", "adamw")),
    Key("optimizer.weight_decay", 1e-4, _non_negative,
        "L2 for sgd/rmsprop, decoupled for adamw; never on biases or normalisation parameters", "optimizer"),
    Key("optimizer.grad_clip_norm", None, _positive, "clip the gradient's global norm (None: no clipping)",
        "optimizer", nullable=True),
    # The learning rate and the loss.
    Key("learning_rate", 0.1, _positive, "peak learning rate, for the global batch (no implicit scaling)",
        "schedule"),
    Key("schedule", "cosine", Choice(SCHEDULES), "after the warm-up: constant, step decays, or cosine to zero",
        "schedule"),
    Key("decay_epochs", (30.0, 60.0, 80.0), Epochs(), "step schedule: multiply by decay_factor at these epochs",
        "schedule"),
    Key("decay_factor", 0.1, Number(0, 1, low_open=True), "step schedule's factor", "schedule"),
    Key("warmup_epochs", 0.0, _non_negative, "linear warm-up from 0, step by step", "schedule"),
    Key("label_smoothing", 0.0, _probability,
        "label smoothing of the training cross-entropy (evaluation reports the plain one)", "schedule"),
    Key("ema_decay", None, Number(0, 1, low_open=True, high_open=True),
        "evaluate an exponential moving average of the weights and BatchNorm statistics (a copy through the "
        "warm-up)", "schedule", nullable=True),
    Key("aux_loss_weight", 0.3, _non_negative, "the auxiliary classifiers' loss weight (GoogLeNet's, Inception v3's)",
        "schedule"),
    # Transfer learning.
    Key("init_weights", None, Text("a file, a published tag or a workdir", blank=True),
        "a fresh run starts from these: .pth/.safetensors file, tag (IMAGENET1K_V1) or workdir", "transfer",
        nullable=True, resumable=True),
    Key("freeze", None, Text("'backbone' or module patterns, e.g. 'stem,stage1'", blank=True),
        "keep these fixed: 'backbone' (all but the head) or module patterns", "transfer", nullable=True),
    # Augmentation and evaluation.
    Key("augment", "cifar", Choice(_augmentations), "training augmentation", "augmentation"),
    Key("auto_augment", "none", Choice(("none", "trivial", "rand")),
        "after augment: TrivialAugmentWide (one op, random magnitude) or RandAugment (two ops, magnitude 9)",
        "augmentation"),
    Key("eval_crop", "resize", Choice(_eval_crops),
        "center: shorter side to size*256/224, centre crop, as torchvision's Resize + CenterCrop (JPEGs decoded as "
        "PIL does); resize: the whole image", "augmentation"),
    Key("mixup_alpha", 0.0, _non_negative, "Mixup: mix image pairs and targets, λ ~ Beta(α, α) (0: off)",
        "augmentation"),
    Key("cutmix_alpha", 0.0, _non_negative,
        "CutMix: paste a box from another image, λ ~ Beta(α, α) (0: off; with mixup, each step one of them)",
        "augmentation"),
    Key("random_erasing", 0.0, _probability, "probability per image of zeroing a random box (2-33% of it)",
        "augmentation"),
    Key("ten_crop", False, Flag(), "evaluate with AlexNet's 10 crops", "augmentation"),
    Key("eval_examples", None, Integer(), "evaluate on the first N examples only", "augmentation", nullable=True),
    # Bookkeeping.
    Key("seed", 0, Integer(low=0), "initialisation, data order and augmentation", "bookkeeping"),
    Key("log_every_steps", 50, Integer(), "fetch, check and log the metrics", "bookkeeping", resumable=True),
    Key("log_layer_grad_norms", False, Flag(), "also log every kernel's gradient norm", "bookkeeping",
        resumable=True),
    Key("eval_every_steps", 1000, Integer(), "evaluate (and at the end)", "bookkeeping", resumable=True),
    Key("checkpoint_every_steps", 1000, Integer(), "save a checkpoint (and at every evaluation, at the end, and when stopped)",
        "bookkeeping", resumable=True),
    Key("keep_checkpoints", 3, Integer(), "keep the last N, plus the best by top-1", "bookkeeping", resumable=True),
    Key("nan_policy", "stop", Choice(NAN_POLICIES),
        "on NaN/Inf: stop, or roll back to the last checkpoint with a lower learning rate", "bookkeeping",
        resumable=True),
    Key("max_rollbacks", 3, Integer(low=0), "rollbacks before stopping", "bookkeeping", resumable=True),
    Key("rollback_lr_factor", 0.5, Number(0, 1, low_open=True, high_open=True),
        "the learning rate's factor at each rollback", "bookkeeping", resumable=True),
    # Hardware.
    Key("parallel", "shard_map", Choice(PARALLEL), "jit over a mesh of every device, or pmap", "hardware",
        resumable=True),
    Key("bn_mode", "sync", Choice(BN_MODES), "BatchNorm statistics of the global batch, or per device",
        "hardware"),
    Key("dtype", "float32", Choice(DTYPES), "compute dtype (parameters and BatchNorm statistics stay float32)",
        "hardware"),
)

BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}
GROUPS = {"model": "What to train", "data": "Data", "length": "How long, in what batches",
          "optimizer": "The optimizer", "schedule": "Learning rate and loss", "transfer": "Transfer learning",
          "augmentation": "Augmentation and evaluation", "bookkeeping": "Logging, evaluation, checkpoints, faults",
          "hardware": "Hardware"}
# What a resumed run may change without being told to: when it logs, evaluates and checkpoints, how
# long it goes on, where its files and data live, how it is parallelised. Every other key changes
# what the run computes or what its evaluations mean, and is refused unless allowed by name.
RESUMABLE_KEYS = frozenset(key.name for key in KEYS if key.resumable)
# Keys of configs written before the optimizer's settings were grouped: old name -> new name.
MOVED = {"optimizer": "optimizer.name", "momentum": "optimizer.momentum", "nesterov": "optimizer.nesterov",
         "rmsprop_decay": "optimizer.decay", "adam_b1": "optimizer.b1", "adam_b2": "optimizer.b2",
         "epsilon": "optimizer.epsilon", "weight_decay": "optimizer.weight_decay",
         "grad_clip_norm": "optimizer.grad_clip_norm"}


def default_value(name: str) -> Any:
    value = BY_NAME[name].default
    return dict(value) if isinstance(value, dict) else value


def key_table(markdown: bool = False) -> str:
    """Every key with its default, what it takes and its help: `jaxconv train --help`, the README."""
    def shown(key: Key) -> str:
        value = key.default
        if isinstance(value, tuple):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "()"
        if isinstance(value, dict):
            return "{}"
        if isinstance(value, bool):
            return str(value).lower()
        return "None" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))

    lines = []
    if markdown:
        lines += ["| key | default | takes | what |", "|---|---|---|---|"]
    for group, title in GROUPS.items():
        keys = [k for k in KEYS if k.group == group]
        if markdown:
            lines.append(f"| **{title}** | | | |")
        else:
            lines.append(f"{title}:")
        for key in keys:
            takes = key.check.describe() + (" or None" if key.nullable else "")
            if isinstance(key.check, (Text, Modules, Options)):  # the help says it
                takes = ""
            only = f" ({', '.join(key.optimizers)})" if key.optimizers else ""
            if markdown:
                lines.append(f"| `{key.name}` | `{shown(key)}` | {takes.replace('|', '&#124;')} | {key.help}{only} |")
            else:
                lines.append(f"  {key.name:24} {shown(key):10} {key.help}{only}" + (f"; takes {takes}" if takes else ""))
    return "\n".join(lines) + "\n"
