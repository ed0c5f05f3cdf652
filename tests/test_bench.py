"""`jaxconv bench`: the JSON a user scripts against, XLA's FLOP counts against the analyzer, errors.

No timing is asserted: the machines that run this suite are shared and noisy.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from functools import partial

import jax
import pytest

import jaxconv
from jaxconv import bench
from jaxconv.cli import EXIT_USAGE, main
from reference import TORCHVISION

# One worker computes the module's ResNet-20 measurements once (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("bench")

KEYS = {"images_per_sec", "step_time_s", "compile_s", "lower_s", "flops_per_step", "flops_per_image", "model_flops_per_step",
        "achieved_flops_per_sec", "mfu", "peak_memory_bytes", "xla_memory_bytes", "devices", "device_kind"}


@pytest.fixture(scope="module")
def resnet20_steps():
    """Train and eval measurements of ResNet-20 at batch 8 (one image per test device), one step each."""
    train = bench.measure_train("resnet20", batch_size=8, steps=1, warmup=0, num_classes=10)
    forward = bench.measure_eval("resnet20", batch_size=8, steps=1, warmup=0, num_classes=10)
    return train, forward


def run_cli(capsys, *argv):
    code = main(["bench", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_what_scripts_read(capsys):
    code, out, _ = run_cli(capsys, "lenet5", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert KEYS <= set(result)
    assert result["mode"] == "train" and result["model"] == "lenet5"
    assert result["batch_size"] == 8 and result["image_size"] == 32 and result["steps"] == 2
    assert result["images_per_sec"] == pytest.approx(8 / result["step_time_s"])
    assert result["step_time_min_s"] <= result["step_time_s"] <= result["step_time_max_s"]
    assert result["compile_s"] > 0 and result["flops_per_step"] > 0 and result["xla_memory_bytes"] > 0
    # A CPU has no entry in the peak table and reports no memory statistics: null, and a note says so.
    assert result["backend"] == "cpu"
    assert result["mfu"] is None and result["peak_memory_bytes"] is None
    assert any("memory" in note for note in result["notes"])


def test_text_report(capsys):
    code, out, _ = run_cli(capsys, "lenet5", "--mode", "eval", "--batch-size", "8", "--steps", "1", "--warmup", "0")
    assert code == 0
    assert out.startswith("lenet5 eval step, batch 8 at 32 px, float32")
    assert "images/s" in out and "compile" in out and "MFU n/a" in out
    if jax.device_count() > 1:  # the memory figures are one device's, the images/s all devices'
        assert "XLA estimate" in out and "(per device)" in out


def test_eval_flops_are_two_per_mac_less_padding(resnet20_steps):
    """XLA counts 2 FLOPs per multiply-accumulate, skipping the taps on zero padding
    (tests/test_analysis.py), so the forward pass is a little under 2 x the analyzer's MACs."""
    _, forward = resnet20_steps
    macs = jaxconv.summary("resnet20", num_classes=10).macs
    ratio = forward["flops_per_image"] / (2 * macs)
    assert 0.85 < ratio <= 1.02, ratio


def test_training_step_is_about_three_forward_passes(resnet20_steps):
    """Forward + input gradients + weight gradients: about 3 x the forward FLOPs (the first
    layer needs no input gradient; BatchNorm and the optimizer add a little)."""
    train, forward = resnet20_steps
    ratio = train["flops_per_step"] / forward["flops_per_step"]
    assert 2.7 < ratio < 3.3, ratio
    assert train["devices"] == forward["devices"]


def test_mfu_is_quoted_in_model_flops(resnet20_steps):
    """Achieved FLOP/s (and MFU on a known accelerator) count the model's FLOPs, 2 per MAC and
    3 passes per training step, not XLA's count, which on GPUs leaves out cuDNN and cuBLAS."""
    train, forward = resnet20_steps
    macs = jaxconv.summary("resnet20", num_classes=10).macs
    assert train["model_flops_per_step"] == 3 * 2 * macs * 8
    assert forward["model_flops_per_step"] == 2 * macs * 8
    assert train["achieved_flops_per_sec"] == pytest.approx(train["model_flops_per_step"] / train["step_time_s"])
    # On the CPU XLA counts what the convolutions do, so the two agree (within the padding XLA skips).
    assert 0.85 < train["flops_per_step"] / train["model_flops_per_step"] <= 1.02


@pytest.mark.parametrize("recipe,size", [("cifar", 32), ("imagenet", 64)])
def test_input_pipeline_mode(recipe, size):
    result = bench.measure_data(recipe, batch_size=4, image_size=size, steps=2, warmup=0)
    assert result["mode"] == "data" and result["recipe"] == recipe
    assert result["augment"] == ("inception" if recipe == "imagenet" else "cifar")
    assert result["images_per_sec"] > 0 and result["step_time_s"] > 0
    assert result["source"] == ("synthetic_jpeg" if recipe == "imagenet" else "synthetic_png")


def test_synthetic_jpeg_records_decode_to_imagenet_sized_images():
    tf = pytest.importorskip("tensorflow")
    source = bench.EncodedImageSource(8, image_format="jpeg", size=None, num_classes=1000, distinct=4)
    assert len(source) == 8
    records = source.fetch([0, 5])
    assert records[1] == source.fetch([1])[0]  # 4 distinct images, repeated
    image, label = source.decode(tf.constant(records[1]))
    height, width, channels = image.shape
    assert channels == 3 and 300 <= min(height, width) <= 500 and max(height, width) <= 667
    assert int(label) == 1
    assert 10_000 < source.mean_record_bytes < 200_000  # photograph-like JPEGs, not noise nor flat colour


def test_resnet50_convolutions_one_by_one_add_up_to_its_published_macs():
    """torchvision's ResNet-50: 53 convolutions (the stem, 3 per bottleneck block, 4 projection
    shortcuts) whose MACs and the classifier's 2,048 x 1,000 make its published 4.089 GMACs."""
    layers = bench.conv_layers("resnet50", batch_size=2)
    assert sum(layer.count for layer in layers) == 53
    assert len(layers) == len({(layer.input_shape, layer.kernel, layer.stride, layer.features) for layer in layers})
    stem = layers[0]
    assert (stem.input_shape, stem.kernel, stem.stride, stem.padding) == ((2, 224, 224, 3), (7, 7), (2, 2),
                                                                           ((3, 3), (3, 3)))
    assert not stem.input_grad and all(layer.input_grad for layer in layers[1:])
    macs_per_image = sum(layer.macs * layer.count for layer in layers) / 2 + 2048 * 1000
    assert round(macs_per_image / 1e9, 3) == TORCHVISION["resnet50"][1]
    assert stem.describe() == "7x7/2 p3 224x224x3->64"


def test_layers_mode(capsys):
    code, out, _ = run_cli(capsys, "lenet5", "--mode", "layers", "--batch-size", "2", "--steps", "2", "--warmup", "0",
                           "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert result["mode"] == "layers" and result["conv_layers"] == len(result["layers"]) == 3  # C1, C3, C5
    assert {"images_per_sec", "step_time_s", "compile_s"} <= set(result)
    first, *others = result["layers"]
    assert first["input_grad_s"] is None and first["input_grad_flops_per_sec"] is None  # the images' layer
    assert all(row[f"{name}_s"] > 0 for row in others for name in bench.PASSES)
    assert result["step_time_s"] == pytest.approx(sum(result["totals"].values()))
    assert result["images_per_sec"] == pytest.approx(2 / result["step_time_s"])
    # The layers' MACs are the analyzer's, which reads them off the jaxpr's convolutions.
    analyzed = [row.macs for row in jaxconv.summary("lenet5").layers if row.kind == "Conv"]
    assert [row["macs"] // 2 for row in result["layers"]] == analyzed

    code, out, _ = run_cli(capsys, "lenet5", "--mode", "layers", "--batch-size", "2", "--steps", "1", "--warmup", "0")
    assert code == 0 and out.startswith("lenet5: its 3 convolutions (3 distinct), batch 2 at 32 px")
    assert "all layers (x count)" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["resnet5O"], "unknown model 'resnet5O'"),
        (["vgg16", "--image-size", "16"], "vgg16 cannot take 16 px inputs"),
        (["vgg16", "--mode", "layers", "--image-size", "16"], "vgg16 cannot take 16 px inputs"),
        (["lenet5", "--batch-size", "12"], "batch size 12 does not divide over the 8 devices"),
        (["lenet5", "--warmup", "-1"], "warmup -1"),
        (["lenet5", "--dtype", "float16"], "invalid choice"),
        (["lenet5", "--mode", "data", "--recipe", "svhn"], "invalid choice"),
        (["resnet50", "--mode", "data", "--dtype", "bfloat16"], "--dtype bfloat16: --mode data times the input "
                                                                 "pipeline alone, whose batches are uint8"),
        (["resnet50", "--recipe", "cifar"], "--recipe cifar: only --mode data reads a recipe"),
    ],
)
def test_bad_requests_are_usage_errors(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == EXIT_USAGE
    assert message in err and "Traceback" not in err and out == ""


def test_a_missing_sample_photograph_is_one_line(capsys, monkeypatch, tmp_path):
    import matplotlib

    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path))  # sample data stripped
    code, out, err = run_cli(capsys, "resnet50", "--mode", "data", "--recipe", "imagenet-photo")
    assert code == EXIT_USAGE and "Traceback" not in err and out == ""
    assert "grace_hopper.jpg" in err and "use --recipe imagenet" in err


def test_peak_table():
    # NVIDIA's data sheets: 1,979 (SXM) and 1,513 (PCIe) bf16 TFLOP/s with sparsity, half of it dense.
    assert bench.peak_flops_per_sec("NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(989.4e12)
    assert bench.peak_flops_per_sec("NVIDIA H100 PCIe", "bfloat16") == pytest.approx(756.5e12)
    assert bench.peak_flops_per_sec("NVIDIA H200", "bfloat16") == pytest.approx(989.4e12)
    assert bench.peak_flops_per_sec("NVIDIA H100 NVL", "bfloat16") == pytest.approx(835.5e12)  # 1,671 sparse
    assert bench.peak_flops_per_sec("NVIDIA H200 NVL", "float32") == pytest.approx(417.5e12)
    assert bench.peak_flops_per_sec("NVIDIA A100-SXM4-80GB", "float32") == pytest.approx(156e12)
    assert bench.peak_flops_per_sec("TPU v4", "bfloat16") == pytest.approx(275e12)
    assert bench.peak_flops_per_sec("Tesla V100-SXM2-16GB", "bfloat16") is None  # no bf16 tensor cores
    assert bench.peak_flops_per_sec("cpu", "float32") is None


GPU_BENCH = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "gpu_bench.sh"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="on a GPU host the stages would run for minutes")
def test_gpu_bench_script_records_the_machine_and_reports_failed_stages(tmp_path):
    """scripts/gpu_bench.sh on a machine without a GPU: the environment stage still records what
    is installed, a stage that needs the GPU fails with its reason and leaves no empty result
    files, and a stage name it does not know stops it before anything is written."""
    env = {**os.environ, "PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = partial(subprocess.run, capture_output=True, text=True, env=env, cwd=GPU_BENCH.parents[1], timeout=300)
    out = tmp_path / "gpu"
    bad = run(["bash", str(GPU_BENCH), str(out), "env", "tagret"])
    assert bad.returncode == 2 and "unknown stage 'tagret'" in bad.stderr and not out.exists()
    result = run(["bash", str(GPU_BENCH), str(out), "env", "vs-resnet50"])
    assert result.returncode == 1
    assert "failed: vs-resnet50" in result.stderr and "not one GPU" in result.stderr
    assert f"jax {jax.__version__}" in (out / "environment.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["env.log", "environment.txt", "vs-resnet50.log"]


def test_xla_options_reports_an_option_this_jaxlib_refuses_and_times_the_rest(monkeypatch):
    """scripts/bench_xla_options.py (gpu_bench.sh's xla-options stage): an option the installed
    jaxlib does not know is reported beside the others' timings instead of ending the run."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts"))
    import bench_xla_options

    spec = ("resnet20", 8, 8)  # a batch that divides over the suite's 8 CPU devices
    result = bench_xla_options.measure(spec, {"base": {}, "gone": {"xla_no_such_option": True}}, rounds=1, steps=1)
    assert result["base"]["speedup"] == 1.0 and result["base"]["median_images_per_s"] > 0
    assert result["gone"] == {"options": {"xla_no_such_option": True},
                              "error": "INVALID_ARGUMENT: No such compile option: 'xla_no_such_option'"}


def test_profile_step_fits_the_fixed_cost_and_refuses_batch_lists_it_cannot_fit(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts"))
    import profile_step

    assert profile_step.fit_line([8.0, 32.0, 128.0], [14.0, 38.0, 134.0]) == pytest.approx((6.0, 1.0))
    for given in ("32", "8,x"):
        with pytest.raises(SystemExit) as exit_info:
            profile_step.main(["resnet20", "--batch-sizes", given])
        assert exit_info.value.code == 2 and f"--batch-sizes {given!r}" in capsys.readouterr().err


def test_end_to_end_medians_count_a_run_that_missed_the_target_and_seeds_are_checked(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "scripts"))
    import end_to_end_vs_torch as e2e

    def run(side, seed, seconds, rate):
        return {"side": side, "round": 1, "seed": seed, "time_to_target_s": seconds, "wall_s": 100.0,
                "images_per_s": rate, "evals": [{"top1": 0.85}]}

    results = [run("jaxconv", 0, 90.0, 270), run("pytorch", 0, 60.0, 500), run("jaxconv", 1, None, 280),
               run("pytorch", 1, 80.0, 480), run("jaxconv", 2, 100.0, 260), run("pytorch", 2, 100.0, 490)]
    table = e2e.format_table({"target": 0.8, "results": results})
    # jaxconv's median is 100 s (90, 100 and a miss), PyTorch's 80 s: the miss counts, not just the two that reached
    assert "at 0.80x PyTorch's speed (medians over runs, 100.0 against 80.0 s" in table
    assert "| 1 | 1 | jaxconv | not reached |" in table and "training images/s: jaxconv at 0.55x" in table
    results[4]["time_to_target_s"] = None
    assert "no ratio: at least half of one side's runs did not reach 80%" in e2e.format_table(
        {"target": 0.8, "results": results})
    for given in ("0,x", "1,1", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            e2e.main(["--seeds", given])
        assert exit_info.value.code == 2 and f"{given!r}: expected" in capsys.readouterr().err


def test_layers_mode_finds_plain_flax_convolutions(monkeypatch):
    """docs/extending.md's small_cnn is plain Flax: both nn.Conv layers are timed, with the analyzer's MACs."""
    import flax.linen as nn
    import jax.numpy as jnp

    from jaxconv import registry

    class SmallCNN(nn.Module):
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train: bool = False):
            for width in (32, 64):
                x = nn.max_pool(nn.relu(nn.Conv(width, (3, 3), use_bias=False)(x)), (2, 2), (2, 2))
            return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    jaxconv.register("plain_flax_cnn", SmallCNN, image_size=32, num_classes=10)
    layers = bench.conv_layers("plain_flax_cnn")
    assert [layer.names for layer in layers] == [("Conv_0",), ("Conv_1",)]
    # 32*32 positions x 32 filters x 3*3*3 taps; 16*16 x 64 x 3*3*32 (SAME padding: 1 each side)
    assert [layer.macs for layer in layers] == [884_736, 4_718_592]
    assert layers[1].padding == ((1, 1), (1, 1))


def test_layers_mode_names_transposed_and_unshared_convolutions(monkeypatch):
    """A decoder's ConvTranspose or an nn.ConvLocal is not timed by --mode layers: it says so, naming them."""
    import flax.linen as nn
    import jax.numpy as jnp

    from jaxconv import registry

    class Decoder(nn.Module):
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
            x = nn.relu(nn.ConvTranspose(8, (2, 2), strides=(2, 2), name="up")(x))
            x = nn.ConvLocal(4, (3, 3), name="local")(x)
            return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    jaxconv.register("decoder_cnn", Decoder, image_size=16, num_classes=10)
    with pytest.raises(bench.BenchError, match=r"these are not: up \(ConvTranspose\), local \(ConvLocal\) "
                                               r"\(--mode train times the whole model\)"):
        bench.conv_layers("decoder_cnn")
