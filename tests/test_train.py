"""Training: configs and their validation, the loop's guarantees (resume, preemption, NaN), eval."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from functools import partial

import jax
import ml_collections
import numpy as np
import pytest

from conftest import host_variables, xla_flags_for_tests
import jaxconv
from jaxconv.checkpoint import CheckpointMismatch, Checkpoints
from jaxconv.cli import main
from jaxconv.train.config import ConfigError, apply_overrides, base_config, load_config, validate
from jaxconv.train.experiment import abstract_state, build, checkpoint_meta
from jaxconv.train.loop import train
from jaxconv.train.optim import learning_rate_schedule
from jaxconv.train.resume import ConfigChanged
from tiny import tiny_config, write_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Tests sharing expensive session caches run on one xdist worker (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("train_loop")


# --- configs ------------------------------------------------------------------------------------


def test_every_experiment_loads_and_validates():
    for path in sorted((ROOT / "experiments").glob("*.py")):
        config = validate(load_config(path), device_count=8)
        assert config.model and config.dataset and config.batch_size % 8 == 0


def test_overrides_are_typed_by_the_key():
    config = apply_overrides(base_config(), {
        "num_train_steps": "100", "learning_rate": "1", "optimizer.nesterov": "true", "decay_epochs": "10,20",
        "model_options.variant": "v1", "optimizer.grad_clip_norm": "1.5", "dtype": "bfloat16",
    })
    assert config.num_train_steps == 100 and config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.optimizer.nesterov is True and tuple(config.decay_epochs) == (10, 20)
    assert config.model_options.variant == "v1" and config.optimizer.grad_clip_norm == 1.5 and config.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="unknown key; did you mean learning_rate?"):
        apply_overrides(base_config(), {"learning_rat": "0.1"})
    with pytest.raises(ConfigError, match="did you mean optimizer.momentum?"):
        apply_overrides(base_config(), {"optimizer.momentm": "0.5"})
    with pytest.raises(ConfigError, match="it is config.optimizer.weight_decay now"):  # an older jaxconv's name
        apply_overrides(base_config(), {"weight_decay": "0.5"})
    with pytest.raises(ConfigError, match="an integer"):
        apply_overrides(base_config(), {"batch_size": "lots"})


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"model": "resnet5"}, "model"),
        ({"dataset": "coco"}, "dataset"),
        ({"batch_size": "0"}, "batch_size"),
        ({"batch_size": "12"}, "batch_size"),  # not divisible by 8 devices
        ({"learning_rate": "-0.1"}, "learning_rate"),
        ({"model": "alexnet", "image_size": "224"}, "image_size"),
        ({"parallel": "horovod"}, "parallel"),
        ({"bn_mode": "global"}, "bn_mode"),
        ({"dtype": "float16"}, "dtype"),
        ({"optimizer.momentum": "1.0"}, "optimizer.momentum"),
        ({"decay_epochs": "60,30"}, "decay_epochs"),
        ({"grad_accumulation_steps": "3"}, "grad_accumulation_steps"),  # 16 examples per device
        ({"mixup_alpha": "-0.2"}, "mixup_alpha"),
        ({"random_erasing": "1.5"}, "random_erasing"),
        ({"model_options.widht": "2"}, "model_options"),
        ({"dataset": "folder"}, "folder"),
        ({"image_size": "10000000"}, "image_size"),  # would try to allocate hundreds of TiB
        ({"batch_size": "40000"}, "batch_size"),  # larger than the built-in dataset's 20,000 examples
        ({"data_dir": __file__}, "data_dir"),  # a file
        ({"data_dir": f"{__file__}/tfds"}, "data_dir"),  # below a file
    ],
)
def test_validation_names_the_key_the_value_and_what_is_allowed(overrides, key):
    with pytest.raises(ConfigError) as error:
        validate(apply_overrides(base_config(), overrides), device_count=8)
    assert error.value.key == key
    assert str(error.value).startswith(f"config.{key}=")


def test_the_optimizer_group_refuses_settings_its_optimizer_does_not_read():
    adamw = apply_overrides(base_config(), {"optimizer.name": "adamw", "optimizer.b2": "0.99"})
    assert validate(adamw, device_count=1).optimizer.b2 == 0.99
    with pytest.raises(ConfigError, match="optimizer.nesterov=True: only sgd reads it.*'adamw'"):
        validate(apply_overrides(adamw, {"optimizer.nesterov": "true"}), device_count=1)


def test_a_config_json_of_an_older_jaxconv_with_flat_optimizer_keys_still_resumes():
    from jaxconv.train.resume import check_resume

    current = validate(apply_overrides(base_config(), {"optimizer.name": "adamw", "optimizer.weight_decay": "0.05"}),
                       device_count=1)
    old = json.loads(json.dumps(current.to_dict()))
    group = old.pop("optimizer")
    old.update(optimizer="adamw", momentum=group["momentum"], nesterov=False, rmsprop_decay=0.9, adam_b1=0.9,
               adam_b2=0.999, epsilon=1e-8, weight_decay=0.05, grad_clip_norm=None)
    assert validate(ml_collections.ConfigDict(old), device_count=1).optimizer == current.optimizer  # `jaxconv eval`
    assert check_resume(old, current) == {}
    changed = apply_overrides(current, {"optimizer.weight_decay": "0.01"})
    with pytest.raises(ConfigChanged, match=r"optimizer.weight_decay 0.05 -> 0.01"):
        check_resume(old, changed)


@pytest.mark.parametrize("line,needle", [
    ("c.optimizer = 'adamw'", "set config.optimizer.name"),
    ("c.momentum = 0.8", "config.momentum=0.8: it is config.optimizer.momentum now"),
    ("c.learnig_rate = 0.1", "did you mean learning_rate?"),
])
def test_an_experiment_file_with_an_older_or_misspelt_key_is_told_the_right_one(tmp_path, line, needle):
    path = tmp_path / "exp.py"
    path.write_text("from jaxconv.train.config import base_config\n\n\ndef get_config():\n    c = base_config()\n"
                    f"    {line}\n    return c\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_an_experiment_whose_get_config_fails_is_one_line_naming_its_file_and_line(tmp_path, capsys):
    """The user's own code raising: the error and the line of *their* file it came through, exit 2; a variant
    asked of an experiment without variants is told so, while a TypeError inside a variant's code is itself."""
    (tmp_path / "exp.py").write_text("from jaxconv.train.config import base_config\n\n\ndef helper():\n    return 1 / 0"
                                     "\n\n\ndef get_config(variant=None):\n    c = base_config()\n"
                                     "    c.batch_size = helper() if variant else len(None)\n    return c\n")
    assert main(["train", "--config", str(tmp_path / "exp.py:quick"), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"jaxconv: error: experiment file {tmp_path / 'exp.py'}: get_config() failed: ZeroDivisionError: "
                   f"division by zero (exp.py, line 5)"]
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"TypeError: object of type 'NoneType' has no len\(\) \(exp.py, line 10\)"):
        load_config(tmp_path / "exp.py")


def test_train_help_lists_every_config_key(capsys):
    from jaxconv.train.keys import KEYS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    listed = capsys.readouterr().out
    assert all(f"  {key.name} " in listed for key in KEYS)


def test_wrongly_typed_values_set_in_get_config_are_refused():
    for key, value in (("decay_epochs", 5), ("model_options", 5), ("model", 5), ("init_weights", 5)):
        with pytest.raises(ConfigError, match=f"config.{key}=5: must be"):
            validate(ml_collections.ConfigDict({**base_config().to_dict(), key: value}), device_count=8)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--config.batch_size=0"], "config.batch_size=0: must be a positive integer"),
        (["--config.batch_size=12"], "divisible by the 8 devices"),
        (["--config.model=resnet5"], "did you mean"),
        (["--config.model=alexnet", "--config.image_size=224"], "config.image_size=224: alexnet cannot take it"),
        (["--config.learning_rate=0"], "config.learning_rate=0.0"),
        (["--config.nosuchkey=1"], "unknown key"),
        (["--config", "nowhere.py"], "no such experiment file"),
        (["--config.learning_rate"], "needs a value"),
        # finite in Python, infinite in the float32 step (it ran, and overflowed into NaN or an OverflowError)
        (["--config.learning_rate=1e308"], "config.learning_rate=1e+308: must be a finite float32 number"),
        (["--config.warmup_epochs=1e300"], "config.warmup_epochs=1e+300: must be a finite float32 number"),
    ],
)
def test_bad_train_arguments_exit_2_and_write_nothing(args, needle, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "--workdir", str(workdir), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not workdir.exists()


def test_schedules():
    config = base_config()
    config.schedule, config.decay_epochs, config.learning_rate = "step", (2.0, 4.0), 0.1
    step = learning_rate_schedule(config, steps_per_epoch=10, total_steps=60)
    assert [float(step(s)) for s in (0, 19, 20, 39, 40)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    config.schedule, config.warmup_epochs = "cosine", 1.0
    cosine = learning_rate_schedule(config, steps_per_epoch=10, total_steps=60)
    assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(0.05)
    assert float(cosine(10)) == pytest.approx(0.1) and float(cosine(60)) == pytest.approx(0.0, abs=1e-9)


def test_a_warm_up_as_long_as_the_run_is_named_with_the_peak_it_reaches():
    from jaxconv.train.optim import schedule_warnings

    config = base_config()
    config.schedule, config.warmup_epochs, config.learning_rate = "cosine", 1.0, 0.05
    short = learning_rate_schedule(config, steps_per_epoch=100, total_steps=60)
    (warning,) = schedule_warnings(config, short, steps_per_epoch=100, total_steps=60)
    assert "100 steps" in warning and "(60 steps)" in warning and "0.0295" in warning and "59%" in warning
    long = learning_rate_schedule(config, steps_per_epoch=100, total_steps=101)
    assert schedule_warnings(config, long, steps_per_epoch=100, total_steps=101) == []


@pytest.mark.parametrize("decays,warmup,needle", [
    ((1.0, 3.0), 1.0, "the decay at epoch 1 falls on step 10, inside the warm-up of 10 steps (warmup_epochs=1)"),
    ((0.5, 3.0), 1.0, "the decay at epoch 0.5 falls on step 5, inside the warm-up"),
    ((0.0, 3.0), 0.0, "the decay at epoch 0 falls on step 0, the first step"),
    ((2.0, 2.04), 0.0, "the decays at epochs 2 and 2.04 both fall on step 20 (10 steps per epoch)"),
])
def test_a_step_decay_that_would_not_happen_is_refused(decays, warmup, needle):
    """optim.py kept only boundaries after the warm-up, and two decays on one step made one ÷10: silently."""
    from jaxconv.train.optim import check_decay_epochs

    config = base_config()
    config.schedule, config.decay_epochs, config.warmup_epochs = "step", decays, warmup
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_decay_epochs(config, steps_per_epoch=10)
    config.decay_epochs = (3.0, 4.0)
    check_decay_epochs(config, steps_per_epoch=10)


def test_step_decays_after_the_end_of_the_run_are_named():
    from jaxconv.train.optim import schedule_warnings

    config = base_config()
    config.schedule, config.decay_epochs, config.learning_rate, config.warmup_epochs = "step", (2.0, 6.0, 8.0), 0.1, 0.0
    schedule = learning_rate_schedule(config, steps_per_epoch=10, total_steps=60)
    (warning,) = schedule_warnings(config, schedule, steps_per_epoch=10, total_steps=60)
    assert warning.startswith("config.decay_epochs: the decays at epochs 6, 8 come after the run's last step (60 "
                              "steps, 6 epochs of 10 steps): they do not happen, and the learning rate ends at 0.01")
    config.decay_epochs = (2.0, 5.9)
    assert schedule_warnings(config, schedule, steps_per_epoch=10, total_steps=60) == []


def test_a_decay_inside_the_warm_up_is_refused_before_anything_is_written(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    experiment = write_experiment(tmp_path / "exp.py", data_dir, schedule="step", decay_epochs=(0.5, 1.0),
                                  warmup_epochs=0.5)
    assert main(["train", "--config", str(experiment), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("jaxconv: error: config.decay_epochs=(0.5, 1.0): the decay at epoch 0.5 falls on step 4, "
                              "inside the warm-up of 4 steps"), err
    assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()


def test_step_decays_with_another_schedule_are_said_to_be_ignored(data_dir):
    """Ignored without a word before; refused, they broke experiments derived from a step-schedule one."""
    lines = []
    validate(tiny_config(data_dir, schedule="cosine", decay_epochs=(10.0, 20.0), decay_factor=0.5),
             device_count=jax.device_count(), log=lines.append)
    assert lines == ["warning: config.decay_epochs=(10.0, 20.0): only schedule 'step' reads it, and config.schedule "
                     "is 'cosine', so it is ignored (give --config.schedule=step to decay so)",
                     "warning: config.decay_factor=0.5: only schedule 'step' reads it, and config.schedule is "
                     "'cosine', so it is ignored (give --config.schedule=step to decay so)"]


@pytest.mark.parametrize("changes,needle", [
    ({"optimizer": {"name": "sgd", "momentum": 0.0, "nesterov": True}},
     "config.optimizer.nesterov=True: Nesterov momentum needs momentum, and config.optimizer.momentum is 0"),
    ({"freeze": ","}, "config.freeze=',': names no pattern"),
])
def test_settings_the_run_would_not_read_are_refused(data_dir, changes, needle):
    """--config.freeze=, trained every parameter; decay settings with a cosine schedule and Nesterov without
    momentum were ignored without a word."""
    config = tiny_config(data_dir, **{k: v for k, v in changes.items() if k != "optimizer"})
    config.optimizer.update(changes.get("optimizer", {}))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        validate(config, device_count=jax.device_count())


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_long_phase_before_training_shows_a_count_a_rate_and_an_eta():
    from jaxconv.progress import Counter

    now = [0.0]
    screen = _Terminal()
    with Counter("generating shapes", 1000, stream=screen, clock=lambda: now[0], unit=" images",
                 enabled=True) as counter:
        for _ in range(250):
            now[0] += 0.01
            counter.advance()
    lines = [line.split("\x1b[K")[-1] for line in screen.getvalue().split("\r")]
    assert "generating shapes 50/1,000 images (5%), 100/s, ETA 0m09s" in lines  # redrawn every 0.5 s
    assert lines[-1] == "generating shapes: 250 images in 0m02s\n"
    log = io.StringIO()  # not a terminal: a line every 30 s, so that a log file is never silent for long
    with Counter("checking the images", 10_000, stream=log, clock=lambda: now[0], enabled=True) as counter:
        for _ in range(10_000):
            now[0] += 0.01
            counter.advance()
    assert log.getvalue().splitlines()[0].startswith("checking the images 3,000/10,000 (30%)")
    assert len(log.getvalue().splitlines()) == 4


def test_progress_shows_compilation_then_steps_with_a_rate_that_leaves_out_compiling_and_evaluating():
    from jaxconv.train.report import Progress

    now = [0.0]
    screen = _Terminal()
    progress = Progress(total=100, start=0, steps_per_epoch=50, stream=screen, clock=lambda: now[0], refresh_s=60)
    with progress.phase("compiling the train step", "compiled the train step"):
        now[0] = 7.0
        progress.refresh()
    completed = [0]
    progress.training(lambda: completed[0], images_per_step=32)
    now[0], completed[0] = 9.0, 10  # 10 steps in 2 s of training: 5 steps/s, 160 img/s, 90 steps left
    progress.refresh()
    progress.update(10, {"step": 10, "epoch": 0.2, "loss": 2.25, "top1": 0.125, "images_per_sec": 160.0})
    progress.pause()  # an evaluation: 100 s that count neither in the rate nor the ETA
    now[0] = 109.0
    progress.report_eval({"step": 10, "epoch": 0.2, "loss": 2.5, "top1": 0.1, "top5": 0.5, "examples": 40})
    progress.training(lambda: completed[0], images_per_step=32)
    progress.close()
    lines = [line.split("\x1b[K")[-1] for line in screen.getvalue().split("\r")]
    assert "compiling the train step… 7 s" in lines and "compiled the train step in 7.0 s\n" in lines
    assert "step 10/100 epoch 0.20 | 160 img/s | ETA 0m18s" in lines[lines.index("compiled the train step in 7.0 s\n") + 2]
    assert lines[-1].startswith("[##") and "loss 2.2500 top1 12.5% | 160 img/s | ETA 0m18s" in lines[-1]  # after the eval
    assert any(line.startswith("eval @ step 10") for line in lines)


def test_weight_decay_skips_biases_and_normalisation_parameters():
    from jaxconv.train.optim import build_optimizer, decay_mask

    ones = partial(np.ones, dtype=np.float32)
    params = {"conv": {"kernel": ones((3, 3, 2, 4)), "bias": ones(4)}, "norm": {"scale": ones(4), "bias": ones(4)}}
    assert decay_mask(params) == {"conv": {"kernel": True, "bias": False}, "norm": {"scale": False, "bias": False}}
    zero_grads = jax.tree_util.tree_map(np.zeros_like, params)
    for optimizer in ("sgd", "rmsprop", "adamw"):
        config = base_config()
        config.optimizer.update(name=optimizer, weight_decay=0.1, momentum=0.0)
        config.learning_rate = 1.0
        tx = build_optimizer(config, lambda step: config.learning_rate)
        updates, _ = tx.update(zero_grads, tx.init(params), params)
        assert np.all(np.asarray(updates["conv"]["kernel"]) < 0), optimizer  # decayed towards zero
        for untouched in (updates["conv"]["bias"], updates["norm"]["scale"], updates["norm"]["bias"]):
            np.testing.assert_array_equal(untouched, 0)


def test_weight_decay_skips_convnext_norms_biases_and_layer_scales():
    """ConvNeXt's recipe decays the convolution and linear kernels only: not its LayerNorms, biases or layer scales
    (which torchvision holds as (C, 1, 1) tensors; jaxconv's are (C,), so the ndim rule sees them)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import decay_mask

    model = jaxconv.get_model("convnext_tiny")
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)["params"]
    decayed = {"/".join(str(k.key) for k in path): flag
               for path, flag in jax.tree_util.tree_leaves_with_path(decay_mask(params))}
    assert decayed["stage2/block0/layer_scale/scale"] is False and decayed["stem/norm/scale"] is False
    assert decayed["stage2/block0/downsample_norm/bias"] is False and decayed["head_norm/scale"] is False
    assert decayed["stage2/block0/downsample/kernel"] is True and decayed["stage1/block0/depthwise/kernel"] is True
    kinds = {}  # (leaf name, decayed) -> count over the whole network
    for path, flag in decayed.items():
        kinds[(path.rsplit("/", 1)[-1], flag)] = kinds.get((path.rsplit("/", 1)[-1], flag), 0) + 1
    # 18 blocks of 4 kernels (depthwise, expand, project) + 3 downsamplings + stem + head; 18 layer scales;
    # LayerNorms: stem, 18 blocks, 3 downsamplings, head.
    assert kinds == {("kernel", True): 18 * 3 + 3 + 2, ("bias", False): 18 * 3 + 3 + 2 + 23,
                     ("scale", False): 23 + 18}


def fit_one_batch(model, variables, x, labels, optimizer, *, steps=6, dropout=False, loss=None, sown=()):
    """`steps` compiled training steps on the one batch: (params, batch_stats or None without them, the losses)."""
    import optax

    if loss is None:  # loss(logits, state), state: the mutable collections (batch_stats and `sown`) after the step
        def loss(logits, state):
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    stats = {name: tree for name, tree in variables.items() if name == "batch_stats"}  # {} without BatchNorm
    mutable = list(stats) + list(sown)

    def loss_fn(params, stats, key):
        logits, state = model.apply({"params": params, **stats}, x, train=True, mutable=mutable,
                                    rngs=None if key is None else {"dropout": key})
        return loss(logits, state), {name: state[name] for name in stats}

    @jax.jit
    def step(params, stats, opt_state, key):
        (value, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, value

    params = variables["params"]
    opt_state, losses = optimizer.init(params), []
    for i in range(steps):  # with dropout, step i's key is jax.random.key(i)
        params, stats, opt_state, value = step(params, stats, opt_state, jax.random.key(i) if dropout else None)
        losses.append(float(value))
    return params, stats.get("batch_stats"), losses


def test_a_small_convnext_trains_with_adamw_and_its_layer_scales_move():
    """ConvNeXt's recipe in miniature (AdamW with the training system's decay mask, stochastic depth on): a few
    steps on a fixed batch lower the loss, and the layer scales, started at 1e-6, move: gradients reach every
    residual branch. Three one-block stages with 3x3 depthwise kernels at 16 px (16 / 4 -> 4 -> 2 -> 1), one
    compiled step and host-filled variables (the loop itself is the same for every model and tested above)."""
    import jax.numpy as jnp
    import optax

    import jaxconv
    from jaxconv.train.optim import decay_mask

    model = jaxconv.get_model("convnext_tiny", num_classes=4, depths=(1, 1, 1), widths=(8, 16, 16),
                              drop_path_rate=0.1, kernel_size=3)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 16, 16, 3)).astype(np.float32), jnp.arange(8) % 4
    params = host_variables(model, x)["params"]  # as initialised, without compiling the initialisers
    for stage in range(1, 4):
        block = params[f"stage{stage}"]["block0"]
        block["layer_scale"]["scale"] = np.full_like(block["layer_scale"]["scale"], 1e-6)
    optimizer = optax.adamw(0.002, weight_decay=0.05, mask=decay_mask)
    start = params
    params, _, losses = fit_one_batch(model, {"params": params}, x, labels, optimizer, dropout=True)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    for stage in range(1, 4):
        before = np.asarray(start[f"stage{stage}"]["block0"]["layer_scale"]["scale"])
        after = np.asarray(params[f"stage{stage}"]["block0"]["layer_scale"]["scale"])
        assert np.allclose(before, 1e-6) and np.abs(after - before).max() > 1e-5, stage


def test_a_small_mobilenet_v3_trains_with_rmsprop_and_its_gates_and_statistics_move():
    """MobileNetV3's recipe in miniature (torchvision's: RMSprop, eps 0.0316, weight decay 1e-5, through the training
    system's optimizer and decay mask): a few steps on a fixed batch lower the loss, every BatchNorm's running mean
    moves and every squeeze-excite gate's bias is updated (gradients pass the hard sigmoid). Three blocks, one per
    kind (no expansion with SE and ReLU, stride 2; expansion with hard swish and the residual; 5x5 expansion with SE,
    stride 2) at 16 px (16 / 2 -> 8 -> 4 -> 4 -> 2), one compiled step on host-filled variables (the loop itself is
    the same for every model and tested above)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import build_optimizer

    blocks = ((3, 16, 16, True, "RE", 2), (3, 32, 16, False, "HS", 1), (5, 48, 24, True, "HS", 2))
    model = jaxconv.get_model("mobilenet_v3_small", num_classes=4, blocks=blocks, hidden_width=32)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 16, 16, 3)).astype(np.float32), jnp.arange(8) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.optimizer.update(name="rmsprop", momentum=0.9, epsilon=0.0316, weight_decay=1e-5)
    optimizer = build_optimizer(config, lambda step: 0.01)

    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer, dropout=True)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    named = {"/".join(str(k.key) for k in path): leaf for path, leaf in
             jax.tree_util.tree_leaves_with_path({"params": params, "batch_stats": batch_stats})}
    means = [leaf for path, leaf in named.items() if path.endswith("/mean")]
    gates = [leaf for path, leaf in named.items() if path.endswith("/se/fc2/bias")]
    assert len(means) == 1 + 2 + 3 + 3 + 1 and len(gates) == 2  # stem, the blocks' units, the head conv; two SEs
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in means + gates)  # all started at zero


def test_a_small_densenet_trains_with_sgd_and_its_statistics_move():
    """DenseNet's recipe in miniature (the paper's, section 4.2: SGD with Nesterov momentum 0.9,
    weight decay 1e-4, through the training system's optimizer and decay mask): a few steps on a fixed batch lower
    the loss and every BatchNorm's running mean moves, so gradients and statistics reach every layer through the
    concatenations. Three stages of two dense layers (growth 4, 8 stem channels) at 32 px (32 / 4 -> 8 -> 4 -> 2),
    one compiled step on host-filled variables (the loop itself is the same for every model and tested above)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import build_optimizer

    model = jaxconv.get_model("densenet121", num_classes=4, depths=(2, 2, 2), growth=4, stem_width=8)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), jnp.arange(8) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.optimizer.update(name="sgd", momentum=0.9, nesterov=True, weight_decay=1e-4)
    optimizer = build_optimizer(config, lambda step: 0.05)

    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    means = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(batch_stats) if path[-1].key == "mean"]
    assert len(means) == 1 + 3 * 2 * 2 + 2 + 1  # stem, two per dense layer, two transitions, norm5
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in means)  # all started at zero
    assert params["stage3"]["block1"]["conv2"]["kernel"].shape == (3, 3, 16, 4)  # bottleneck 4 x growth


def test_a_small_efficientnet_v2_trains_with_sgd_and_skips_its_norms_in_weight_decay():
    """EfficientNetV2's recipe in miniature (torchvision's: SGD, momentum 0.9, weight decay 2e-5 and none on the norms,
    through the training system's optimizer and decay mask; stochastic depth 0.2 on): a few steps on a fixed batch
    lower the loss and every BatchNorm's running mean moves, so gradients and statistics pass both Fused-MBConv forms
    and the MBConv. Fused without expansion (residual), two fused with expansion (stride 2, then residual), one MBConv
    with SE (stride 2) at 16 px (16 / 2 -> 8 -> 4 -> 2), one compiled step on host-filled variables (the loop itself
    is the same for every model and tested above)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import build_optimizer, decay_mask

    model = jaxconv.get_model("efficientnet_v2_s", num_classes=4, stages=((1, 3, 1, 8, 1), (4, 3, 2, 16, 2),
                              (4, 3, 2, 24, 1)), fused_stages=2, stem_width=8, head_width=32)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 16, 16, 3)).astype(np.float32), jnp.arange(8) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.optimizer.update(name="sgd", momentum=0.9, weight_decay=2e-5)
    optimizer = build_optimizer(config, lambda step: 0.05)

    params = variables["params"]
    decayed = {"/".join(str(k.key) for k in path): flag
               for path, flag in jax.tree_util.tree_leaves_with_path(decay_mask(params))}
    assert not any(flag for path, flag in decayed.items() if "/norm/" in path or path.endswith("bias"))
    assert decayed["stage1/block0/fused/conv/kernel"] and decayed["stage3/block0/se/fc1/kernel"]
    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer, dropout=True)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    means = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(batch_stats) if path[-1].key == "mean"]
    assert len(means) == 1 + 1 + 2 * 2 + 3 + 1  # stem, the fused conv, two expand-project pairs, the MBConv, head
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in means)  # all started at zero


def test_a_small_shufflenet_v2_trains_with_sgd_and_its_norms_escape_weight_decay():
    """ShuffleNet's recipe in miniature (Zhang et al. 2018: SGD, momentum 0.9, weight decay 4e-5, through the training
    system's optimizer and decay mask): a few steps on a fixed batch lower the loss and every BatchNorm's running mean
    moves, the kept halves and the shuffles included, so gradients and statistics reach both branches of every unit;
    the decay mask decays every convolution and linear kernel and no norm scale or bias. One stage of two units, one
    of each kind (stride 2, then the split; width 16 after an 8-channel stem), at 32 px (32 / 4 -> 8 -> 4), one
    compiled step on host-filled variables (the loop itself is the same for every model and tested above)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import build_optimizer, decay_mask

    model = jaxconv.get_model("shufflenet_v2_x0_5", num_classes=4, depths=(2,), widths=(8, 16, 32))
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), jnp.arange(8) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.optimizer.update(name="sgd", momentum=0.9, weight_decay=4e-5)
    optimizer = build_optimizer(config, lambda step: 0.05)

    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    means = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(batch_stats) if path[-1].key == "mean"]
    assert len(means) == 1 + 5 + 3 + 1  # stem, the stride-2 unit's five conv-norm units, the stride-1 one's 3, head
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in means)  # all started at zero
    decayed = {tuple(k.key for k in path): flag for path, flag in jax.tree_util.tree_leaves_with_path(decay_mask(params))}
    assert {path[-1] for path, flag in decayed.items() if flag} == {"kernel"}
    assert sum(decayed.values()) == 1 + 5 + 3 + 1 + 1  # every convolution's kernel and the classifier's
    assert not any(flag for path, flag in decayed.items() if path[-2] == "norm" or path[-1] == "bias")


def test_a_small_regnet_y_trains_with_sgd_and_its_statistics_and_gates_move():
    """RegNet's recipe in miniature (the paper's, section 3: SGD with momentum 0.9, weight decay 5e-5, through the
    training system's optimizer and decay mask): a few steps on a fixed batch lower the loss, every BatchNorm's
    running mean moves and every squeeze-excite gate's bias is updated; the norms' scales and biases and the SE
    biases are not decayed, the kernels are. Generated from (depth 3, w_0 8, w_a 8, w_m 2, group width 4): three
    one-block stages of widths 8, 16, 32 (2, 4, 8 groups) at 32 px (32 / 2 -> 8 -> 4 -> 2), one compiled step on
    host-filled variables (the loop itself is the same for every model and tested above)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import build_optimizer, decay_mask

    model = jaxconv.get_model("regnet_y_400mf", num_classes=4, depth=3, w_0=8, w_a=8.0, w_m=2.0, group_width=4,
                              stem_width=8)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), jnp.arange(8) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.optimizer.update(name="sgd", momentum=0.9, weight_decay=5e-5)
    optimizer = build_optimizer(config, lambda step: 0.05)

    params = variables["params"]
    assert params["stage3"]["block0"]["conv2"]["kernel"].shape == (3, 3, 4, 32)  # 8 groups of 4 channels
    decayed = {"/".join(str(k.key) for k in path): flag
               for path, flag in jax.tree_util.tree_leaves_with_path(decay_mask(params))}
    assert all(flag == path.endswith("kernel") for path, flag in decayed.items())
    assert {path.rsplit("/", 1)[-1] for path, flag in decayed.items() if not flag} == {"scale", "bias"}
    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    named = {"/".join(str(k.key) for k in path): leaf for path, leaf in
             jax.tree_util.tree_leaves_with_path({"params": params, "batch_stats": batch_stats})}
    means = [leaf for path, leaf in named.items() if path.endswith("/mean")]
    gates = [leaf for path, leaf in named.items() if path.endswith("/se/fc2/bias")]
    assert len(means) == 1 + 3 * 4 and len(gates) == 3  # stem; three norms and the projection's per block
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in means + gates)  # all started at zero




def test_a_small_mnasnet_trains_with_rmsprop_and_decays_only_its_kernels():
    """MNASNet's recipe in miniature (the paper's: RMSprop with decay 0.9 and momentum 0.9, weight decay 1e-5, through
    the training system's optimizer and decay mask): a few steps on a fixed batch lower the loss; the mask decays the
    convolution and linear kernels only, not the BatchNorm scales and biases or the classifier's bias; every running
    mean moves, slowly at torchvision's momentum 0.9997. Three stages (the separable convolution, two inverted
    residuals 3x with the residual, one 6x 5x5) at 16 px (16 / 2 -> 8 -> 8 -> 4 -> 2), one compiled step on
    host-filled variables (the loop itself is the same for every model and tested above)."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.train.optim import build_optimizer, decay_mask

    stages = ((1, 3, 1, 8, 1), (3, 3, 2, 8, 2), (6, 5, 2, 16, 1))
    model = jaxconv.get_model("mnasnet1_0", num_classes=4, stages=stages, stem_width=8, head_width=32)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 16, 16, 3)).astype(np.float32), jnp.arange(8) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.optimizer.update(name="rmsprop", decay=0.9, momentum=0.9, weight_decay=1e-5)
    optimizer = build_optimizer(config, lambda step: 0.01)

    params = variables["params"]
    decayed = {"/".join(str(k.key) for k in path): flag
               for path, flag in jax.tree_util.tree_leaves_with_path(decay_mask(params))}
    kinds = {}  # (leaf name, decayed) -> count
    for path, flag in decayed.items():
        kinds[(path.rsplit("/", 1)[-1], flag)] = kinds.get((path.rsplit("/", 1)[-1], flag), 0) + 1
    # 13 conv-norm units: stem, 2 in the separable stage, 3 in each of the 3 blocks, the head conv; the classifier.
    assert kinds == {("kernel", True): 13 + 1, ("scale", False): 13, ("bias", False): 13 + 1}
    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer, dropout=True)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    means = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(batch_stats) if path[-1].key == "mean"]
    assert len(means) == 13
    assert all(0 < np.abs(np.asarray(leaf)).max() < 0.05 for leaf in means)  # from zero, 0.0003 of a batch per step


def test_a_small_inception_v3_trains_with_its_auxiliary_head_and_rmsprop():
    """Inception v3's recipe in miniature (the paper's section 8: RMSprop, decay 0.9, eps 1.0, gradient clipping at
    2.0, label smoothing 0.1; weight decay 4e-5, TF-slim's; through the training system's optimizer and decay mask)
    with the auxiliary head, whose logits the model sows in training and the loss adds times aux_loss_weight, as
    the training system's step does: a few steps on a fixed batch lower the loss, every running mean moves (the
    head's too) and norm scales and biases are not decayed. The stem, a 35x35 module and a grid reduction with a
    few channels, the head on the last-but-one stage; 155 px, about the least the head takes (its 5x5/3 pool and
    5x5 conv need a 17x17 map): stem 17, then 8. One compiled step on host-filled variables."""
    import jax.numpy as jnp

    import jaxconv
    from jaxconv.blocks import InceptionA, InceptionB
    from jaxconv.train.optim import build_optimizer, decay_mask
    from jaxconv.train.steps import one_hot_targets, soft_cross_entropy

    blocks = (("5b", InceptionA, (4, 4, 4, 4, 4, 4)), ("6a", InceptionB, (4, 4, 4)))
    model = jaxconv.get_model("inception_v3", num_classes=4, blocks=blocks, stem_widths=(4, 4, 8, 8, 8),
                              aux_widths=(8, 8))
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((4, 155, 155, 3)).astype(np.float32), jnp.arange(4) % 4
    variables = host_variables(model, x)
    config = base_config()
    config.update(label_smoothing=0.1)
    config.optimizer.update(name="rmsprop", decay=0.9, epsilon=1.0, momentum=0.9, weight_decay=4e-5,
                            grad_clip_norm=2.0)
    optimizer = build_optimizer(config, lambda step: 0.1)
    targets = one_hot_targets(labels, 4, config.label_smoothing)

    def loss_with_aux(logits, state):  # the auxiliary head's logits, sown in training, weighted in
        (aux,) = jax.tree_util.tree_leaves(state["aux_logits"])
        loss = soft_cross_entropy(logits, targets).mean()
        return loss + config.aux_loss_weight * soft_cross_entropy(aux, targets).mean()

    params, batch_stats, losses = fit_one_batch(model, variables, x, labels, optimizer, dropout=True,
                                                loss=loss_with_aux, sown=("aux_logits",))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    named = lambda tree: {"/".join(str(k.key) for k in path): leaf  # noqa: E731
                          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    means = {path: leaf for path, leaf in named(batch_stats).items() if path.endswith("/mean")}
    assert len(means) == 5 + 7 + 4 + 2 and "aux/conv1/norm/mean" in means  # the stem, the modules, the head
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in means.values())  # all started at zero
    decayed = named(decay_mask(params))
    assert decayed["mixed5b/branch5x5_2/conv/kernel"] and decayed["aux/fc/kernel"] and decayed["head/kernel"]
    assert not any(flag for path, flag in decayed.items() if "/norm/" in path or path.endswith("bias"))


def test_label_smoothing_and_clipping():
    import jax.numpy as jnp
    import optax

    from jaxconv.train.optim import build_optimizer
    from jaxconv.train.steps import cross_entropy

    logits = jnp.array([[2.0, 0.5, -1.0]])
    log_p = jax.nn.log_softmax(logits)[0]
    smoothed = float(cross_entropy(logits, jnp.array([0]), 3, 0.3)[0])
    assert smoothed == pytest.approx(-float(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2]), rel=1e-5)
    config = base_config()
    config.optimizer.update(grad_clip_norm=1.0, weight_decay=0.0, momentum=0.0)
    tx = build_optimizer(config, lambda step: 1.0)
    grads = {"w": jnp.full((4,), 10.0)}
    updates, _ = tx.update(grads, tx.init(grads), grads)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_checkpoints_keep_the_last_k_and_the_best(tmp_path):
    import jax.numpy as jnp

    checkpoints = Checkpoints(tmp_path, keep=2)
    for step, top1 in enumerate([0.9, 0.1, 0.2, 0.3, 0.4, 0.5], start=1):
        checkpoints.save(step, {"w": jnp.full((2,), step, jnp.float32)}, {"step": step}, {"top1": top1})
        checkpoints.wait()
    assert checkpoints.all_steps() == [1, 5, 6]
    assert checkpoints.best_step() == 1
    checkpoints.close()
    # A resumed run (a new manager over the same directory) still knows which one is best.
    resumed = Checkpoints(tmp_path, keep=2)
    resumed.save(7, {"w": jnp.full((2,), 7, jnp.float32)}, {"step": 7}, {"top1": 0.2})
    resumed.wait()
    assert resumed.all_steps() == [1, 6, 7] and resumed.best_step() == 1
    state, meta = resumed.restore(1, {"w": jnp.zeros((2,), jnp.float32)})
    assert meta["step"] == 1 and np.asarray(state["w"]).tolist() == [1.0, 1.0]
    resumed.close()


def test_the_best_eval_the_summary_names_is_the_checkpoint_kept_when_evaluations_tie(tmp_path):
    import jax.numpy as jnp

    from jaxconv.train.evaluate import best_eval

    checkpoints = Checkpoints(tmp_path, keep=1)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step, top1 in enumerate([0.25, 0.5, 0.5, 0.5, 0.25], start=1):
            checkpoints.save(step, {"w": jnp.full((2,), step, jnp.float32)}, {"step": step}, {"top1": top1})
            checkpoints.wait()
            f.write(json.dumps({"step": step, "split": "eval", "top1": top1}) + "\n")
    kept = checkpoints.all_steps()
    checkpoints.close()
    assert best_eval(tmp_path)["step"] in kept  # so that `jaxconv eval --step` finds it
    assert kept == [4, 5]  # of equal top-1s the latest is the best, as Orbax's best_step has it


# --- the loop ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def test_the_loop_runs_with_pmap_and_local_batchnorm_and_resumes(data_dir, tmp_path):
    config = validate(tiny_config(data_dir, parallel="pmap", bn_mode="local", num_train_steps=4, eval_every_steps=4,
                                  checkpoint_every_steps=2, ema_decay=0.5), device_count=jax.device_count())
    summary = train(config, tmp_path / "run", log=lambda _: None)
    assert summary["steps"] == 4 and summary["final_eval"]["examples"] == 40 and summary["devices"] == 8
    longer = validate(tiny_config(data_dir, parallel="shard_map", bn_mode="local", num_train_steps=6,
                                  eval_every_steps=6, checkpoint_every_steps=2, ema_decay=0.5),
                      device_count=jax.device_count())
    messages = []
    finished = train(longer, tmp_path / "run", log=messages.append)  # a pmap checkpoint, resumed by shard_map
    assert finished["steps"] == 6 and any("resuming from step 4" in m for m in messages)
    messages.clear()
    assert train(longer, tmp_path / "run", log=messages.append) == finished  # its summary.json, nothing trained
    assert any("already trained for 6 steps; nothing to do" in m for m in messages)


def test_a_resumed_run_reports_its_wall_time_over_every_session(data_dir, tmp_path):
    first = train(validate(tiny_config(data_dir, num_train_steps=4), device_count=jax.device_count()),
                  tmp_path / "run", log=lambda _: None)
    summary = train(validate(tiny_config(data_dir, num_train_steps=6), device_count=jax.device_count()),
                    tmp_path / "run", log=lambda _: None)
    earlier = summary["wall_time_s"] - summary["session_wall_time_s"]  # the first session's, to its last checkpoint
    assert 0.5 * first["wall_time_s"] <= earlier <= first["wall_time_s"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["wall_time_s"] == summary["wall_time_s"]
    from jaxconv.compare.runs import load_run
    assert load_run(tmp_path / "run").wall_time_s == summary["wall_time_s"]  # the report's wall-time column


def test_the_recipe_keys_reach_the_train_step(data_dir):
    """Mixup, CutMix, random erasing and gradient accumulation from the config (their effect: test_mixing,
    test_parallel)."""
    config = validate(tiny_config(data_dir, mixup_alpha=0.2, cutmix_alpha=1.0, random_erasing=0.25,
                                  grad_accumulation_steps=2), device_count=jax.device_count())
    exp = build(config, log=lambda _: None)
    assert (exp.options.mixup_alpha, exp.options.cutmix_alpha, exp.options.random_erasing,
            exp.options.accumulation_steps) == (0.2, 1.0, 0.25, 2)


def test_restoring_into_a_different_model_names_the_mismatched_entries(data_dir, tmp_path):
    narrow = build(validate(tiny_config(data_dir), device_count=jax.device_count()), log=lambda _: None)
    checkpoints = Checkpoints(tmp_path / "run")
    zeros = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract_state(narrow))
    checkpoints.save(2, zeros, checkpoint_meta(narrow, 2))
    checkpoints.close()
    wider = validate(tiny_config(data_dir), device_count=jax.device_count())
    wider.model_options = ml_collections.ConfigDict({"depths": (1, 1, 1), "widths": (8, 16, 32), "stem_width": 8})
    with pytest.raises(CheckpointMismatch, match=r"wrongly shaped: .*in the checkpoint vs"):
        train(wider, tmp_path / "run", log=lambda _: None)  # refused before anything is compiled or overwritten
    assert Checkpoints(tmp_path / "run", read_only=True).all_steps() == [2]
    exp = build(wider, log=lambda _: None)
    with pytest.raises(CheckpointMismatch, match=r"params/head/kernel \(64, 10\) in the checkpoint vs \(32, 10\)"):
        Checkpoints(tmp_path / "run", read_only=True).restore(2, abstract_state(exp))


def test_training_from_python_prints_only_its_own_lines(tmp_path):
    """The Python API, in a fresh process with a fresh data dir: no TFDS bars, no absl or TensorFlow noise."""
    script = (f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
              "import jax\nfrom tiny import tiny_config\nfrom jaxconv.train.config import validate\n"
              "from jaxconv.train.loop import train\n"
              f"config = validate(tiny_config({str(tmp_path / 'tfds')!r}, num_train_steps=2, eval_every_steps=2), "
              "device_count=jax.device_count())\n"
              f"train(config, {str(tmp_path / 'run')!r}, log=lambda message: None)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("generating shapes: ")]  # if >= 1 s
    expected = ("compiled the train step in ", "step 2/2 ", "eval @ step 2 ")
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected)), lines


def launch(experiment, workdir) -> subprocess.Popen:
    # The same eight devices as this process: the subprocesses reuse the steps compiled here (see tiny.py).
    env = {**os.environ, "XLA_FLAGS": xla_flags_for_tests(8), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxconv.cli", "train", "--config", str(experiment), "--workdir", str(workdir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_checkpoint(workdir: pathlib.Path, after: int, process: subprocess.Popen, timeout: float = 240) -> int:
    """Waits until a committed checkpoint newer than step ``after`` exists; returns its step."""
    deadline = time.time() + timeout
    directory = workdir / "checkpoints"
    while time.time() < deadline:
        steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
        if steps and max(steps) > after:
            return max(steps)
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint after step {after} within {timeout}s")


def final_eval(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())["final_eval"]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("uninterrupted")
    experiment = write_experiment(root / "exp.py", data_dir, augment="cifar", num_train_steps=24,
                                  checkpoint_every_steps=4, eval_every_steps=24)
    process = launch(experiment, root / "run")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return experiment, root / "run", out


def test_the_main_job_leaves_checkpoints_metrics_and_a_summary(uninterrupted):
    _, workdir, out = uninterrupted
    assert "final eval: top-1" in out
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "split", "loss", "top1", "top5"} <= set(records[0])
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(2, 25, 2))
    evals = [r for r in records if r["split"] == "eval"]
    assert len(evals) == 1 and evals[0]["examples"] == 40
    assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == 24
    # the parameters it trained, as the analyzer counts them from shapes (report checks a model's code against it)
    assert json.loads((workdir / "summary.json").read_text())["params"] == jaxconv.summary(
        "resnet20", image_size=16, depths=(1, 1, 1)).params
    # TensorBoard reads the scalars as scalars (the dashboard and EventAccumulator alike) and the hyper-parameters.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    logged = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    scalars = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in scalars] == [s for s, _ in logged]
    assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6)  # float32 in the events
    assert [e.value for e in events.Scalars("eval/top1")] == pytest.approx([evals[0]["top1"]])
    assert "_hparams_/session_start_info" in events.Tags()["tensors"]
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [16, 20, 24]


def test_preemption_and_kill_then_resume_reach_the_same_final_eval(uninterrupted, tmp_path):
    """SIGTERM saves a checkpoint and exits 0; SIGKILL loses only what came after the last checkpoint;
    either way the resumed run ends exactly where the uninterrupted one did."""
    experiment, reference, _ = uninterrupted
    workdir = tmp_path / "run"

    first = launch(experiment, workdir)
    wait_for_checkpoint(workdir, 0, first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "SIGTERM: stopped at step" in err
    stopped = max(Checkpoints(workdir, read_only=True).all_steps())
    assert stopped < 24

    second = launch(experiment, workdir)
    killed_after = wait_for_checkpoint(workdir, stopped, second)
    second.send_signal(signal.SIGKILL)
    second.communicate()
    assert stopped < killed_after

    third = launch(experiment, workdir)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    assert "resuming from step" in err
    assert final_eval(workdir) == final_eval(reference)
    logged = [(r["split"], r["step"]) for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
    assert len(logged) == len(set(logged))  # the steps redone after the SIGKILL are logged once


def test_eval_takes_any_device_count_whatever_the_training_batch(uninterrupted, tmp_path, capsys):
    """A run trained at batch 12 (on 1, 2, 3, 4, 6 or 12 devices) evaluated here on 8: refused, 'config.batch_size=12:
    must be divisible by the 8 devices', though an evaluation never reads the training batch."""
    import shutil

    _, workdir, _ = uninterrupted
    copy = pathlib.Path(shutil.copytree(workdir, tmp_path / "run"))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "batch_size": 12, "eval_batch_size": 12}))
    assert jax.device_count() == 8
    assert main(["eval", "--workdir", str(copy), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 40


def test_eval_evaluates_as_the_run_did_unless_told(uninterrupted, tmp_path, capsys):
    """A run with ten_crop=True (imagenet_alexnet.py's 10-crop evaluation) was evaluated by `jaxconv eval` on one crop
    unless --ten-crop was given; its eval_examples subset was not mentioned."""
    import shutil

    _, workdir, _ = uninterrupted
    copy = pathlib.Path(shutil.copytree(workdir, tmp_path / "run"))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "ten_crop": True, "eval_examples": 20}))
    assert main(["eval", "--workdir", str(copy), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ten_crop"] is True and json.loads(out)["examples"] == 40
    assert "the run's own evaluations read the first 20 examples (its eval_examples); this one reads all 40" in err
    assert main(["eval", "--workdir", str(copy), "--format", "json", "--no-ten-crop"]) == 0
    assert json.loads(capsys.readouterr().out)["ten_crop"] is False


def test_eval_command_reports_every_example(uninterrupted, capsys):
    _, workdir, _ = uninterrupted
    assert main(["eval", "--workdir", str(workdir), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "loss", "examples"} <= set(result)
    assert result["examples"] == 40 and result["step"] == 24
    assert result["top1"] == pytest.approx(final_eval(workdir)["top1"])
    assert main(["eval", "--workdir", str(workdir), "--step", "16", "--ten-crop", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 40
    assert main(["eval", "--workdir", str(workdir), "--step", "5"]) == 2
    assert "no checkpoint for step 5" in capsys.readouterr().err


def test_a_resumed_batch_stream_matches(data_dir):
    """The pipeline restarts exactly where it stopped (the loop relies on it for resume)."""
    from jaxconv.data import pipeline

    config = validate(tiny_config(data_dir), device_count=jax.device_count())
    exp = build(config, log=lambda _: None)
    stream = pipeline.train_dataset(exp.sources["train"], exp.preprocess, global_batch=32, seed=0)
    batches = [b for _, b in zip(range(12), stream.as_numpy_iterator())]
    resumed = pipeline.train_dataset(exp.sources["train"], exp.preprocess, global_batch=32, seed=0, start_step=9)
    np.testing.assert_array_equal(next(resumed.as_numpy_iterator())["image"], batches[9]["image"])


def test_a_resume_with_another_batch_size_goes_on_from_the_epoch_reached(data_dir, tmp_path):
    """README's `--allow-change batch_size`: a run stopped half way through its first epoch at batch 32 (4 of 8
    steps) and resumed at batch 64 went on from step 4 *of batch 64* — epoch 1.0: it skipped the unseen half of
    epoch 0, its cosine schedule jumped to the end, and its summary counted 1.5 epochs where 1.0 were seen."""
    from jaxconv.data import pipeline
    from jaxconv.train.experiment import rebase, train_batches

    workdir, lines = tmp_path / "run", []
    first = validate(tiny_config(data_dir, num_train_steps=4, schedule="cosine"), device_count=jax.device_count())
    train(first, workdir, log=lambda _: None)
    wider = validate(tiny_config(data_dir, num_train_steps=None, num_epochs=1, schedule="cosine", batch_size=64,
                                 eval_batch_size=64), device_count=jax.device_count())
    summary = train(wider, workdir, log=lines.append, allow_changes={"batch_size"})
    # 256 examples: 4 steps of 32 are half an epoch, which 2 steps of 64 finish
    assert any("batch_size 32 -> 64: the run goes on from epoch 0.50" in line and "(6 steps in all now)" in line
               for line in lines), lines
    assert (summary["steps"], summary["epochs"]) == (6, 1.0)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    (last,) = [r for r in records if r["split"] == "train" and r["step"] == 6]
    by_epochs = learning_rate_schedule(wider, 4, 4)  # a run of batch 64 from the start: 4 steps to epoch 1
    assert last["epoch"] == 1.0 and last["learning_rate"] == pytest.approx(float(by_epochs(3)))
    # its first new step reads what a batch-64 run reads at epoch 0.5: the half of epoch 0 not yet seen
    exp = rebase(build(wider, log=lambda _: None), -2)
    batches = train_batches(exp, 4)
    try:
        resumed = next(iter(batches))
    finally:
        batches.close()
    fresh = pipeline.train_dataset(exp.sources["train"], exp.preprocess, global_batch=64, seed=0, start_step=2)
    np.testing.assert_array_equal(np.asarray(resumed["image"]).reshape(64, *resumed["image"].shape[-3:]),
                                  next(fresh.as_numpy_iterator())["image"])
    longer = validate(tiny_config(data_dir, num_train_steps=None, num_epochs=2, schedule="cosine", batch_size=64,
                                  eval_batch_size=64), device_count=jax.device_count())
    assert train(longer, workdir, log=lambda _: None)["epochs"] == 2.0  # the checkpoints keep the offset


def test_a_checkpoint_that_averaged_only_the_weights_still_restores(data_dir, tmp_path):
    """Checkpoints written before the BatchNorm statistics were averaged too have no ema_batch_stats entry at all:
    Orbax refused them against the new state ('ema_batch_stats: Source: MISSING'), and a resume moved every one
    aside as broken and started over from step 0. They restore, with or without EMA, the statistics' average
    starting from the run's statistics."""
    import dataclasses

    from jaxconv.train.experiment import initial_state

    for ema in (0.5, None):
        exp = build(validate(tiny_config(data_dir, ema_decay=ema), device_count=jax.device_count()), log=lambda _: None)
        state = initial_state(exp)
        state = state.replace(batch_stats=jax.tree_util.tree_map(lambda s: s + 1, state.batch_stats))
        older = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)  # the older state's fields
                 if f.metadata.get("pytree_node", True) and f.name != "ema_batch_stats"}
        workdir = tmp_path / f"ema{ema}"
        checkpoints = Checkpoints(workdir)
        checkpoints.save(2, older, checkpoint_meta(exp, 2))
        checkpoints.close()
        metadata = Checkpoints(workdir, read_only=True).manager.item_metadata(2)["state"]
        assert "ema_batch_stats" not in (metadata.tree if hasattr(metadata, "tree") else metadata)
        restored, meta = Checkpoints(workdir, read_only=True).restore(2, abstract_state(exp))
        assert meta["step"] == 2
        jax.tree_util.tree_map(np.testing.assert_array_equal, restored.params, state.params)
        if ema is None:
            assert restored.ema_params is None and restored.ema_batch_stats is None
        else:
            jax.tree_util.tree_map(np.testing.assert_array_equal, restored.ema_batch_stats, state.batch_stats)


def test_a_stopped_and_resumed_run_logs_the_training_windows_of_one_that_never_stopped(data_dir, tmp_path,
                                                                                      monkeypatch):
    """Every checkpoint and stop cut a training record: a run saving every 4 steps logged at 4, 5, 8, 10, 12 instead
    of 5, 10, 12, and a resumed run's final window held only the steps after the stop, so two runs with the same
    weights reported different final training losses (and report grouped them as seeds of one setting)."""
    from jaxconv.train import loop

    def config():
        return validate(tiny_config(data_dir, num_train_steps=12, log_every_steps=5, checkpoint_every_steps=4,
                                    eval_every_steps=12), device_count=jax.device_count())

    def train_records(workdir):
        records = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
        return [{k: r[k] for k in ("step", "loss", "top1", "top5", "grad_norm", "learning_rate", "epoch")}
                for r in records if r["split"] == "train"]

    train(config(), tmp_path / "ref", log=lambda _: None)
    assert [r["step"] for r in train_records(tmp_path / "ref")] == [5, 10, 12]
    step, stopped = loop._step, []

    def step_then_preempt(run, p_train):
        step(run, p_train)
        if run.step == 7 and not stopped:  # a SIGTERM after step 7: a checkpoint there, mid-window
            stopped.append(run.step)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "_step", step_then_preempt)
    assert train(config(), tmp_path / "run", log=lambda _: None)["status"] == "preempted"
    assert stopped == [7] and [r["step"] for r in train_records(tmp_path / "run")] == [5]
    assert train(config(), tmp_path / "run", log=lambda _: None)["status"] == "completed"
    assert train_records(tmp_path / "run") == train_records(tmp_path / "ref")  # to the bit


def test_predict_classifies_files_with_a_runs_checkpoint_as_its_evaluation_does(uninterrupted, tmp_path, capsys):
    """A model fine-tuned on a folder dataset could not be run on a file: predict took ImageNet weights only."""
    from PIL import Image

    from jaxconv.data import pipeline
    from jaxconv.data.procedural import CLASS_NAMES
    from jaxconv.train.experiment import build
    from jaxconv.train.steps import model_inputs
    from jaxconv.train.transfer import checkpoint_variables

    _, workdir, _ = uninterrupted
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    exp = build(config, log=lambda _: None)
    ds, _ = pipeline.eval_dataset(exp.sources["eval"], exp.preprocess, global_batch=8)
    batch = next(ds.as_numpy_iterator())
    for i in range(3):
        Image.fromarray(batch["image"][i]).save(tmp_path / f"{i}.png")
    variables, _ = checkpoint_variables(workdir)
    logits = exp.model.apply(variables, model_inputs(batch, exp.options), train=False)
    expected = np.asarray(jax.nn.softmax(logits))[:3]
    assert main(["predict", str(tmp_path), "--workdir", str(workdir), "--top", "3", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preprocessing"]["dataset"] == "shapes" and report["preprocessing"]["image_size"] == 16
    for i, result in enumerate(report["results"]):
        top = result["top"][0]
        assert top["class"] == int(np.argmax(expected[i])) and top["label"] == CLASS_NAMES[top["class"]]
        assert top["probability"] == pytest.approx(float(expected[i].max()), rel=1e-5)
    assert main(["predict", str(tmp_path), "--workdir", str(workdir), "--top", "11"]) == 2
    assert "--top 11: the run's model has 10 classes; give at most 10" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--workdir", str(workdir), "--model", "resnet18"]) == 2
    assert "--model: for --weights; a run brings its own model and preprocessing (drop it)" in capsys.readouterr().err
