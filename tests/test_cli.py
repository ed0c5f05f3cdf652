"""The `jaxconv` command as a user runs it: output formats, and bad input -> one line, exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from jaxconv.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs the installed entry point's code in a fresh interpreter, as a user would."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "jaxconv.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_summary_json(capsys):
    assert main(["summary", "resnet50", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 25_557_032
    assert round(data["macs"] / 1e9, 3) == 4.089
    assert {"params", "macs", "activations", "layers"} <= set(data)
    layer = data["layers"][1]
    assert {"name", "output_shape", "params", "macs", "receptive_field"} <= set(layer)


def test_summary_table_options(capsys):
    assert main(["summary", "resnet20", "--image-size", "64", "--batch-size", "8", "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "8x64x64x3" in out and "training memory estimate (batch 8)" in out
    assert main(["summary", "vgg11", "--image-size", "32x64", "--format", "csv"]) == 0
    assert "1x32x64x3" in capsys.readouterr().out
    # Model options, as config.model_options takes them: ResNet-8 is ResNet-20 with one block per stage.
    assert main(["summary", "resnet20", "--option", "depths=(1, 1, 1)", "--format", "json"]) == 0
    from jaxconv.analysis import summary

    assert json.loads(capsys.readouterr().out)["params"] == summary("resnet20", depths=(1, 1, 1)).params < 272_474


@pytest.mark.parametrize(
    "args,needle",
    [
        (["summary", "resnet5"], "unknown model 'resnet5'; did you mean"),
        (["summary", "alexnet", "--image-size", "224"], "alexnet cannot take 224 px inputs: conv1"),
        (["summary", "vgg16", "--format", "xml"], "invalid choice: 'xml'"),
        (["summary", "vgg16", "--image-size", "0"], "expected a positive integer"),
        (["summary", "vgg16", "--image-size", "16"], "pool5"),
        (["list", "nothing*"], "no model matches"),
        (["bench", "resnt50"], "unknown model 'resnt50'; did you mean resnet50"),  # no "compiling ..." line first
        (["bench", "alexnet", "--image-size", "32"], "alexnet cannot take 32 px inputs: conv1"),  # nor here
        (["bench", "alexnet", "--mode", "layers", "--image-size", "32"], "alexnet cannot take 32 px inputs: conv1"),
        (["train", "--config.model=zzzqqq"], "config.model='zzzqqq': no such model; `jaxconv list` shows them all"),
        (["list", "RESNET5*"], "patterns match whole names, in lower case: '*resnet5*' matches resnet50, resnet56"),
        (["summary", "vgg16", "--image-size", "32x"], "expected N or HxW (e.g. 224 or 224x192), got '32x'"),
        (["compare", "--no-speed", "--image-size", "224"], "--image-size 224: alexnet: conv1: output size"),
        (["summary", "resnet20", "--option", "widht=2"], "--option widht=2: resnet20 refuses it"),
        (["summary", "resnet20", "--option", "groups"], "expected NAME=VALUE"),
        (["summary", "alexnet", "--option", "classifier_norm=True"], "but norm is None; give norm='batch'"),
        # widths and groups of 0 reached a division: a ZeroDivisionError traceback
        (["summary", "resnet20", "--option", "widths=(0, 0, 0)"], "stage1/block0/conv1: features=0 must be a positive"),
        (["summary", "resnet20", "--option", "stem_width=-16"], "stem/conv: features=-16 must be a positive integer"),
        (["summary", "alexnet", "--option", "groups=0"], "conv2: groups=0 must be a positive integer"),
        (["summary", "resnet20", "--option", "num_classes=0"], "give it as --num-classes, not as a model option"),
        (["eval", "--workdir", "/nonexistent/run"], "--workdir /nonexistent/run: no such directory"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_with_exit_status_2(args, needle, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert lines[0].startswith("jaxconv: error:")


def test_ctrl_c_says_interrupted(monkeypatch, capsys):
    from jaxconv.cli import listing

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(listing, "run", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err == "jaxconv: interrupted\n"  # it printed "jaxconv: " and nothing more


def test_bad_input_in_a_real_process_has_no_traceback():
    result = run_cli("summary", "alexnet", "--image-size", "224")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("jaxconv: error: alexnet cannot take 224")


def test_list_json(capsys):
    assert main(["list", "vgg16*", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["vgg16", "vgg16_bn"]
    assert rows[0]["params"] == 138_357_544 and rows[0]["gmacs"] == 15.47 and rows[0]["image_size"] == 224


def test_list_of_the_built_in_models_reads_its_rows_without_jax_and_they_are_the_registrys():
    from jaxconv.cli.listing import builtin_rows, registry_rows

    assert builtin_rows("*") == registry_rows("*")  # every field, in the registry's order
    probe = "import sys; from jaxconv.cli import main; main(['list', 'vgg16*']); print('jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "False" and "vgg16_bn" in result.stdout


_MALLOC_PROBE = """
import ctypes, resource
from jaxconv.cli.startup import apply_malloc_tuning
applied = apply_malloc_tuning()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(6):  # a 64 MiB buffer allocated, written and freed, as XLA:CPU does with a step's temporaries
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(64 << 20)
    ctypes.memset(buffer, 1, 64 << 20)
    libc.free(buffer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, max(faults[1:]))
"""


def _malloc_probe(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "JAXCONV_MALLOC"))}
    result = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], env={**clean, **env}, capture_output=True,
                            text=True, check=True)
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_malloc_tuning_keeps_large_buffers_mapped():
    """JAXCONV_MALLOC_TUNING=1 sets glibc's malloc so that a large buffer freed and allocated
    again is reused, not unmapped and faulted in page by page (docs/benchmarks.md)."""
    applied, faults = _malloc_probe(JAXCONV_MALLOC_TUNING="1")
    assert applied and faults < 100  # reused: no fresh pages
    applied, faults = _malloc_probe()  # the default: glibc as it comes
    assert not applied and faults > 10_000  # 16,384 pages of 4 KiB faulted in again each time
    assert _malloc_probe(JAXCONV_MALLOC_TUNING="1", MALLOC_ARENA_MAX="4")[0] is False  # the user's settings win


_WITHOUT_TENSORFLOW = """
import json, sys
for name in ("tensorflow", "tensorflow_datasets", "tensorboard"):
    sys.modules[name] = None  # `import name` now fails as if it were not installed
from jaxconv.cli import main
code = main(["bench", "lenet5", "--batch-size", "8", "--steps", "1", "--warmup", "0", "--format", "json"])
print(json.dumps({"code": code}))
sys.exit(main(["bench", "resnet50", "--mode", "data", "--batch-size", "8", "--steps", "1"]))
"""


def test_bench_runs_without_tensorflow_and_says_what_is_missing():
    """GPU images often come with JAX and PyTorch but no TensorFlow: a training-step benchmark
    needs none, and a command that does need it names the package instead of a traceback."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW], capture_output=True, text=True, env=env,
                            timeout=300)
    lines = result.stdout.splitlines()
    assert json.loads(lines[-1]) == {"code": 0}, result.stderr
    assert json.loads("\n".join(lines[:-1]))["images_per_sec"] > 0
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert ("jaxconv bench resnet50 --mode data --batch-size 8 --steps 1: needs the Python package "
            "'tensorflow_datasets'") in result.stderr
    assert "pip install tensorflow-datasets" in result.stderr


def test_out_of_memory_ends_the_program_even_if_its_teardown_would_hang(tmp_path):
    """After its out-of-memory line, `jaxconv train` often never exited: tearing down the tf.data iterator whose
    workers had run out of memory hung, deaf to SIGTERM. The program now leaves at once after the line (a thread
    that never ends stands in for the hanging teardown)."""
    script = tmp_path / "oom.py"
    script.write_text(
        "import sys, threading, time\n"
        "from jaxconv import cli\n"
        "from jaxconv.cli import listing\n"
        "def run(args):\n"
        "    threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: exit would wait for it\n"
        "    raise MemoryError('a strip of 256 x 15,360,000 px')\n"
        "listing.run = run\n"
        "sys.argv = ['jaxconv', 'list']\n"
        "sys.exit(cli.main())\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("jaxconv: error: jaxconv list ran out of memory (a strip")


def test_the_input_pipeline_out_of_memory_line_points_at_the_images_too():
    import tensorflow as tf

    from jaxconv.cli.common import out_of_memory

    error = tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__IteratorGetNext_output_types_3}} "
                                                         "OOM when allocating tensor with shape[1,256,15360000,3]")
    line = out_of_memory(error, ["train"])
    assert "shape[1,256,15360000,3]" in line and "or look for an image of extreme size in the dataset" in line


def test_a_full_disk_reported_as_resource_exhausted_is_not_called_out_of_memory(tmp_path):
    """TensorFlow's writers (SaveV2, seen on a real full disk) raise ENOSPC as ResourceExhaustedError: the line
    says which file could not be written and that the disk is full, not 'lower --batch-size'."""
    import tensorflow as tf

    from jaxconv.cli.common import out_of_memory

    file = tmp_path / "variables_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate89152"
    error = tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__SaveV2_dtypes_17_device_/job:"
                                                         f"localhost/replica:0/task:0/device:CPU:0}} {file}; No space "
                                                         "left on device [Op:SaveV2]")
    line = out_of_memory(error, ["train"])
    assert re.fullmatch(rf"jaxconv train: a file could not be written \({re.escape(str(file))}\): no space left on "
                        r"the device \([\d.]+ MiB free\)", line), line


def test_an_option_given_twice_uses_the_last_and_says_so(capsys, tmp_path):
    """argparse kept the last of two values without a word (two --config files, two --workdirs); scripts that
    append overrides rely on the last one winning, so it still does, with a note."""
    assert main(["summary", "resnet20", "--image-size", "16", "--image-size", "32", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["input_shape"] == [1, 32, 32, 3]
    assert captured.err.strip() == "jaxconv: note: --image-size is given twice (16, then 32); using the last"
    from jaxconv.cli.train import config_overrides

    assert config_overrides(["--config.seed=1", "--config.seed", "2", "--config.seed=2"]) == {"seed": "2"}
    assert capsys.readouterr().err.strip() == "jaxconv: note: --config.seed is given twice ('1', then '2'); using the last"
