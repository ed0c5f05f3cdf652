"""Makes the PyTorch checkpoint fixtures in tests/fixtures/torchfile/ (run once, with torch).

tests/test_torchfile.py reads them with jaxconv.pretrained.torchfile, without torch, and compares
with what torch.load(weights_only=True) read here (expected.json). Needs torch (the CPU build is
enough) and, for the ResNet-18 layout, JAX and Flax -- the environment of make_parity_fixtures.py:

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    /work/torchenv/bin/pip install jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 safetensors pillow

Run from the repository root:

    /work/torchenv/bin/python scripts/make_torchfile_fixtures.py [--families]

It writes (about 42 KB, and 1.1 MB in families/):
- tensors.pth (zip format) and tensors_legacy.pth (torch < 1.6's format): float32, float16, bfloat16,
  float64, int64/32/16/8, uint8 and bool tensors, a transposed (non-contiguous) view, two slices of one
  storage, a 0-d num_batches_tracked, an empty tensor and an nn.Parameter; tensors_bigendian.pth, the
  same zip with byteorder 'big' and its storages byte-swapped; nested.pth, {'state_dict': ...};
  views_legacy.pth, a legacy file whose tensors share a storage view (as torch < 0.4 wrote them);
- resnet18_tiny.pth (legacy format): jaxconv.pretrained.synthetic's seeded weights in the layout of
  ResNet-18 with depths (1, 1, 1, 1), stem_width 1 and 3 classes (and num_batches_tracked), for
  jaxconv.load_pretrained;
- families/NAME.pth and families.json: one small model of each torchvision family that jaxconv loads (its
  options in families.json, chosen to keep every key of the family's layout at a few thousand weights),
  seeded weights in torchvision's key layout (num_batches_tracked included), written in torch's legacy
  format for the families whose torchvision files predate PyTorch 1.6 (2020) and in the zip format for
  the later ones; ``--families`` writes only these;
- full_model.pth: torch.save of a whole nn.Linear (a model class, refused by jaxconv);
- evil_*.pth: checkpoints whose pickles would run a command (os.system, builtins.exec / eval,
  subprocess.Popen) that creates a file named pwned_*, in either format, in the tensors' place, in the
  magic number's place, with pickle protocol 4. Their payloads are pickled by reference (an object whose
  ``__reduce__`` names the function) and never called here;
- expected.json: what torch.load(weights_only=True) reads from tensors.pth (the same as from
  tensors_legacy.pth, tensors_bigendian.pth and nested.pth: checked here) and views_legacy.pth, as
  {stem: {key: {dtype, shape, values}}}.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "tests" / "fixtures" / "torchfile"
# The tiny ResNet-18 of resnet18_tiny.pth; tests/test_pretrained.py loads it with the same options and seed.
TINY_OPTIONS = {"depths": (1, 1, 1, 1), "stem_width": 1, "num_classes": 3}
TINY_SEED = 7
# families/NAME.pth: a small instance of each family (tests/test_pretrained.py reads the options from families.json).
FAMILY_SEED = 11
LEGACY_FAMILIES = {"resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "densenet121", "shufflenet_v2_x0_5",
                   "mnasnet0_5", "inception_v3"}  # their torchvision files predate PyTorch 1.6's zip format


def family_options() -> dict[str, dict]:
    """name -> the options of its small instance, as JSON (Inception's block classes by their names).

    SqueezeNet is left out: its fire modules' widths are not options (724,035 weights at 3 classes, 2.9 MB).
    """
    import jaxconv

    mnasnet = [[*stage[:4], 1] for stage in jaxconv.get_model("mnasnet0_5").stages]  # one block a stage
    inception = [[label, block.__name__, [max(1, w // 64) for w in widths]]
                 for label, block, widths in jaxconv.get_model("inception_v3").blocks]
    regnet = {"depth": 4, "w_0": 8, "w_a": 8, "w_m": 2.0, "group_width": 8, "stem_width": 8}
    return {
        "resnext50_32x4d": {"depths": [1, 1, 1, 1], "stem_width": 8, "widths": [64, 64, 64, 64]},
        "wide_resnet50_2": {"depths": [1, 1, 1, 1], "stem_width": 8, "widths": [8, 8, 8, 8]},
        "mobilenet_v2": {"width": 0.1, "depth": 0.1, "head_width": 8},
        "mobilenet_v3_small": {"width": 0.1, "hidden_width": 8},
        "densenet121": {"depths": [1, 1, 1, 1], "growth": 4, "stem_width": 8, "bn_size": 2},
        "shufflenet_v2_x0_5": {"depths": [1, 1, 1], "widths": [8, 16, 16, 16, 32]},
        "mnasnet0_5": {"width": 0.1, "head_width": 8, "stages": mnasnet},
        "inception_v3": {"stem_widths": [2, 2, 4, 4, 8], "aux_widths": [4, 4], "blocks": inception},
        "convnext_tiny": {"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8]},
        "regnet_x_400mf": regnet,
        "regnet_y_400mf": regnet,
        "efficientnet_v2_s": {"width": 0.1, "depth": 0.1, "head_width": 8},
    }


def as_model_options(options: dict) -> dict:
    """families.json's options as the model takes them: lists as tuples, Inception's block names as classes."""
    from jaxconv.blocks import inception

    def tuples(value):
        return tuple(tuples(v) for v in value) if isinstance(value, list) else value

    out = {key: tuples(value) for key, value in options.items()}
    if "blocks" in out:
        out["blocks"] = tuple((label, getattr(inception, block), widths) for label, block, widths in out["blocks"])
    return {**out, "num_classes": 3}
LEGACY_MAGIC, LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class Payload:
    """What a malicious checkpoint carries: unpickling it calls ``function(*args)``; pickling it calls nothing."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def benign_state(torch) -> collections.OrderedDict:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 3, generator=g)
    shared = torch.arange(10, dtype=torch.float32) / 4
    state = collections.OrderedDict([
        ("conv.weight", torch.randn(2, 1, 2, 2, generator=g)),
        ("fc.weight", weight),
        ("fc.weight_t", weight.t()),  # a transposed view: strides (1, 3) into fc.weight's storage
        ("half", torch.randn(5, generator=g).half()),
        ("bfloat", (torch.randn(4, generator=g) * 100).bfloat16()),
        ("double", torch.randn(2, generator=g).double()),
        ("long", torch.tensor([[-(2**40), 3], [7, 2**62]])),
        ("int", torch.tensor([-5, 6], dtype=torch.int32)),
        ("short", torch.tensor([-300], dtype=torch.int16)),
        ("char", torch.tensor([-7, 8], dtype=torch.int8)),
        ("byte", torch.tensor([0, 255], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("slice_a", shared[1:5]),  # two slices of one storage, at offsets 1 and 6
        ("slice_b", shared[6:].view(2, 2)),
        ("bn.num_batches_tracked", torch.tensor(1000)),
        ("empty", torch.zeros(0, 3)),
        ("param", torch.nn.Parameter(torch.randn(3, generator=g))),
    ])
    state._metadata = collections.OrderedDict({"": {"version": 1}})  # as Module.state_dict() sets it
    return state


def storage_dtypes(torch, path: pathlib.Path) -> dict[str, object]:
    """key -> torch dtype of each storage of a zip checkpoint (its pickle read with torch's classes)."""
    kinds = {}

    class Scan(pickle.Unpickler):
        def persistent_load(self, pid):
            kinds[pid[2]] = pid[1].dtype
            return torch.storage.TypedStorage(pid[4], dtype=pid[1].dtype, _internal=True)

    with zipfile.ZipFile(path) as archive:
        Scan(io.BytesIO(archive.read(f"{path.stem}/data.pkl"))).load()
    return kinds


def big_endian_copy(torch, source: pathlib.Path, target: pathlib.Path) -> None:
    """The zip checkpoint ``source`` rewritten with byteorder 'big' and every storage byte-swapped."""
    kinds = storage_dtypes(torch, source)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for name in old.namelist():
            data = old.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                size = torch.empty(0, dtype=kinds[name.rsplit("/", 1)[1]]).element_size()
                data = np.frombuffer(data, f"<u{size}").byteswap().tobytes() if size > 1 else data
            new.writestr(name.replace(source.stem, target.stem, 1), data)


class StorageRef:
    """A storage in a hand-written legacy pickle: written as its persistent id ``pid``."""

    def __init__(self, pid: tuple):
        self.pid = pid


def legacy_file(torch, obj, storages: dict[str, tuple[int, bytes]], magic=LEGACY_MAGIC) -> bytes:
    """torch.save's legacy format written by hand: magic, protocol, sys_info, obj, keys, storages."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return o.pid if isinstance(o, StorageRef) else None

    out = io.BytesIO()
    for header in (magic, LEGACY_PROTOCOL, SYS_INFO):
        pickle.dump(header, out, protocol=2)
    Pickler(out, protocol=2).dump(obj)
    pickle.dump(list(storages), out, protocol=2)
    for numel, data in storages.values():
        out.write(struct.pack("<q", numel) + data)
    return out.getvalue()


class LegacyTensor:
    def __init__(self, torch, storage: StorageRef, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.rebuild = torch._utils._rebuild_tensor_v2

    def __reduce__(self):
        return self.rebuild, self.args


def with_batch_counts(layout: dict) -> dict:
    """``layout`` with torchvision's num_batches_tracked beside each BatchNorm (jaxconv ignores them)."""
    counts = {k.replace("running_var", "num_batches_tracked"): () for k in layout if k.endswith("running_var")}
    return {**layout, **counts}


def write_families(torch) -> None:
    from jaxconv.pretrained.convert import torch_layout
    from jaxconv.pretrained.synthetic import random_state_dict

    folder = OUT / "families"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.pth"):
        old.unlink()
    options = family_options()
    for name, spec in options.items():
        state = random_state_dict(with_batch_counts(torch_layout(name, **as_model_options(spec))), FAMILY_SEED)
        torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()), folder / f"{name}.pth",
                   _use_new_zipfile_serialization=name not in LEGACY_FAMILIES)
        loaded = torch.load(folder / f"{name}.pth", map_location="cpu", weights_only=True)
        assert list(loaded) == list(state) and all(np.array_equal(loaded[k].numpy(), state[k]) for k in state), name
    (OUT / "families.json").write_text(json.dumps({"seed": FAMILY_SEED, "options": options}, indent=1) + "\n")
    for path in sorted(folder.iterdir()):
        print(f"families/{path.name}: {path.stat().st_size} bytes", file=sys.stderr)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Writes tests/fixtures/torchfile/ (needs torch).")
    parser.add_argument("--families", action="store_true", help="write only families/*.pth and families.json")
    args = parser.parse_args(argv)
    import torch

    from jaxconv.pretrained.convert import torch_layout
    from jaxconv.pretrained.synthetic import random_state_dict

    OUT.mkdir(parents=True, exist_ok=True)
    write_families(torch)
    if args.families:
        return 0
    for old in OUT.glob("*.pth"):
        old.unlink()
    state = benign_state(torch)
    torch.save(state, OUT / "tensors.pth")
    torch.save(state, OUT / "tensors_legacy.pth", _use_new_zipfile_serialization=False)
    big_endian_copy(torch, OUT / "tensors.pth", OUT / "tensors_bigendian.pth")
    torch.save({"state_dict": collections.OrderedDict(list(state.items())[:3])}, OUT / "nested.pth")
    float_storage = torch.FloatStorage  # a view of elements 2..5 of root storage 'r' (0, 1, ..., 7)
    root = StorageRef(("storage", float_storage, "r", "cpu", 8, None))
    view = StorageRef(("storage", float_storage, "r", "cpu", 8, ("v", 2, 4)))
    views = collections.OrderedDict([("whole", LegacyTensor(torch, root, 0, (2, 4), (4, 1))),
                                     ("view", LegacyTensor(torch, view, 1, (2,), (2,)))])
    data = np.arange(8, dtype="<f4").tobytes()
    (OUT / "views_legacy.pth").write_bytes(legacy_file(torch, views, {"r": (8, data)}))
    tiny = random_state_dict(with_batch_counts(torch_layout("resnet18", **TINY_OPTIONS)), TINY_SEED)
    torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in tiny.items()), OUT / "resnet18_tiny.pth",
               _use_new_zipfile_serialization=False)  # as torchvision's oldest files; smaller than a zip of 62 entries
    torch.save(torch.nn.Linear(2, 1), OUT / "full_model.pth")

    weight = torch.ones(2)
    evil = {  # file -> (payload, format); each payload would create pwned_<its name> in the working directory
        "evil_system.pth": (Payload(os.system, "touch pwned_system"), "zip"),
        "evil_exec_legacy.pth": (Payload(builtins.exec, "open('pwned_exec', 'w').close()"), "legacy"),
        "evil_eval.pth": (Payload(builtins.eval, "open('pwned_eval', 'w').close()"), "zip"),
        "evil_popen_legacy.pth": (Payload(subprocess.Popen, ["touch", "pwned_popen"]), "legacy"),
        "evil_protocol4.pth": (Payload(os.system, "touch pwned_protocol4"), "zip4"),
    }
    for name, (payload, form) in evil.items():
        obj = collections.OrderedDict([("fc.weight", weight), ("fc.bias", payload)])
        options = {"legacy": {"_use_new_zipfile_serialization": False}, "zip4": {"pickle_protocol": 4}}.get(form, {})
        torch.save(obj, OUT / name, **options)
    (OUT / "evil_magic_legacy.pth").write_bytes(
        legacy_file(torch, collections.OrderedDict(), {}, magic=Payload(os.system, "touch pwned_magic")))

    # What torch reads: tensors_legacy, tensors_bigendian and nested (its first 3 entries) read as tensors does.
    def read(name):
        loaded = torch.load(OUT / name, map_location="cpu", weights_only=True)
        return {key: value.detach() for key, value in loaded.get("state_dict", loaded).items()}

    tensors = read("tensors.pth")
    for name in ("tensors_legacy.pth", "tensors_bigendian.pth", "nested.pth"):
        for key, value in read(name).items():
            assert value.dtype == tensors[key].dtype and torch.equal(value, tensors[key]), (name, key)
    expected = {stem: {key: {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                             "values": value.flatten().tolist()} for key, value in read(f"{stem}.pth").items()}
                for stem in ("tensors", "views_legacy")}
    lines = []  # one tensor a line
    for stem, group in expected.items():
        entries = ",\n".join(f"  {json.dumps(key)}: {json.dumps(entry)}" for key, entry in group.items())
        lines.append(f" {json.dumps(stem)}: {{\n{entries}\n }}")
    (OUT / "expected.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
