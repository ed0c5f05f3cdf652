"""PyTorch checkpoints read without torch: exactly what torch reads, and never a pickled command run.

tests/fixtures/torchfile/ was written by scripts/make_torchfile_fixtures.py with torch 2.13: state
dicts in torch.save's zip and legacy formats, with torch.load's reading of them (expected.json), and
checkpoints whose pickles would run a command creating pwned_* in the working directory.
"""

from __future__ import annotations

import collections
import io
import json
import pathlib
import pickle
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest

from jaxconv.pretrained.torchfile import ALLOWED, WeightsFormatError, read_state_dict

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torchfile"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
# Each malicious file and the global its pickle names first: the one the reader must refuse.
MALICIOUS = {
    "evil_system.pth": "posix.system",
    "evil_exec_legacy.pth": "builtins.exec",
    "evil_eval.pth": "builtins.eval",
    "evil_popen_legacy.pth": "subprocess.Popen",
    "evil_protocol4.pth": "posix.system",  # STACK_GLOBAL, not GLOBAL
    "evil_magic_legacy.pth": "posix.system",  # in the magic number's place, the file's first pickle
}


def expected(stem: str) -> dict[str, np.ndarray]:
    """torch.load's reading of the fixture (bfloat16, which numpy lacks, as float32: torch's .float())."""
    return {key: np.array(entry["values"], dtype="float32" if entry["dtype"] == "bfloat16" else entry["dtype"])
            .reshape(entry["shape"]) for key, entry in EXPECTED[stem].items()}


@pytest.mark.parametrize("name, stem", [("tensors.pth", "tensors"), ("tensors_legacy.pth", "tensors"),
                                        ("tensors_bigendian.pth", "tensors"), ("views_legacy.pth", "views_legacy")])
def test_reads_exactly_what_torch_reads(name, stem):
    """Every dtype, a transposed view, slices of a shared storage, a 0-d and an empty tensor, a Parameter."""
    state, want = read_state_dict(FIXTURES / name), expected(stem)
    assert list(state) == list(want)
    for key, array in state.items():
        assert (array.dtype, array.shape) == (want[key].dtype, want[key].shape), key
        np.testing.assert_array_equal(array, want[key], err_msg=key)
        assert array.flags.c_contiguous and array.flags.writeable, key
    if stem == "tensors":
        assert state["fc.weight_t"].base is None  # a copy, not a view of the file's bytes
        np.testing.assert_array_equal(state["fc.weight_t"], state["fc.weight"].T)


def test_a_wrapped_state_dict_is_unwrapped():
    state = read_state_dict(FIXTURES / "nested.pth")  # {'state_dict': {conv.weight, fc.weight, fc.weight_t}}
    assert list(state) == ["conv.weight", "fc.weight", "fc.weight_t"]
    np.testing.assert_array_equal(state["fc.weight_t"], expected("tensors")["fc.weight_t"])


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_a_malicious_pickle_is_refused_and_nothing_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where each payload would create its pwned_* file
    with pytest.raises(WeightsFormatError, match=rf"{name}: refuses to unpickle {MALICIOUS[name]}: a weights file "
                                                 r"holds only tensors$"):
        read_state_dict(FIXTURES / name)
    if "popen" in name:
        time.sleep(0.3)  # a started process would have created its file by now
    assert list(tmp_path.iterdir()) == []


NAIVE = """
import io, pickle, subprocess, sys, zipfile
class Naive(pickle.Unpickler):  # resolves every global, as pickle.load does (torch's stubbed: CI has none)
    def find_class(self, module, name):
        return (lambda *args: None) if module.startswith("torch") else super().find_class(module, name)
    def persistent_load(self, pid):
        return None
for path in sys.argv[1:]:
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        f = io.BytesIO(archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl"))))
    else:
        f = open(path, "rb")
    try:
        while True:
            loaded = Naive(f).load()
            for value in getattr(loaded, "values", list)():
                if isinstance(value, subprocess.Popen):
                    value.wait()
    except Exception:
        pass
"""


def test_the_malicious_files_do_run_a_command_when_unpickled_naively(tmp_path):
    """The refusal test is not vacuous: an unpickler that resolves globals runs every payload."""
    paths = [str(FIXTURES / name) for name in MALICIOUS]
    subprocess.run([sys.executable, "-c", NAIVE, *paths], cwd=tmp_path, check=True, timeout=60)
    made = {p.name for p in tmp_path.iterdir()}
    assert made == {"pwned_system", "pwned_exec", "pwned_eval", "pwned_popen", "pwned_protocol4", "pwned_magic"}


def test_a_whole_model_is_refused_naming_its_class():
    with pytest.raises(WeightsFormatError, match="refuses to unpickle torch.nn.modules.linear.Linear"):
        read_state_dict(FIXTURES / "full_model.pth")


def test_a_stand_in_cannot_be_altered_by_a_pickle(tmp_path):
    """BUILD on torch.FloatStorage's stand-in (setting its dtype to int64) fails; the stand-in is unchanged."""
    build = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x03\x00\x00\x00<i8sb."
    path = write_zip(tmp_path / "build.pth", build)
    with pytest.raises(WeightsFormatError, match="damaged or truncated PyTorch checkpoint"):
        read_state_dict(path)
    assert ALLOWED["torch", "FloatStorage"].dtype == "<f4"


# ------------------------------------------------------------------------------------------------
# Files that are not, or no longer, state dicts.


def write_zip(path: pathlib.Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


@pytest.mark.parametrize("name", ["tensors.pth", "tensors_legacy.pth", "views_legacy.pth"])
def test_a_truncated_file_is_refused(name, tmp_path):
    data = (FIXTURES / name).read_bytes()
    for size in (0, 1, 20, len(data) // 2, len(data) - 5):
        path = tmp_path / f"cut{size}.pth"
        path.write_bytes(data[:size])
        with pytest.raises(WeightsFormatError, match=rf"cut{size}.pth: "):
            read_state_dict(path)


def test_a_truncated_storage_is_refused(tmp_path):
    """A zip whose directory is intact but one storage is short (torch writes exact sizes)."""
    with zipfile.ZipFile(FIXTURES / "tensors.pth") as source, zipfile.ZipFile(tmp_path / "short.pth", "w") as copy:
        for name in source.namelist():
            copy.writestr(name, source.read(name)[:-2] if name.endswith("/data/0") else source.read(name))
    message = r"short.pth: truncated: a FloatStorage needs 32 bytes, the file has 30$"
    with pytest.raises(WeightsFormatError, match=message):
        read_state_dict(tmp_path / "short.pth")


def test_files_that_are_not_torch_checkpoints_are_refused(tmp_path):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        archive.addfile(tarfile.TarInfo("pickle"), io.BytesIO(b""))
    cases = {
        "text.pth": (b"these are not weights\n", "not a PyTorch checkpoint"),
        "empty.pth": (b"", "not a PyTorch checkpoint"),
        "pickle.pth": (pickle.dumps({"a": 1}, protocol=2), "a pickle without torch.save's magic number"),
        "tar.pth": (tar.getvalue(), "the tar format of the first PyTorch releases is not read"),
        "safetensors.pth": (b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", "not a PyTorch checkpoint"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsFormatError, match=rf"{name}: .*{message}"):
            read_state_dict(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("model/weights.bin", b"\0" * 8)
    with pytest.raises(WeightsFormatError, match="a zip archive, but not torch.save's"):
        read_state_dict(tmp_path / "other.zip")


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path):
    with pytest.raises(WeightsFormatError, match=r"list.pth: holds a list, not a state dict"):
        read_state_dict(write_zip(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2)))
    with pytest.raises(WeightsFormatError, match=r"int.pth: entry 'epoch' is not a tensor \(int\)$"):
        read_state_dict(write_zip(tmp_path / "int.pth", pickle.dumps({"epoch": 3}, protocol=2)))
    training = collections.OrderedDict(state_dict={}, optimizer={})  # only a lone wrapper is unwrapped
    with pytest.raises(WeightsFormatError, match=r"entry 'state_dict' is not a tensor \(dict\)"):
        read_state_dict(write_zip(tmp_path / "checkpoint.pth", pickle.dumps(training, protocol=2)))


# A pickle naming torch's globals, written without torch: GLOBAL opcodes by name.
class Global:
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # never called: pickle only checks that a reduce function is callable
        raise AssertionError


class Tensor:
    def __init__(self, storage, *args):
        self.args = (storage, *args)

    def __reduce__(self):
        return Global("torch._utils", "_rebuild_tensor_v2"), self.args


class Built:
    """_rebuild_parameter(storage) followed by BUILD with ``state``: a pickle altering what it got."""

    def __init__(self, storage, state):
        self.storage, self.state = storage, state

    def __reduce__(self):
        return Global("torch._utils", "_rebuild_parameter"), (self.storage,), self.state


class Pickler(pickle._Pickler):  # the Python implementation, whose dispatch table takes Global
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Global] = lambda self, g: self.write(pickle.GLOBAL + f"{g.module}\n{g.name}\n".encode())

    def persistent_id(self, obj):
        return obj if isinstance(obj, tuple) and obj[:1] == ("storage",) else None


def crafted(tmp_path: pathlib.Path, entry, numel: int = 4) -> pathlib.Path:
    out = io.BytesIO()
    Pickler(out, protocol=2).dump(collections.OrderedDict(w=entry))
    return write_zip(tmp_path / "crafted.pth", out.getvalue(), {"data/0": np.arange(numel, dtype="<f4").tobytes()})


def test_the_crafting_pickler_writes_what_torch_writes(tmp_path):
    storage = ("storage", Global("torch", "FloatStorage"), "0", "cpu", 4)
    state = read_state_dict(crafted(tmp_path, Tensor(storage, 1, (3,), (1,), False, collections.OrderedDict())))
    np.testing.assert_array_equal(state["w"], [1, 2, 3])


@pytest.mark.parametrize("args, message", [
    ((1, (4,), (1,)), "a tensor of size \\(4,\\) reaches past its 4-element storage"),
    ((0, (2, 2), (3, 1)), "reaches past"),
    ((0, (8,), (0,)), "reaches past"),  # an expanded view: more elements than its storage
    ((-1, (2,), (1,)), "a tensor of offset -1"),
    ((0, (2,), (-1,)), "a tensor of offset 0, size \\(2,\\), stride \\(-1,\\)"),
    ((0, "ab", "cd"), "a tensor of offset 0, size 'ab'"),
    ((0, (2,), (1,), False, None, {"neg": True}), "a tensor with metadata"),
])
def test_a_tensor_never_reads_outside_its_storage(tmp_path, args, message):
    storage = ("storage", Global("torch", "FloatStorage"), "0", "cpu", 4)
    with pytest.raises(WeightsFormatError, match=message):
        read_state_dict(crafted(tmp_path, Tensor(storage, *args)))


def test_storages_and_tensors_are_checked(tmp_path):
    storage = ("storage", Global("torch", "FloatStorage"), "0", "cpu", 4)
    cases = [
        (Tensor("not a storage", 0, (1,), (1,)), "a tensor whose storage is a str"),
        (Tensor(("storage", Global("torch", "FloatStorage"), "9", "cpu", 4), 0, (1,), (1,)), "data/9 is missing"),
        (Tensor(("storage", Global("torch", "QInt8Storage"), "0", "cpu", 4), 0, (1,), (1,)),
         "refuses to unpickle torch.QInt8Storage"),
        (Tensor(("storage", Global("torch", "FloatStorage"), "0", "cpu", 5), 0, (1,), (1,)),
         "truncated: a FloatStorage needs 20 bytes, the file has 16"),
        (Tensor(("storage", "FloatStorage", "0", "cpu", 4), 0, (1,), (1,)), "an unknown persistent id"),
        (Tensor(("storage", Global("posix", "system"), "0", "cpu", 4), 0, (1,), (1,)),
         "refuses to unpickle posix.system"),
        (storage, "entry 'w' is not a tensor \\(_Storage\\)"),
        (Tensor(Built(storage, {"numel": 2**40}), 0, (1,), (1,)), "a pickle that alters a storage"),
        (Built(Tensor(storage, 0, (4,), (1,)), {"size": (9,)}), "damaged or truncated"),  # nor a tensor
        (Tensor(storage, 0, (1,), (1,), False, Tensor(storage, 0)), "damaged or truncated"),  # wrong arguments
    ]
    for entry, message in cases:
        with pytest.raises(WeightsFormatError, match=message):
            read_state_dict(crafted(tmp_path, entry))


# ------------------------------------------------------------------------------------------------
# With torch installed (not in CI): a fresh random state dict, both formats, against torch.load.


def test_matches_torch_load_on_a_fresh_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=g)
    state = collections.OrderedDict(
        w=base, t=base.t(), s=base[2:, 1:3], h=torch.randn(3, 2, generator=g).half(),
        b=torch.randn(7, generator=g).bfloat16(), d=torch.randn(2, generator=g).double(),
        i=torch.randint(-(2**40), 2**40, (4,), generator=g), n=torch.tensor(12),
        u=torch.randint(0, 255, (3,), dtype=torch.uint8, generator=g),
        q=torch.randn(2, 3, 4, generator=g).permute(2, 0, 1), e=torch.zeros(2, 0),
    )
    for options in ({}, {"_use_new_zipfile_serialization": False}):
        torch.save(state, tmp_path / "state.pth", **options)
        loaded = torch.load(tmp_path / "state.pth", weights_only=True)
        ours = read_state_dict(tmp_path / "state.pth")
        assert list(ours) == list(loaded)
        for key, value in loaded.items():
            want = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
            assert ours[key].dtype == want.dtype, key
            np.testing.assert_array_equal(ours[key], want, err_msg=key)
