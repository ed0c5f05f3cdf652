"""Data parallelism on 8 virtual CPU devices: BatchNorm modes, device counts, pmap vs shard_map."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from jaxconv.blocks import BasicBlock
from jaxconv.models import CifarStem, ResNet
from jaxconv.parallel import AXIS, DataParallel
from jaxconv.train.state import create_state
from jaxconv.train.steps import StepOptions, train_step

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (XLA_FLAGS in conftest)")


def batches(count, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"image": rng.standard_normal((size, 8, 8, 3)).astype(np.float32),
         "label": rng.integers(0, 4, size).astype(np.int32)}
        for _ in range(count)
    ]


def run(kind, devices, bn_mode, data, learning_rate=0.1, dtype=jnp.float32, ema_decay=None, full_state=False,
        norm="batch", **step_options):
    """Trains a tiny ResNet on ``data`` over the first ``devices`` devices; returns host state and metrics."""
    parallel = DataParallel(kind, mesh=Mesh(np.asarray(jax.devices()[:devices]), (AXIS,)))
    model = ResNet(block=BasicBlock, depths=(1,), widths=(8,), stem=CifarStem, stem_width=8, num_classes=4, dtype=dtype,
                   axis_name=AXIS if bn_mode == "sync" else None, norm=norm)
    state = create_state(model, optax.sgd(learning_rate), jax.random.PRNGKey(0), (1, 8, 8, 3), ema=ema_decay is not None)
    state = parallel.replicate(jax.device_put(state, parallel.replicated))
    options = StepOptions(num_classes=4, bn_mode=bn_mode, ema_decay=ema_decay, **step_options)
    step = parallel.compile(partial(train_step, options=options), donate_state=False, returns_state=True)
    metrics = []
    for batch in data:
        state, m = step(state, parallel.shard_batch(batch))
        metrics.append(parallel.first(m))
    if kind == "pmap":  # every device holds the same parameters
        for leaf in jax.tree_util.tree_leaves(state.params):
            shards = [np.asarray(s.data) for s in leaf.addressable_shards]
            assert all(np.array_equal(shards[0], s) for s in shards[1:])
    host = jax.device_get(parallel.canonical(state))
    if full_state:
        return host, metrics
    return {"params": host.params, "batch_stats": host.batch_stats}, metrics


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def test_sync_batchnorm_on_8_devices_equals_one_device_on_the_whole_batch():
    data = batches(1)
    eight, m8 = run("shard_map", 8, "sync", data)
    one, m1 = run("shard_map", 1, "sync", data)
    assert_trees_close(eight, one)
    assert m8[0]["loss"] == pytest.approx(m1[0]["loss"], rel=1e-5)


def test_local_batchnorm_equals_one_device_on_each_sub_batch():
    """Each device normalises with its own 4 examples; one SGD step then averages the 8 updates."""
    data = batches(1)
    local, metrics = run("shard_map", 8, "local", data)
    singles = [run("shard_map", 1, "local", [{k: v[4 * i: 4 * (i + 1)] for k, v in data[0].items()}])
               for i in range(8)]
    average = jax.tree_util.tree_map(lambda *xs: np.mean(xs, axis=0), *[s[0] for s in singles])
    assert_trees_close(local, average)
    assert metrics[0]["loss"] == pytest.approx(sum(s[1][0]["loss"] for s in singles), rel=1e-5)
    # ...and differs from normalising with the statistics of the whole batch.
    synced, _ = run("shard_map", 8, "sync", data)
    assert not np.allclose(synced["batch_stats"]["stem"]["norm"]["var"], local["batch_stats"]["stem"]["norm"]["var"])


def test_8_devices_and_1_device_train_alike_over_several_steps():
    data = batches(4, seed=1)
    eight, _ = run("shard_map", 8, "sync", data)
    one, _ = run("shard_map", 1, "sync", data)
    assert_trees_close(eight, one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bn_mode", ["sync", "local"])
def test_pmap_and_shard_map_give_the_same_result(bn_mode):
    data = batches(2, seed=2)
    mapped, m_pmap = run("pmap", 8, bn_mode, data)
    sharded, m_shard = run("shard_map", 8, bn_mode, data)
    assert_trees_close(mapped, sharded)
    assert m_pmap[-1]["loss"] == pytest.approx(m_shard[-1]["loss"], rel=1e-5)


def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
    state, metrics = run("shard_map", 8, "sync", batches(2, seed=3), dtype=jnp.bfloat16, full_state=True)
    leaves = jax.tree_util.tree_leaves((state.params, state.batch_stats, state.opt_state))
    assert {leaf.dtype for leaf in leaves} == {np.dtype(np.float32)}
    assert np.isfinite(metrics[-1]["loss"])
    reference, _ = run("shard_map", 8, "sync", batches(2, seed=3))
    np.testing.assert_allclose(state.params["head"]["bias"], reference["params"]["head"]["bias"], rtol=0.1, atol=0.01)


def test_exponential_moving_average_of_the_weights():
    data = batches(1, seed=4)
    start, _ = run("shard_map", 1, "sync", [], ema_decay=0.9, full_state=True)
    state, _ = run("shard_map", 1, "sync", data, ema_decay=0.9, full_state=True)
    expected = jax.tree_util.tree_map(lambda p0, p1: 0.9 * p0 + 0.1 * p1, start.params, state.params)
    assert_trees_close(state.ema_params, expected)
    # the BatchNorm statistics are averaged too (torchvision's EMA with use_buffers=True, timm's ModelEmaV2)
    expected = jax.tree_util.tree_map(lambda s0, s1: 0.9 * s0 + 0.1 * s1, start.batch_stats, state.batch_stats)
    assert_trees_close(state.ema_batch_stats, expected)
    assert state.eval_variables() == {"params": state.ema_params, "batch_stats": state.ema_batch_stats}


def test_the_moving_average_copies_the_weights_through_the_warm_up():
    """It started at the random initialisation: with the ImageNet tv recipe's decay (0.999966) 81% of the averaged
    weights were still the initial ones at the end of its 5-epoch warm-up, where torchvision's reference resets
    its average to the weights."""
    data = batches(3, seed=4)
    two, _ = run("shard_map", 1, "sync", data[:2], ema_decay=0.9, full_state=True, ema_warmup_steps=2)
    assert_trees_close(two.ema_params, two.params, rtol=0, atol=0)
    assert_trees_close(two.ema_batch_stats, two.batch_stats, rtol=0, atol=0)
    three, _ = run("shard_map", 1, "sync", data, ema_decay=0.9, full_state=True, ema_warmup_steps=2)
    expected = jax.tree_util.tree_map(lambda p0, p1: 0.9 * p0 + 0.1 * p1, two.params, three.params)
    assert_trees_close(three.ema_params, expected)


def test_gradient_accumulation_equals_the_whole_batch_for_a_network_without_batchnorm():
    """Each device's 16 examples as 4 micro-batches of 4: the same update (to float rounding) and loss."""
    data = batches(2)
    whole, whole_metrics = run("shard_map", 2, "sync", data, norm=None)
    accumulated, metrics = run("shard_map", 2, "sync", data, norm=None, accumulation_steps=4)
    assert_trees_close(whole, accumulated)
    assert [float(m["loss"]) for m in metrics] == pytest.approx([float(m["loss"]) for m in whole_metrics], rel=1e-5)
    assert [float(m["top1"]) for m in metrics] == [float(m["top1"]) for m in whole_metrics]
    # With BatchNorm each micro-batch is normalised on its own, so the update differs, as it would in PyTorch.
    batchnorm, _ = run("shard_map", 2, "sync", data[:1])
    micro, _ = run("shard_map", 2, "sync", data[:1], accumulation_steps=4)
    assert not np.allclose(batchnorm["batch_stats"]["stem"]["norm"]["var"], micro["batch_stats"]["stem"]["norm"]["var"])


@pytest.mark.parametrize("kind", ["shard_map", "pmap"])
def test_accumulated_micro_batches_are_the_same_on_any_device_count(kind):
    """Each device cut its own share into micro-batches, so with sync BatchNorm micro-batch 0 held examples 0-15 on
    one device and 0-7 and 16-23 on two: another run (step-1 loss 3.012 against 2.983 in a probe)."""
    data = batches(1)
    one, m1 = run("shard_map", 1, "sync", data, accumulation_steps=2)
    for devices in (2, 8):
        many, m = run(kind, devices, "sync", data, accumulation_steps=2)
        assert_trees_close(many, one)
        assert m[0]["loss"] == pytest.approx(m1[0]["loss"], rel=1e-5)


@pytest.mark.parametrize("kind", ["shard_map", "pmap"])
def test_mixup_cutmix_and_erasing_are_the_same_on_any_device_count(kind):
    """They paired each image with the next of its device's share, drew λ per device and erased by place in the
    share: 1 and 2 devices made different runs, and at one image per device nothing was mixed."""
    data = batches(1)
    recipe = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "random_erasing": 0.5}
    one, m1 = run("shard_map", 1, "sync", data, **recipe)
    for devices in (2, 8):
        many, m = run(kind, devices, "sync", data, **recipe)
        assert_trees_close(many, one)
        assert m[0]["loss"] == pytest.approx(m1[0]["loss"], rel=1e-5)
    small = [{key: value[:8] for key, value in data[0].items()}]  # one image per device
    plain, _ = run(kind, 8, "sync", small)
    for alphas in ({"mixup_alpha": 0.2}, {"cutmix_alpha": 1.0}):
        mixed, _ = run(kind, 8, "sync", small, **alphas)
        assert not np.allclose(mixed["params"]["head"]["kernel"], plain["params"]["head"]["kernel"])
