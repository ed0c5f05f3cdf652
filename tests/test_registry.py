"""The registry: names, patterns, duplicates, unknown names and options."""

from __future__ import annotations

from functools import partial

import pytest

import jaxconv
from jaxconv.models import ResNet, UnknownModelError, get_model, list_models, register


def test_every_model_the_issue_names_is_registered():
    expected = (
        ["lenet5", "alexnet", "alexnet_tv", "zfnet", "googlenet", "googlenet_tv", "allcnn_c", "plain18", "plain34"]
        + [f"vgg{d}{s}" for d in (11, 13, 16, 19) for s in ("", "_bn")]
        + [f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)]
        + [f"plain{d}" for d in (20, 32, 44, 56, 110)]
        + [f"efficientnet_b{i}" for i in range(8)]
        + ["inception_small", "inception_small_naive"]  # the Inception study's network (issue 6)
    )
    assert set(expected) <= set(list_models())  # a new family adds names without touching this test


def test_list_models_filters_with_a_pattern_and_sorts_naturally():
    assert list_models("resnet1*") == ["resnet18", "resnet101", "resnet110", "resnet152"]
    assert list_models("vgg*_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert list_models("nothing*") == []


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register("resnet50", partial(ResNet, block=None, depths=(1,)), image_size=224)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownModelError, match="resnet50"):
        get_model("resnet05")
    with pytest.raises(UnknownModelError, match="efficientnet_b0"):
        get_model("efficientnet-b0")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"no option 'widht'.*width"):
        get_model("efficientnet_b0", widht=2.0)


def test_num_classes_and_overrides_reach_the_model():
    model = get_model("resnet18", num_classes=10, drop_path_rate=0.1)
    assert model.num_classes == 10 and model.drop_path_rate == 0.1
    assert get_model("lenet5").num_classes == 10  # its own default
    with pytest.raises(ValueError, match="num_classes"):
        get_model("resnet18", num_classes=0)


def test_model_info_defaults():
    assert jaxconv.model_info("alexnet").image_size == 227
    assert jaxconv.model_info("lenet5").in_channels == 1
    assert jaxconv.model_info("resnet56").image_size == 32
    assert [jaxconv.model_info(f"efficientnet_b{i}").image_size for i in range(8)] == [
        224, 240, 260, 300, 380, 456, 528, 600
    ]


def _package_imports() -> dict[str, set[str]]:
    """jaxconv module -> the jaxconv modules it imports, at the top or inside functions (AST, no import)."""
    import ast
    import pathlib

    root = pathlib.Path(jaxconv.__file__).parent
    modules = {".".join(f.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): f
               for f in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {t for t in map(resolve, (t for t in targets if t.startswith("jaxconv"))) if t and t != name}
    return graph


def test_the_registry_is_a_leaf_and_no_import_cycle_remains():
    """Issue 18: registry -> archs -> registry and registry -> pretrained -> registry were a 12-module cycle."""
    graph = _package_imports()
    assert graph["jaxconv.registry"] == {"jaxconv.declarations", "jaxconv.errors"}
    assert graph["jaxconv.declarations"] == graph["jaxconv.errors"] == set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: tuple[str, ...]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join((*path, module, target))
            if target not in state:
                visit(target, (*path, module))
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, ())


def test_a_family_is_its_file():
    """Every module of jaxconv.archs registers on import; each registered model's figures come from its family's file."""
    import pkgutil

    import jaxconv.archs

    families = {m.name for m in pkgutil.iter_modules(jaxconv.archs.__path__)} - {"common"}
    sources = {jaxconv.model_info(name).source_module.rpartition(".")[2] for name in list_models()}
    assert sources == families


def test_every_error_jaxconv_raises_is_a_user_error_or_a_run_failure():
    """The command line answers each kind in one place (one line, exit 2 or 1): a new error class
    outside both would reach the user as a traceback."""
    import importlib
    import inspect
    import pkgutil

    import jaxconv
    from jaxconv.errors import RunFailure, UserError

    loose = []
    for module_info in pkgutil.walk_packages(jaxconv.__path__, "jaxconv."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module.__name__
                    and not issubclass(value, (UserError, RunFailure))):
                loose.append(f"{module.__name__}.{name}")
    assert loose == []
