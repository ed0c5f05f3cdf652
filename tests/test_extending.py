"""Users' own models in every command (issue 18): docs/extending.md executed, --import, the registry's
rules for user code, normalisation as a model option, sync BatchNorm through the model's axis_name."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import registry
from jaxconv.cli import main
from jaxconv.layers.conv import reference_convolutions

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"
# The guide's training runs, shrunk: 16 px images, 256 training examples, N steps -> N // 200.
TINY_TRAINING = ("--config.image_size=16", "--config.shapes_train_examples=256", "--config.shapes_test_examples=40",
                 "--config.log_every_steps=2", "--config.checkpoint_every_steps=2", "--config.eval_every_steps=1000")


_BEFORE: dict = {}  # the registry and sys.path before the user's code, for forget_user_code


@pytest.fixture
def user_space(tmp_path, monkeypatch):
    """A user's folder as the working directory; the registry, sys.modules and sys.path as they were after."""
    import jaxconv.models  # noqa: F401 -- the built-ins registered first
    saved_registry = dict(registry._REGISTRY)
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    _BEFORE.update(registry=saved_registry, path=saved_path, modules=saved_modules)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXCONV_IMPORT", raising=False)
    yield tmp_path
    forget_user_code(tmp_path)


def forget_user_code(space: pathlib.Path) -> None:
    """Back to a process that never saw the user's code: no models of theirs, their modules unloaded and
    their folders off sys.path, as a new `jaxconv` process would be."""
    registry._REGISTRY.clear()
    registry._REGISTRY.update(_BEFORE["registry"])
    sys.path[:] = _BEFORE["path"]
    for name in set(sys.modules) - _BEFORE["modules"]:  # the user's modules (not the libraries they imported)
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(space)):
            del sys.modules[name]


def run_in_fresh_process(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("JAXCONV_IMPORT", None)
    return subprocess.run([sys.executable, "-m", "jaxconv.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def guide_sections() -> list[str]:
    return re.findall(r"^## (.+)$", DOC.read_text(encoding="utf-8"), re.M)


def guide_steps(section: str) -> list[tuple[str, str, str]]:
    """('file', name, text) and ('run', command, '') in the order a section of docs/extending.md gives them."""
    text = DOC.read_text(encoding="utf-8").split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    steps = []
    for match in re.finditer(r"<!-- (file: (\S+)|excerpt: (\S+)|run) -->\n```\w+\n(.*?)```", text, re.S):
        if match.group(2):
            steps.append(("file", match.group(2), match.group(4)))
        elif match.group(3):
            steps.append(("excerpt", match.group(3), match.group(4)))
        else:
            steps += [("run", line.strip(), "") for line in match.group(4).splitlines() if line.strip()]
    return steps


def shrunk(args: list[str], data_dir: pathlib.Path) -> list[str]:
    if args[0] == "bench":  # the user's model reaches bench all the same; a forward step compiles in half the time
        return [*args, "--mode", "eval"]
    if args[0] != "train":
        return args
    out = []
    for arg in args:
        if arg.startswith("--config.num_train_steps="):
            arg = f"--config.num_train_steps={max(2, int(arg.split('=')[1]) // 200)}"
        out.append(arg)
    if not any(a.startswith("--config.num_train_steps=") for a in out):  # the experiment's 1000 steps
        out.append("--config.num_train_steps=5")
    return [*out, *TINY_TRAINING, f"--config.data_dir={data_dir}"]


@pytest.mark.parametrize("section", guide_sections())
def test_every_example_of_the_extending_guide_runs(section, user_space, tmp_path_factory, capsys):
    """Files written as shown, commands run as shown (training shrunk). A run's evaluation, resume, report
    and export run from another folder after the user's code is forgotten: the workdir alone brings it."""
    data_dir = tmp_path_factory.mktemp("extending_data")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    steps = guide_steps(section)
    for kind, what, text in steps:
        if kind == "file":
            (user_space / what).write_text(text, encoding="utf-8")
            continue
        if kind == "excerpt":  # quoted from the repository: it must be there as shown
            assert text in (DOC.parents[1] / what).read_text(encoding="utf-8"), f"{what} no longer reads as quoted"
            continue
        args = shrunk(shlex.split(what)[1:], data_dir)
        workdir_only = args[0] == "eval" or (args[0] == "train" and not any(
            a.startswith(("--config=", "--import", "--config.model=")) or a == "--config" for a in args))
        if workdir_only or args[0] in ("report", "export"):  # the workdir alone must bring the user's model
            forget_user_code(user_space)
            args = [str(user_space / a) if (user_space / a).exists() or previous in ("--out", "--workdir") else a
                    for previous, a in zip(["", *args], args)]
            os.chdir(elsewhere)
        code = main(args)
        os.chdir(user_space)
        captured = capsys.readouterr()
        assert code == 0, f"{what}\n{captured.err[-3000:]}"
        output = captured.out
        if args[0] == "summary" and args[1] == "resnext_cifar":
            assert "parameters                           137,898" in output
        if args[0] == "list":
            assert output.splitlines()[1].startswith(args[1].rstrip("*"))
        if args[0] == "compare" and "resnext_cifar" in args:
            assert "| resnext_cifar | 32 | 0.14 | 0.026" in output  # 0.026x: three significant digits below 0.1
        if args[0] == "compare" and "squeezenet1_1" in args:
            assert "| squeezenet1_1 | 224 | 1.24 | 0.349 |" in output and "| 58.178 |" in output
            assert "| squeezenet1_0 | 224 | 1.25 | 0.819 |" in output

    if section.startswith("1."):
        resnext = json.loads((user_space / "runs/resnext/config.json").read_text())
        assert resnext["imports"] == [str(user_space / "my_blocks.py")]  # recorded by the experiment's own import
        assert json.loads((user_space / "runs/resnext/summary.json").read_text())["steps"] == 6  # resumed, extended
        report = (user_space / "report/report.md").read_text()
        assert "| resnext | resnext_cifar | shapes | 16 | 137,898 |" in report  # its parameters, not "—"
        assert (user_space / "exported/model.jax_export").is_file()
    elif section.startswith("2."):
        small = json.loads((user_space / "runs/small_cnn/config.json").read_text())
        assert small["imports"] == [str(user_space / "flax_cnn.py")]
        assert (user_space / "exported_cnn/model.jax_export").is_file()
    elif section.startswith("3."):
        group_norm = json.loads((user_space / "runs/resnet20_gn/config.json").read_text())
        assert group_norm["model_options"] == {"norm": "group"} and group_norm["imports"] == []
    elif section.startswith("4."):
        check_the_squeezenet_declaration()


def check_the_squeezenet_declaration():
    """The guide's new family against what torchvision publishes for squeezenet1_0 and squeezenet1_1."""
    from jaxconv.pretrained.convert import SUPPORTED, torch_layout

    for name, params, gmacs in (("squeezenet1_0", 1_248_424, 0.819), ("squeezenet1_1", 1_235_496, 0.349)):
        info = jaxconv.model_info(name)
        counted = jaxconv.summary(name)
        assert counted.params == info.published.params == params and name in SUPPORTED
        assert counted.macs / 1e9 == pytest.approx(gmacs, rel=0.01)
        assert info.weights[0].num_params == params
    # torchvision's state-dict layout (torchvision/models/squeezenet.py): Fire modules after the pools.
    layout = torch_layout("squeezenet1_1")
    assert len(layout) == 2 + 8 * 6 + 2 and layout["features.6.expand3x3.weight"] == (128, 32, 3, 3)
    assert sorted(int(k.split(".")[1]) for k in torch_layout("squeezenet1_0") if k.endswith("squeeze.weight")) == [
        3, 4, 5, 7, 8, 9, 10, 12]


def test_the_guide_runs_a_dozen_commands_in_four_sections():
    assert [s.split(".")[0] for s in guide_sections()] == ["1", "2", "3", "4"]
    assert sum(kind == "run" for section in guide_sections() for kind, _, _ in guide_steps(section)) >= 14


BAD_MODULES = {
    "syntax.py": ("def broken(:\n", "--import syntax.py: importing it failed: SyntaxError: invalid syntax (syntax.py, line 1)"),
    "raises.py": ("import flax\n\nraise RuntimeError('no GPU here')\n",
                  "--import raises.py: importing it failed: RuntimeError: no GPU here (raises.py, line 3)"),
    "needs.py": ("import not_a_module_anywhere\n",
                 "--import needs.py: importing it failed: ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    # a script's habit: it made every command exit 0 with no output
    "exits.py": ("import sys\n\nsys.exit(0)\n", "--import exits.py: importing it failed: SystemExit: 0 (exits.py, line 3)"),
    # a factory that is not a Flax module class: `list` crashed on it with a TypeError
    "lambda.py": ("import jaxconv\n\njaxconv.register('x', lambda **k: None, image_size=32, num_classes=10)\n",
                  "--import lambda.py: importing it failed: ValueError: register('x', ...): the factory must be a Flax "
                  "module class or a functools.partial of one, got function <lambda> (lambda.py, line 3)"),
}


@pytest.mark.parametrize("args,needle", [
    (["summary", "resnet20", "--import", "missing.py"], "--import missing.py: no such file"),
    (["summary", "resnet20", "--import", "no_such_module"], "--import no_such_module: no module named 'no_such_module'"),
    (["summary", "resnet20", "--import", "bad name"], "--import bad name: not a module name or a .py file"),
    *[(["list", "--import", name], needle) for name, (_, needle) in BAD_MODULES.items()],
    (["summary", "qqqq"], "unknown model 'qqqq'; `jaxconv list` shows them all (a model of your own: --import"),
    (["train", "--config.model=resnet20", "--config.model_options.norm=grop"],
     "config.model_options={'norm': 'grop'}: resnet20: norm='grop': expected one of batch, group, layer or None"),
    (["train", "--config.model=resnet20", "--config.model_options.shortcut=Z"],
     "resnet20: shortcut must be one of 'A', 'B', 'C' or None, got 'Z'"),
    (["train", "--config.imports=missing.py"], "config.imports=('missing.py',): no such file"),
    (["train", "--config.model_options.axis_name=data"], "axis_name is set by the training system from config.bn_mode"),
])
def test_a_module_that_cannot_be_imported_is_one_line_with_status_2(user_space, capsys, args, needle):
    for name, (text, _) in BAD_MODULES.items():
        (user_space / name).write_text(text)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxconv: error: ") and needle in lines[0], captured.err


def test_jaxconv_import_variable_in_a_real_process(tmp_path):
    (tmp_path / "net_a.py").write_text(
        "from functools import partial\nimport jaxconv\nfrom jaxconv.models import ResNet, CifarStem\n"
        "from jaxconv.blocks import BasicBlock\n"
        "jaxconv.register('net_a', partial(ResNet, block=BasicBlock, depths=(1,), widths=(8,), stem=CifarStem, "
        "stem_width=8), image_size=32, num_classes=10)\n")
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAXCONV_IMPORT": f"{tmp_path / 'net_a.py'}"}
    ok = subprocess.run([sys.executable, "-m", "jaxconv.cli", "list", "net_*"], capture_output=True, text=True,
                        env=env, timeout=300)
    assert ok.returncode == 0 and ok.stdout.splitlines()[1].split()[:2] == ["net_a", "1,506"], ok.stderr
    env["JAXCONV_IMPORT"] += f"{os.pathsep}{tmp_path / 'broken.py'}"
    bad = subprocess.run([sys.executable, "-m", "jaxconv.cli", "list"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == (f"jaxconv: error: $JAXCONV_IMPORT entry {tmp_path / 'broken.py'}: importing it "
                                  f"failed: "
                                  "ZeroDivisionError: division by zero (broken.py, line 1)")


def test_an_experiment_file_with_a_syntax_error_is_one_line(user_space, capsys):
    (user_space / "exp.py").write_text("def get_config(:\n    pass\n")
    assert main(["train", "--config", "exp.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jaxconv: error: experiment file exp.py: importing it failed: SyntaxError: invalid syntax (exp.py, line 1)"
    assert not (user_space / "runs").exists()


def _tiny_net(**fields):
    from jaxconv.blocks import BasicBlock
    from jaxconv.models import CifarStem, ResNet

    return partial(ResNet, block=BasicBlock, depths=(1,), widths=(8,), stem=CifarStem, stem_width=8, **fields)


def test_a_name_is_refused_to_other_code_and_replaced_by_the_code_that_registered_it(user_space):
    source = "import jaxconv\nfrom tests_helper_net import NET\njaxconv.register('mine', NET, image_size=32)\n"
    (user_space / "tests_helper_net.py").write_text(
        "from functools import partial\nfrom jaxconv.models import ResNet, CifarStem\n"
        "from jaxconv.blocks import BasicBlock\n"
        "NET = partial(ResNet, block=BasicBlock, depths=(1,), widths=(8,), stem=CifarStem, stem_width=8)\n")
    (user_space / "mine.py").write_text(source)
    from jaxconv.user_modules import import_file

    module = import_file(user_space / "mine.py")
    exec(compile(source, str(user_space / "mine.py"), "exec"), module.__dict__)  # the same file run again
    assert jaxconv.model_info("mine").source_file == str(user_space / "mine.py")
    with pytest.raises(ValueError, match=r"a model named 'mine' is already registered \(ResNet, by .*mine.py\)"):
        jaxconv.register("mine", _tiny_net(), image_size=32)  # from this test: other code
    with pytest.raises(ValueError, match="already registered.*by jaxconv"):
        exec(compile("import jaxconv\njaxconv.register('resnet20', NET, image_size=32)", str(
            user_space / "mine.py"), "exec"), module.__dict__)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        jaxconv.register("other", _tiny_net(), image_size="32")
    with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
        jaxconv.register("other", _tiny_net(), image_size=32, in_channels=0)


def test_training_options_reach_the_model_through_its_fields(user_space):
    """dtype and the sync-BatchNorm axis go to fields of those names; a model without them is told apart."""

    class Plain(nn.Module):  # the Flax examples' convention, without dtype or axis_name
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train=False):
            x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x))
            return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

    jaxconv.register("plain_flax", Plain, image_size=8, num_classes=10)
    assert registry.runtime_options("resnet20", dtype=jnp.bfloat16, axis_name="data") == {
        "dtype": jnp.bfloat16, "axis_name": "data"}
    assert registry.runtime_options("plain_flax", dtype=jnp.float32, axis_name="data") == {}
    with pytest.raises(ValueError, match="plain_flax has no dtype field, so it cannot compute in bfloat16"):
        registry.runtime_options("plain_flax", dtype=jnp.bfloat16)
    model = jaxconv.get_model("resnet20", **registry.runtime_options("resnet20", axis_name="data"))
    assert model.axis_name == "data"


FAMILIES = ["resnet20", "resnet50", "plain20", "vgg11_bn", "googlenet_tv", "efficientnet_b0", "inception_small",
            "allcnn_c", "alexnet", "alexnet_tv", "zfnet", "lenet5", "squeezenet1_1", "mobilenet_v2",
            "mobilenet_v3_large", "densenet121", "efficientnet_v2_s", "shufflenet_v2_x1_0", "regnet_y_400mf", "mnasnet0_5", "inception_v3"]


def _abstract_variables(name, **options):
    model = jaxconv.get_model(name, **options)
    info = jaxconv.model_info(name)
    x = jax.ShapeDtypeStruct((1, info.image_size, info.image_size, info.in_channels), jnp.float32)
    with reference_convolutions():  # one convolution primitive per layer: the same shapes, traced faster
        return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_takes_group_and_layer_norm_or_none(name):
    """A GroupNorm or LayerNorm has BatchNorm's learned parameters (a scale and a bias per channel) and no
    running statistics, so the parameter count stays the published one; without a norm, biases come back."""
    batch = _abstract_variables(name, norm="batch")
    expected = _count(batch["params"])
    assert "batch_stats" in batch
    for norm in ("group", "layer"):
        variables = _abstract_variables(name, norm=norm)
        assert "batch_stats" not in variables and _count(variables["params"]) == expected
    bare = _abstract_variables(name, norm=None)
    assert "batch_stats" not in bare
    conv_biases = [path for path, _ in jax.tree_util.tree_flatten_with_path(bare["params"])[0]
                   if path[-1].key == "bias" and re.search(r"conv|^c\d", path[-2].key)]
    assert conv_biases, "without a norm, the convolutions carry biases"
    info = jaxconv.model_info(name)
    factory_options = dict(getattr(info.factory, "keywords", {}))
    default_norm = factory_options.get("norm", info.module_class.__dataclass_fields__["norm"].default)
    if default_norm is None and info.published is not None and info.published.params:
        assert _count(bare["params"]) == info.published.params  # the published network has no norm
    if name == "resnet50":
        assert expected == 25_557_032  # torchvision's count, with any of the three


@pytest.mark.parametrize("name", ["alexnet", "zfnet"])
def test_classifier_norm_normalises_fc6_and_fc7_in_place_of_their_biases(name):
    """Study (d)'s BatchNorm AlexNet normalises every layer but the last, as BN-Inception does."""
    convs_only = _abstract_variables(name, norm="batch")
    everywhere = _abstract_variables(name, norm="batch", classifier_norm=True)
    assert set(everywhere["batch_stats"]) - set(convs_only["batch_stats"]) == {"fc6_norm", "fc7_norm"}
    assert "bias" not in everywhere["params"]["fc6"] and "bias" in convs_only["params"]["fc6"]
    # a scale and a shift for each of FC6's and FC7's 4,096 units, in place of their biases
    assert _count(everywhere["params"]) - _count(convs_only["params"]) == 2 * 4096
    with pytest.raises(ValueError, match="classifier_norm=True .* but norm is None"):
        _abstract_variables(name, classifier_norm=True)


def test_group_norm_matches_flax_and_fits_any_width(rng):
    from jaxconv.layers import GroupNorm

    x = jnp.asarray(rng.standard_normal((2, 5, 5, 64)) * 3 + 1, jnp.float32)
    ours = GroupNorm()
    reference = nn.GroupNorm(num_groups=32, epsilon=1e-5)
    variables = ours.init(jax.random.key(0), x)
    np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), rtol=1e-5, atol=1e-5)
    narrow = jnp.asarray(rng.standard_normal((2, 4, 4, 24)), jnp.float32)  # 24 channels: 24 groups of one
    y = GroupNorm().apply(GroupNorm().init(jax.random.key(0), narrow), narrow)
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1, atol=1e-3)


def test_a_group_norm_resnet_trains_the_same_at_any_batch_split(rng):
    """No batch statistics: the loss of a batch is the mean of its examples' losses."""
    model = jaxconv.get_model("resnet20", norm="group", depths=(1, 1, 1))
    x = jnp.asarray(rng.standard_normal((4, 16, 16, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=True)
    assert set(variables) == {"params"}
    whole = model.apply(variables, x, train=True)
    halves = jnp.concatenate([model.apply(variables, x[:2], train=True), model.apply(variables, x[2:], train=True)])
    np.testing.assert_allclose(whole, halves, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(whole, model.apply(variables, x, train=False), rtol=1e-6)


def test_a_package_module_is_recorded_so_that_it_imports_from_anywhere(user_space, tmp_path_factory):
    """`--import lab.nets` from the folder holding `lab/`: recorded as lab.nets@FOLDER, its relative imports intact."""
    from jaxconv.user_modules import import_modules

    (user_space / "lab").mkdir()
    (user_space / "lab" / "__init__.py").write_text("")
    (user_space / "lab" / "blocks.py").write_text(
        "from functools import partial\nfrom jaxconv.models import ResNet, CifarStem\n"
        "from jaxconv.blocks import BasicBlock\n"
        "NET = partial(ResNet, block=BasicBlock, depths=(1,), widths=(8,), stem=CifarStem, stem_width=8)\n")
    (user_space / "lab" / "nets.py").write_text(
        "import jaxconv\nfrom .blocks import NET\njaxconv.register('lab_net', NET, image_size=32, num_classes=10)\n")
    (user_space / "top_level.py").write_text("X = 1\n")
    assert import_modules(["lab.nets", "top_level"]) == [f"lab.nets@{user_space}", str(user_space / "top_level.py")]
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = run_in_fresh_process(["list", "lab_*", "--import", f"lab.nets@{user_space}"], elsewhere)
    assert result.returncode == 0 and result.stdout.splitlines()[1].split()[:2] == ["lab_net", "1,506"], result.stderr


def test_a_resumed_run_takes_overrides_of_keys_its_config_json_left_unset():
    """config.json stores unset keys (grad_clip_norm, data_dir, ...) as plain None; overriding them on resume works."""
    import ml_collections

    from jaxconv.train.config import apply_overrides, base_config

    stored = ml_collections.ConfigDict(json.loads(json.dumps(base_config().to_dict())))
    config = apply_overrides(stored, {"optimizer.grad_clip_norm": "1", "data_dir": "/data", "num_train_steps": "300"})
    assert (config.optimizer.grad_clip_norm, config.data_dir, config.num_train_steps) == (1.0, "/data", 300)


# A user's file whose modules each break the contract of docs/extending.md one way (the last three keep it).
ODD_MODULES = """'''Modules that break jaxconv's model contract, one way each.'''

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

import jaxconv


def features(x):
    return jnp.mean(nn.relu(nn.Conv(4, (3, 3))(x)), axis=(1, 2))


class NoTrain(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes)(features(x))


class TrainNoDefault(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train):
        return nn.Dense(self.num_classes)(features(x))


class ExtraArg(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, mask, train=False):
        return nn.Dense(self.num_classes)(features(x))


class Pair(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        logits = nn.Dense(self.num_classes)(features(x))
        return logits, logits


class Named(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return {"logits": nn.Dense(self.num_classes)(features(x))}


class Seven(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(7)(features(x))


class ArgMax(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return jnp.argmax(nn.Dense(self.num_classes)(features(x)), axis=-1)


class NoParams(nn.Module):
    num_classes: int = 10

    def __call__(self, x, train=False):
        return jnp.mean(x, axis=(1, 2, 3))[:, None] * jnp.ones((1, self.num_classes))


class Counter(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        count = self.variable("counters", "n", lambda: jnp.zeros((), jnp.int32))
        if train:
            count.value += 1
        return nn.Dense(self.num_classes)(features(x))


class AlwaysDropout(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(nn.Dropout(0.5, deterministic=False)(features(x)))


class AlwaysBatchStats(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(nn.BatchNorm(use_running_average=False)(features(x)))


class NoNumClasses(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(10)(features(x))


class Fixed28(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], 28 * 28 * 4)))


class Mlp(nn.Module):  # keeps the contract; no convolutions to time
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


class Drop(nn.Module):  # keeps the contract; computes in float32 alone (no dtype field)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(nn.Dropout(0.5, deterministic=not train)(features(x)))


MODELS = {"notrain": NoTrain, "trainnodefault": TrainNoDefault, "extraarg": ExtraArg, "pair": Pair, "named": Named,
          "seven": Seven, "argmax": ArgMax, "noparams": NoParams, "counter": Counter, "alwaysdropout": AlwaysDropout,
          "alwaysbatchstats": AlwaysBatchStats, "nonumclasses": NoNumClasses, "mlp": Mlp, "drop": Drop}
for name, module in MODELS.items():
    jaxconv.register(name, module, image_size=32, num_classes=10)
jaxconv.register("fixed28", Fixed28, image_size=28, num_classes=10)
"""
# (command, what its one line must say); every model is registered with image_size=32, num_classes=10.
NEEDS = "jaxconv calls model.apply(variables, images, train=...) and needs logits, an (N, 10) floating array"
CONTRACT_CASES = {
    "notrain": "NoTrain.__call__(x) takes no train argument; jaxconv calls model.apply(variables, images, "
               "train=...) with train=True while training",
    "extraarg": "ExtraArg.__call__(x, mask, train=False) needs mask, which jaxconv does not give",
    "pair": f"pair returns a tuple (train=True); {NEEDS}",
    "named": f"named returns a dict (train=True); {NEEDS}",
    "seven": f"seven returns an array of shape (2, 7) for 2 images (train=True); {NEEDS}",
    "argmax": f"argmax returns int32 values (train=True); {NEEDS}",
    "noparams": "noparams has no parameters (its init makes no 'params')",
    "counter": "counter keeps variables in 'counters' (ScopeCollectionNotFound",
    "alwaysdropout": "alwaysdropout draws random numbers with train=False (InvalidRngError",
    "alwaysbatchstats": "alwaysbatchstats updates its batch_stats with train=False (ModifyScopeVariableError",
    "nonumclasses": "NoNumClasses has no num_classes field; jaxconv builds every model as NoNumClasses(num_classes=...)",
}
SMALL = ("--image-size", "16")
BENCH = ("--batch-size", "8", "--steps", "1", "--warmup", "1", *SMALL)
TRAIN = ("--config.image_size=16", "--config.num_train_steps=1", "--workdir=runs/odd")


@pytest.fixture
def odd_file(user_space):
    (user_space / "odd.py").write_text(ODD_MODULES, encoding="utf-8")
    return user_space


def _one_line(capsys) -> str:
    """The error line, the last on stderr (bench says what it compiles first)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("jaxconv: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("model", sorted(CONTRACT_CASES))
@pytest.mark.parametrize("command", [
    ("summary", "{model}", *SMALL),
    ("train", "--config.model={model}", *TRAIN),
    ("bench", "{model}", *BENCH),
    ("compare", "{model}", "--no-speed", *SMALL),
])
def test_a_model_that_breaks_the_contract_is_one_line_in_every_command(odd_file, capsys, command, model):
    """Each was a traceback (exit 1) in some command; train's came after writing the workdir."""
    args = [part.format(model=model) for part in command]
    assert main([*args, "--import", "odd.py"]) == 2
    assert CONTRACT_CASES[model] in _one_line(capsys)
    assert not (odd_file / "runs").exists()


def test_list_shows_a_model_that_breaks_the_contract_with_why_and_lists_the_rest(odd_file, capsys):
    """`list --import odd.py` died on the first such model (and with $JAXCONV_IMPORT, every `jaxconv list`)."""
    assert main(["list", "--import", "odd.py"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "resnet20" in rows and rows["mlp"].split()[1] == "30,730"
    for model, needle in CONTRACT_CASES.items():
        assert "cannot be used: " in rows[model] and needle in rows[model], rows[model]


@pytest.mark.parametrize("args,needle", [
    # a net that takes 28 px alone: the size's one line, as train gave it
    (["summary", "fixed28", *SMALL], "fixed28 cannot take 16 px inputs: tracing it failed: TypeError: cannot reshape"),
    (["bench", "fixed28", *BENCH], "fixed28 cannot take 16 px inputs: tracing it failed: TypeError: cannot reshape"),
    (["compare", "fixed28", "--no-speed", *SMALL], "--image-size 16: fixed28: tracing it failed: TypeError: cannot reshape"),
    (["train", "--config.model=fixed28", *TRAIN], "config.image_size=16: fixed28 cannot take it: tracing it failed"),
    (["bench", "mlp", "--mode", "layers", *BENCH], "mlp has no convolutions to time"),  # was a ZeroDivisionError
    # bfloat16 for a model without a dtype field: train's was a traceback, summary's an answer
    (["train", "--config.model=drop", "--config.dtype=bfloat16", *TRAIN],
     "config.dtype='bfloat16': drop has no dtype field, so it cannot compute in bfloat16"),
    (["summary", "drop", "--dtype", "bfloat16"], "drop has no dtype field, so it cannot compute in bfloat16"),
])
def test_sizes_dtypes_and_convolutions_a_user_model_lacks_are_one_line(odd_file, capsys, args, needle):
    assert main([*args, "--import", "odd.py"]) == 2
    assert needle in _one_line(capsys)
    assert not (odd_file / "runs").exists()


def test_what_keeps_the_contract_is_taken(odd_file, capsys):
    """A __call__(x, train) without a default was refused by train's validation alone; GoogLeNet's auxiliary
    logits (sown while training) registered by a user are what the step expects."""
    from jaxconv.train.config import apply_overrides, base_config, validate

    for model in ("trainnodefault", "mlp", "drop"):
        config = apply_overrides(base_config(), {"model": model, "imports": "odd.py", "image_size": "16"})
        assert validate(config, device_count=1).model == model
        assert main(["summary", model, "--import", "odd.py", *SMALL]) == 0
    jaxconv.register("googlenet_aux", partial(jaxconv.models.GoogLeNet, aux_logits=True), image_size=224,
                     num_classes=10)
    jaxconv.models.check_contract("googlenet_aux", jaxconv.get_model("googlenet_aux"), (1, 224, 224, 3))
