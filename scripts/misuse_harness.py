"""Throws bad inputs and faults at jaxconv's command line and Python API, and judges what comes back.

Run it from the repository root with the project's environment (it imports tests/tiny.py, and starts
the `jaxconv` command and Python that sit beside the interpreter running it):

    .venv/bin/python scripts/misuse_harness.py                      # every case -> misuse_results.json
    .venv/bin/python scripts/misuse_harness.py --list               # the cases, by class, and what each expects
    .venv/bin/python scripts/misuse_harness.py --only resume lock-held-*   # classes, case ids or patterns
    .venv/bin/python scripts/misuse_harness.py --out results.json --keep   # keep the scratch files to look at

It prints a line per case (PASS/FAIL/SKIP/ERROR, the id, why) and a table per class, and writes every
case's commands, exit statuses, stderr tails and leftovers to the JSON file. Its exit status is 0 when
every case passed. A full run (about 400 cases) took 40 minutes on a 2-core CPU that was also running
another job; `--only` picks classes or cases.

What it judges -- jaxconv's promise:

* A user mistake (CLI): exit status 2, at most MAX_ERROR_LINES lines on stderr, the last one
  "jaxconv: error: ..." naming the value, why it is wrong and what would be right (each case lists
  words it must contain), no Python traceback, and nothing left behind in the case's scratch
  directory: no new file or folder (an empty workdir, a half-written dataset or report), none
  removed, none changed (run.lock aside).
* A user mistake (API): an exception that is a ValueError or TypeError (a few cases also accept
  OSError), whose message names the argument and what is allowed -- not an obscure internal error.
* Faults have their own expectations: SIGTERM -> exit 0 with a line, and the workdir resumes;
  two quick Ctrl-Cs -> exit 130 at once without a traceback, and the workdir resumes; a SIGKILLed
  run's lock is taken over; a damaged checkpoint -> a line, and the previous one is used; a full
  disk -> a line naming the cause, exit 1 or 2, no traceback, the last good checkpoint kept.
* A few cases where more than one answer is fair are judged "clean": exit 0, or a proper usage
  error (exit 2 as above), and never a traceback.

Every case runs in its own scratch directory (the working directory of its commands), is set up
there (a copy of a finished tiny run, broken files, a tmpfs), then snapshotted before and after its
commands: new, removed and changed paths are its leftovers (__pycache__ folders are ignored).
Training uses the test suite's tiny run (tests/tiny.py: ResNet-8 on 16-pixel built-in shapes,
256 examples, batch 32), one shared data dir (the dataset is generated once, before the cases) and
one shared JAX compilation cache; XLA_FLAGS is unset. Cases run two at a time, and every command
has a timeout (TIMEOUT_S): one that does not end in time is killed and judged "hung".

Full disks and read-only places are tmpfs mounts (`mount -t tmpfs -o size=...`, remounted `ro`), so
those cases need root; where mounting fails they are skipped with a note.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import fnmatch
import json
import os
import pathlib
import pickle
import random
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import tiny  # noqa: E402  (the test suite's tiny training run)

PYTHON = sys.executable
JAXCONV = next((str(p) for p in (pathlib.Path(PYTHON).parent / "jaxconv", REPO / ".venv" / "bin" / "jaxconv")
                if p.exists()), "jaxconv")

TIMEOUT_S = 180  # per command; one still running then is killed and judged hung
MAX_ERROR_LINES = 4  # non-empty stderr lines a usage error may take
TRACEBACK = "Traceback (most recent call last)"
PROGRESS = r"step \d+/\d+"  # a training progress line
SEED = 20251202  # the random moments of the fault cases
MORE_STEPS = "--config.num_train_steps=10"  # a resume of the 8-step tiny run that has something to do
LONG_VALUES = {"num_train_steps": 100_000, "log_every_steps": 5, "checkpoint_every_steps": 50,
               "eval_every_steps": 100_000}  # a tiny run that goes on until it is stopped
API_ERRORS = ("ValueError", "TypeError")


class Skip(Exception):
    """The case cannot run here (e.g. no tmpfs); reported as SKIP with the reason."""


class HarnessError(Exception):
    """The case's own set-up did not work out (not a finding about jaxconv); reported as ERROR."""


# --- running commands -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What one command (or one API call, run in its own Python process) did."""

    label: str
    command: str
    status: int | None  # exit status; -N: ended by signal N
    stdout: str
    stderr: str
    seconds: float
    hung: bool = False
    api: dict | None = None  # API calls: {"stage": "call"|"returned"|"setup", "type", "mro", "message", "value"}

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.stderr or TRACEBACK in self.stdout

    @property
    def traceback_excerpt(self) -> list[str]:
        """The first traceback's innermost frame and exception line (where and what), if there is one."""
        lines = (self.stderr + "\n" + self.stdout).splitlines()
        if TRACEBACK not in "\n".join(lines):
            return []
        start = next(i for i, line in enumerate(lines) if TRACEBACK in line)
        frame = ""
        for line in lines[start + 1:]:
            if line.startswith("  File "):
                frame = line.strip()
            elif line and not line.startswith(" "):
                return [frame, line.strip()]
        return [frame]

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""

    @property
    def exception(self) -> str | None:
        return self.api.get("type") if self.api and self.api.get("stage") == "call" else None

    def record(self) -> dict:
        record = {"label": self.label, "command": self.command, "exit_status": self.status, "hung": self.hung,
                  "traceback": self.traceback, "stderr_lines": len(self.lines), "stderr_tail": self.lines[-3:],
                  "stdout_tail": [line for line in self.stdout.splitlines() if line.strip()][-3:],
                  "seconds": round(self.seconds, 1)}
        if self.traceback:
            record["traceback_excerpt"] = self.traceback_excerpt
        if self.api is not None:
            record["api"] = self.api
        return record


LIVE: set[Proc] = set()  # every process the harness started and has not reaped (killed on exit)
LIVE_LOCK = threading.Lock()


class Proc:
    """A command running in the background, its output going to files under the case's log folder."""

    def __init__(self, argv: Sequence[str], *, display: str, label: str, cwd: pathlib.Path, env: dict,
                 logs: pathlib.Path):
        self.label, self.display = label, display
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / f"{label}.stdout", logs / f"{label}.stderr"
        self._files = [open(self.out_path, "wb"), open(self.err_path, "wb")]
        self.started = time.monotonic()
        self.popen = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._files[0],
                                      stderr=self._files[1], start_new_session=True)
        self.pid = self.popen.pid
        with LIVE_LOCK:
            LIVE.add(self)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for(self, pattern: str, timeout: float = 120) -> bool:
        """True once ``pattern`` appears on stderr; False if the process ended or ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.stderr()):
                return True
            if not self.running():
                return bool(re.search(pattern, self.stderr()))
            time.sleep(0.1)
        return False

    def send(self, sig: int, *, group: bool = False) -> None:
        """``sig`` to the process (``group``: to its whole process group, as a terminal's Ctrl-C does)."""
        try:
            os.killpg(self.pid, sig) if group else os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def finish(self, timeout: float = TIMEOUT_S) -> Outcome:
        """Waits for the process (killing its group after ``timeout``) and returns what it did."""
        hung = False
        try:
            self.popen.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            hung = True
            self.kill()
        self.close()
        return Outcome(self.label, self.display, None if hung else self.popen.returncode,
                       self.out_path.read_text(errors="replace"), self.stderr(), time.monotonic() - self.started,
                       hung=hung)

    def kill(self) -> None:
        """SIGKILL to the process group, and wait for the process."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()

    def close(self) -> None:
        for f in self._files:
            f.close()
        with LIVE_LOCK:
            LIVE.discard(self)


# --- leftovers ----------------------------------------------------------------------------------------------


IGNORED_NAMES = {"__pycache__"}
LOCK_CHANGES = ("run.lock", "*/run.lock")  # a run that was refused may still have taken and released the lock


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every path under ``root`` (relative) -> (kind, size, mtime); symlinks are not followed."""
    state = {}
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_NAMES]
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
            state[os.path.relpath(path, root)] = (kind, st.st_size, st.st_mtime_ns) if kind == "file" else (kind,)
    return state


@dataclasses.dataclass
class Leftovers:
    """How a case's commands changed its scratch directory."""

    new: list[str]
    removed: list[str]
    changed: list[str]
    kinds: dict[str, str]

    @classmethod
    def between(cls, before: dict, after: dict) -> Leftovers:
        kinds = {path: entry[0] for path, entry in {**before, **after}.items()}
        return cls(sorted(set(after) - set(before)), sorted(set(before) - set(after)),
                   sorted(p for p in set(before) & set(after) if after[p][0] == "file" and before[p] != after[p]),
                   kinds)

    def unexpected(self, allowed: Sequence[str]) -> list[str]:
        """The leftovers ``allowed`` (globs relative to the scratch directory) does not cover, described."""
        def outside(paths, patterns):
            return [p for p in paths if not any(fnmatch.fnmatch(p, g) for g in patterns)]

        parts = []
        for word, paths in (("new", outside(self.new, allowed)), ("removed", outside(self.removed, allowed)),
                            ("changed", outside(self.changed, (*allowed, *LOCK_CHANGES)))):
            if paths:
                parts.append(f"{word}: {', '.join(self.compact(paths))}")
        return parts

    def compact(self, paths: Sequence[str]) -> list[str]:
        """Paths whose folder is not itself listed; a folder with the number of entries under it."""
        listed = set(paths)
        shown = []
        for path in paths:
            if any(parent in listed for parent in _parents(path)):
                continue
            if self.kinds.get(path) == "dir":
                inside = sum(1 for p in paths if p.startswith(path + os.sep))
                shown.append(f"{path}/ ({inside} entries)" if inside else f"{path}/ (empty)")
            else:
                shown.append(path)
        return shown

    def record(self) -> dict:
        return {"new": self.compact(self.new), "removed": self.compact(self.removed), "changed": self.changed}


def _parents(path: str) -> Iterator[str]:
    parts = path.split(os.sep)
    for i in range(1, len(parts)):
        yield os.sep.join(parts[:i])


# --- expectations -------------------------------------------------------------------------------------------


Mention = str | tuple[str, ...]  # a word the message must contain, or alternatives any one of which will do


def missing(text: str, mentions: Iterable[Mention]) -> list[str]:
    low = text.lower()
    absent = []
    for mention in mentions:
        options = (mention,) if isinstance(mention, str) else mention
        if not any(option.lower() in low for option in options):
            absent.append(" or ".join(repr(option) for option in options))
    return absent


def _basics(o: Outcome, statuses: Sequence[int] = ()) -> list[str]:
    """What is wrong with any command: it hung, a signal ended it (unless expected), a traceback."""
    problems = []
    if o.hung:
        problems.append(f"hung: still running after {TIMEOUT_S} s (killed)")
    elif o.status is not None and o.status < 0 and o.status not in statuses:
        problems.append(f"ended by signal {-o.status} ({signal.Signals(-o.status).name})")
    if o.traceback:
        problems.append("a Python traceback in its output")
    return problems


@dataclasses.dataclass(frozen=True)
class Expectation:
    mentions: tuple[Mention, ...] = ()

    def judge(self, o: Outcome, left: Leftovers, ctx: Ctx) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _words(self, ctx: Ctx) -> tuple[Mention, ...]:
        return tuple(ctx.expand_mention(m) for m in (*self.mentions, *ctx.mentions))


@dataclasses.dataclass(frozen=True)
class Usage(Expectation):
    """A user mistake: exit 2, a few lines, the last naming what is wrong, no traceback, nothing left behind."""

    tidy: bool = True

    def judge(self, o, left, ctx):
        problems = _basics(o)
        if not o.hung and o.status != 2:
            problems.append(f"exit status {o.status}, expected 2")
        if len(o.lines) > MAX_ERROR_LINES:
            problems.append(f"{len(o.lines)} lines on stderr (a usage error may take {MAX_ERROR_LINES})")
        if not o.last_line.startswith("jaxconv: error:"):
            problems.append(f"the last stderr line is not 'jaxconv: error: ...': {o.last_line[:160]!r}")
        else:
            problems += [f"the error does not mention {m}" for m in missing(o.last_line, self._words(ctx))]
        if self.tidy:
            problems += [f"left behind: {part}" for part in left.unexpected(ctx.case.allowed)]
        return problems

    def describe(self):
        words = f", naming {', '.join(map(str, self.mentions))}" if self.mentions else ""
        return f"usage error (exit 2{words}{'' if self.tidy else ', leftovers not judged'})"


@dataclasses.dataclass(frozen=True)
class Ends(Expectation):
    """Ends with one of ``statuses`` without a traceback, stderr mentioning ``mentions``."""

    statuses: tuple[int, ...] = (0,)
    tidy: bool = False

    def judge(self, o, left, ctx):
        problems = _basics(o, self.statuses)
        if not o.hung and o.status not in self.statuses:
            problems.append(f"exit status {o.status}, expected {' or '.join(map(str, self.statuses))}"
                            + (f" (last line: {o.last_line[:200]!r})" if o.last_line else ""))
        problems += [f"stderr does not mention {m}" for m in missing(o.stderr, self._words(ctx))]
        if self.tidy:
            problems += [f"left behind: {part}" for part in left.unexpected(ctx.case.allowed)]
        return problems

    def describe(self):
        words = f", saying {', '.join(map(str, self.mentions))}" if self.mentions else ""
        return f"exit {'/'.join(map(str, self.statuses))}{words}, no traceback"


def Succeeds(*mentions: Mention, tidy: bool = False) -> Ends:  # noqa: N802  (reads as an expectation)
    return Ends(mentions=mentions, statuses=(0,), tidy=tidy)


@dataclasses.dataclass(frozen=True)
class Fails(Expectation):
    """A fault jaxconv cannot work around (a full disk): exit 1 or 2, the last line 'jaxconv: ...' naming it."""

    statuses: tuple[int, ...] = (1, 2)
    tidy: bool = False

    def judge(self, o, left, ctx):
        problems = _basics(o)
        if not o.hung and o.status not in self.statuses:
            problems.append(f"exit status {o.status}, expected {' or '.join(map(str, self.statuses))}")
        if not o.last_line.startswith("jaxconv:"):
            problems.append(f"the last stderr line is not 'jaxconv: ...': {o.last_line[:160]!r}")
        problems += [f"the last line does not mention {m}" for m in missing(o.last_line, self._words(ctx))]
        if self.tidy:
            problems += [f"left behind: {part}" for part in left.unexpected(ctx.case.allowed)]
        return problems

    def describe(self):
        return (f"fails cleanly (exit {'/'.join(map(str, self.statuses))}, last line naming "
                f"{', '.join(map(str, self.mentions))}{', nothing half-written' if self.tidy else ''})")


@dataclasses.dataclass(frozen=True)
class Clean(Expectation):
    """Where more than one answer is fair: exit 0 (no traceback) or a proper usage error."""

    def judge(self, o, left, ctx):
        if o.status == 2:
            return Usage(self.mentions).judge(o, left, ctx)
        problems = _basics(o)
        if not o.hung and o.status != 0:
            problems.append(f"exit status {o.status}, expected 0 or a usage error (2)"
                            + (f" (last line: {o.last_line[:200]!r})" if o.last_line else ""))
        return problems

    def describe(self):
        return "exit 0, or a usage error (exit 2, one line, nothing left behind); never a traceback"


@dataclasses.dataclass(frozen=True)
class ApiError(Expectation):
    """The call raises one of ``types`` (by class name, subclasses count) naming ``mentions``."""

    types: tuple[str, ...] = API_ERRORS
    may_return: bool = False  # a value is an acceptable answer too
    tidy: bool = True

    def judge(self, o, left, ctx):
        api = o.api or {}
        if api.get("stage") == "setup":
            raise HarnessError(f"the case's set-up code failed: {api.get('type')}: {api.get('message')}")
        problems = []
        if o.hung:
            problems.append(f"hung: still running after {TIMEOUT_S} s (killed)")
        elif not api:
            problems.append(f"the interpreter died (exit {o.status}) before the call returned or raised: "
                            f"{o.last_line[:200]!r}")
        elif api.get("stage") == "returned":
            if not self.may_return:
                problems.append(f"returned {api.get('value', '')[:160]} instead of raising")
        elif not any(t in api.get("mro", ()) for t in self.types):
            problems.append(f"raised {api.get('module', '')}.{api.get('type')} (bases {', '.join(api.get('mro', [])[1:4])}), "
                            f"expected a {' or '.join(self.types)}")
        if api.get("stage") == "call":
            problems += [f"the message does not mention {m}" for m in missing(api.get("message", ""), self._words(ctx))]
        if self.tidy:
            problems += [f"left behind: {part}" for part in left.unexpected(ctx.case.allowed)]
        return problems

    def describe(self):
        words = f" naming {', '.join(map(str, self.mentions))}" if self.mentions else ""
        return f"raises {'/'.join(self.types)}{words}" + (" (or returns)" if self.may_return else "")


# --- shared fixtures -----------------------------------------------------------------------------------------


class Shared:
    """What every case may use: the tiny experiments, a finished tiny run, the shared data and XLA cache,
    fixture files made once (weights, images)."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.data_dir = root / "data"
        self.xla = root / "xla"
        self.fixtures = root / "fixtures"
        self.tiny = root / "experiments" / "tiny.py"
        self.long = root / "experiments" / "long.py"
        self.base_run = root / "base_run"
        self.base_steps: list[int] = []
        self._lock = threading.RLock()  # weights() calls layout() while holding it
        self._made: dict[str, object] = {}
        for d in (self.data_dir, self.xla, self.fixtures, self.tiny.parent, root / "home", root / "tfds", root / "weights"):
            d.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCONV_IMPORT")}
        env.update(JAX_COMPILATION_CACHE_DIR=str(self.xla), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                   TFDS_DATA_DIR=str(root / "tfds"), JAXCONV_WEIGHTS_DIR=str(root / "weights"), PYTHONUNBUFFERED="1")
        self.env = env

    def prepare(self) -> None:
        """The experiments, and the finished tiny run (which generates the shared dataset and fills the cache)."""
        tiny.write_experiment(self.tiny, self.data_dir)
        tiny.write_experiment(self.long, self.data_dir, **LONG_VALUES)
        print("preparing: a tiny training run (generates the dataset, compiles the steps) ...", flush=True)
        proc = Proc([JAXCONV, "train", "--config", str(self.tiny), "--workdir", str(self.base_run)],
                    display="jaxconv train (base run)", label="base_run", cwd=self.root, env=self.env,
                    logs=self.root / "logs" / "_prepare")
        outcome = proc.finish(timeout=600)
        if outcome.status != 0:
            raise SystemExit(f"the tiny base run failed (exit {outcome.status}):\n{outcome.stderr[-3000:]}")
        self.base_steps = sorted(int(p.name) for p in (self.base_run / "checkpoints").iterdir() if p.name.isdigit())
        print(f"preparing: done (checkpoints {self.base_steps})", flush=True)

    def once(self, key: str, make: Callable[[], object]) -> object:
        with self._lock:
            if key not in self._made:
                self._made[key] = make()
            return self._made[key]

    def layout(self, model: str = "resnet18") -> dict[str, list[int]]:
        """torchvision's state-dict keys and shapes for ``model``, as jaxconv declares them."""
        def make():
            code = ("import json; from jaxconv.pretrained.convert import torch_layout; "
                    f"print(json.dumps({{k: list(v) for k, v in torch_layout({model!r}).items()}}))")
            done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=self.env, timeout=TIMEOUT_S)
            if done.returncode:
                raise HarnessError(f"torch_layout({model!r}) failed: {done.stderr[-500:]}")
            return json.loads(done.stdout)
        return self.once(f"layout:{model}", make)  # type: ignore[return-value]

    def weights(self, kind: str) -> pathlib.Path:
        """{fixtures}/resnet18-KIND.safetensors (see WEIGHT_FIXTURES), made once."""
        def make():
            dtype, shape_of, keep = WEIGHT_FIXTURES[kind]
            path = self.fixtures / f"resnet18-{kind}.safetensors"
            write_safetensors(path, {k: (dtype, shape_of(s)) for k, s in self.layout().items() if keep(k)})
            return path
        return self.once(f"weights:{kind}", make)  # type: ignore[return-value]


# --- fixture files ---------------------------------------------------------------------------------------------


SAFETENSORS_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def write_safetensors(path: pathlib.Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A .safetensors file of zero-filled tensors (name -> (dtype, shape)), written without any library."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = SAFETENSORS_SIZES[dtype] * _prod(shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)  # zeros


WEIGHT_FIXTURES = {  # resnet18-KIND.safetensors: torchvision's ResNet-18 keys, zero-filled: dtype, shape, which keys
    "zeros": ("F32", lambda shape: shape, lambda key: True),  # a well-formed state dict
    "int8": ("I8", lambda shape: shape, lambda key: True),
    "bool": ("BOOL", lambda shape: shape, lambda key: True),
    "shapes": ("F32", lambda shape: [1], lambda key: True),  # every entry the wrong shape
    "head": ("F32", lambda shape: shape, lambda key: key.startswith("fc.")),  # the classifier only
}


def weight_fixtures(*texts: str) -> tuple[Callable[[Ctx], None], ...]:
    """Set-up steps making the weight fixtures that ``texts`` (commands, code) name."""
    kinds = sorted({m for text in texts for m in re.findall(r"resnet18-(\w+)\.safetensors", text)})
    return tuple(_weights_step(kind) for kind in kinds)


def _weights_step(kind: str) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        ctx.shared.weights(kind)
    return step


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def png_bytes(width: int, height: int, seed: int, color_type: int = 2) -> bytes:
    """A PNG of noise: color_type 2 RGB, 0 grayscale, 6 RGBA."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    rng = random.Random(seed)
    rows = b"".join(b"\0" + bytes(rng.randrange(256) for _ in range(width * channels)) for _ in range(height))
    return png_from_chunks(struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0), zlib.compress(rows))


def png_from_chunks(ihdr: bytes, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _RunsCode:
    """Unpickling this runs `touch MARKER` (what a malicious .pth would do)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def evil_pickle(marker: pathlib.Path) -> bytes:
    return pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=2)


def evil_torch_zip(marker: pathlib.Path) -> bytes:
    """The same pickle in torch's zip layout (archive/data.pkl), as torch.save writes a .pth."""
    path = pathlib.Path(tempfile.mktemp(suffix=".zip"))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", evil_pickle(marker))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    data = path.read_bytes()
    path.unlink()
    return data


# --- a case and its context --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    id: str
    what: str
    action: Callable[[Ctx], Outcome]
    expect: Expectation
    setup: tuple[Callable[[Ctx], None], ...] = ()
    checks: tuple[Callable[[Ctx], str | None], ...] = ()  # further conditions, each returning a problem or None
    allowed: tuple[str, ...] = ()  # leftovers that are fine: globs relative to the scratch directory
    cls: str = ""


PLACEHOLDER = re.compile(r"\{(run|scratch|tiny|long|data|base|fixtures)\}")


@dataclasses.dataclass
class Ctx:
    """One case's scratch directory, commands, and findings beyond its main outcome."""

    case: Case
    shared: Shared
    scratch: pathlib.Path
    logs: pathlib.Path
    rng: random.Random
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    mentions: list[Mention] = dataclasses.field(default_factory=list)  # found at run time (a holder's pid)
    cleanups: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    procs: list[Proc] = dataclasses.field(default_factory=list)
    primary: Outcome | None = None

    @property
    def run(self) -> pathlib.Path:
        return self.scratch / "run"

    def expand(self, text: str) -> str:
        values = {"run": self.run, "scratch": self.scratch, "tiny": self.shared.tiny, "long": self.shared.long,
                  "data": self.shared.data_dir, "base": self.shared.base_run, "fixtures": self.shared.fixtures}
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)

    def expand_mention(self, mention: Mention) -> Mention:
        return self.expand(mention) if isinstance(mention, str) else tuple(self.expand(m) for m in mention)

    def _label(self, label: str) -> str:
        taken = {o.label for o in self.outcomes} | {p.label for p in self.procs}
        return label if label not in taken else f"{label}-{len(taken)}"

    def start(self, *args: str, label: str = "cmd", env: dict | None = None) -> Proc:
        """`jaxconv ARGS` in the background (placeholders expanded)."""
        argv = [self.expand(a) for a in args]
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        display = " ".join(filter(None, [prefix, "jaxconv", shlex.join(argv)]))
        proc = Proc([JAXCONV, *argv], display=display, label=self._label(label), cwd=self.scratch,
                    env={**self.shared.env, **(env or {})}, logs=self.logs)
        self.procs.append(proc)
        return proc

    def start_python(self, code: str, *args: str, label: str) -> Proc:
        argv = [self.expand(a) for a in args]
        proc = Proc([PYTHON, "-c", code, *argv], display=f"python -c ... {shlex.join(argv)}", label=self._label(label),
                    cwd=self.scratch, env=self.shared.env, logs=self.logs)
        self.procs.append(proc)
        return proc

    def finish(self, proc: Proc, timeout: float = TIMEOUT_S) -> Outcome:
        outcome = proc.finish(timeout)
        self.outcomes.append(outcome)
        return outcome

    def cli(self, *args: str, label: str = "cmd", env: dict | None = None, timeout: float = TIMEOUT_S) -> Outcome:
        """`jaxconv ARGS`, to the end."""
        return self.finish(self.start(*args, label=label, env=env), timeout)

    def api(self, setup: str, call: str, label: str = "api") -> Outcome:
        """Python ``setup`` code, then ``call`` (which sets ``result``), in a fresh interpreter."""
        setup, call = self.expand(setup), self.expand(call)
        code = API_TEMPLATE.format(setup=textwrap.indent(setup or "pass", "    "), call=textwrap.indent(call, "    "))
        proc = Proc([PYTHON, "-c", code], display=call, label=self._label(label), cwd=self.scratch,
                    env=self.shared.env, logs=self.logs)
        self.procs.append(proc)
        outcome = self.finish(proc)
        found = re.findall(r"^@@RESULT@@(.*)$", outcome.stdout, re.M)
        outcome.api = json.loads(found[-1]) if found else None
        outcome.stdout = re.sub(r"^@@RESULT@@.*\n?", "", outcome.stdout, flags=re.M)
        return outcome

    def require(self, outcome: Outcome, *, statuses: tuple[int, ...] = (0,), mentions: Sequence[Mention] = (),
                what: str | None = None) -> None:
        """A further command (a resume, the stopped first run) must end so; its problems are the case's."""
        what = what or outcome.label
        for problem in Ends(tuple(mentions), statuses).judge(outcome, Leftovers([], [], [], {}), _NoMentions(self)):
            self.problems.append(f"{what}: {problem}")

    def stop_processes(self) -> None:
        """Kills what the case left running (a background run it did not stop) and closes its logs."""
        for proc in self.procs:
            if proc.running():
                proc.kill()
            proc.close()

    def defer(self, cleanup: Callable[[], None]) -> None:
        self.cleanups.append(cleanup)

    def steps(self, workdir: pathlib.Path | None = None) -> list[int]:
        directory = (workdir or self.run) / "checkpoints"
        try:
            return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        except OSError:
            return []

    def latest_step(self, workdir: pathlib.Path | None = None) -> int | None:
        steps = self.steps(workdir)
        return steps[-1] if steps else None

    def wait_until(self, condition: Callable[[], bool], proc: Proc, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not proc.running() or time.monotonic() > deadline:
                raise HarnessError(f"{what} never happened; {proc.label}'s stderr ends: {proc.stderr()[-600:]!r}")
            time.sleep(0.1)


class _NoMentions:
    """The context a further command is judged in: the case's run-time mentions are for its main outcome."""

    def __init__(self, ctx: Ctx):
        self.case, self.mentions = ctx.case, []
        self.expand_mention = ctx.expand_mention


API_TEMPLATE = '''
import json, sys
def report(**fields):
    print("@@RESULT@@" + json.dumps(fields), flush=True)
try:
    import jax, jax.numpy as jnp, numpy as np
    import jaxconv
{setup}
except BaseException as e:
    report(stage="setup", type=type(e).__name__, message=str(e)[:2000])
    sys.exit(3)
try:
{call}
except BaseException as e:
    report(stage="call", type=type(e).__name__, module=type(e).__module__,
           mro=[c.__name__ for c in type(e).__mro__], message=str(e)[:3000])
else:
    report(stage="returned", value=repr(result)[:500])
'''


# --- set-up steps (each takes the case's context) -------------------------------------------------------------------


def copy_run(ctx: Ctx, to: str = "run") -> None:
    """A copy of the finished 8-step tiny run at {scratch}/run."""
    shutil.copytree(ctx.shared.base_run, ctx.scratch / to, symlinks=True)


def write(relative: str, content: bytes | str | Callable[[Ctx], bytes | str]) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        path = ctx.scratch / ctx.expand(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content(ctx) if callable(content) else content
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    step.__name__ = f"write {relative}"
    return step


def append(relative: str, text: str) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        with open(ctx.scratch / relative, "a", encoding="utf-8") as f:
            f.write(text)
    return step


def remove(relative: str) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        path = ctx.scratch / relative
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return step


def mkdir(relative: str) -> Callable[[Ctx], None]:
    return lambda ctx: (ctx.scratch / relative).mkdir(parents=True, exist_ok=True)


def symlink(relative: str, target: str) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        (ctx.scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(ctx.expand(target), ctx.scratch / relative)
    return step


def edit_config(change: Callable[[dict], None]) -> Callable[[Ctx], None]:
    """Changes the copied run's config.json (a damaged or hand-edited config)."""
    def step(ctx: Ctx) -> None:
        path = ctx.run / "config.json"
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config, indent=2))
    return step


def experiment(relative: str, **values) -> Callable[[Ctx], None]:
    """The tiny experiment with ``values`` changed, at {scratch}/relative."""
    return lambda ctx: tiny.write_experiment(ctx.scratch / relative, ctx.shared.data_dir, **values)


def _checkpoint(ctx: Ctx, which: str) -> pathlib.Path:
    steps = ctx.steps()
    return ctx.run / "checkpoints" / str(steps[-1] if which == "latest" else steps[-2])


def _checkpoint_files(directory: pathlib.Path, manifest: bool = False) -> list[pathlib.Path]:
    return [p for p in sorted(directory.rglob("*")) if p.is_file() and (manifest or p.name != "jaxconv_manifest.json")]


def damage_checkpoint(which: str, how: str) -> Callable[[Ctx], None]:
    """Damages the copied run's ``which`` checkpoint ('latest' or 'all'): ``how`` is
    few-bytes (every file, manifest included, becomes b'xx'), truncate (its largest file, to half),
    flip (the last 16 bytes of its largest file), loop (a symlink to itself), file (a regular file),
    dangling (a symlink to nowhere), empty (an empty folder), unsealed-garbage (manifest gone, files zeroed),
    unsealed-truncate (manifest gone, as a run killed before sealing leaves it, then its largest file cut to 1 kB)."""
    def step(ctx: Ctx) -> None:
        targets = [ctx.run / "checkpoints" / str(s) for s in ctx.steps()] if which == "all" else [_checkpoint(ctx, which)]
        for directory in targets:
            files = _checkpoint_files(directory)
            largest = max(files, key=lambda p: p.stat().st_size)
            if how == "few-bytes":
                for path in _checkpoint_files(directory, manifest=True):
                    path.write_bytes(b"xx")
            elif how == "truncate":
                largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
            elif how == "flip":
                data = largest.read_bytes()
                largest.write_bytes(data[:-16] + bytes(b ^ 0xFF for b in data[-16:]))
            elif how == "unsealed-garbage":
                (directory / "jaxconv_manifest.json").unlink()
                for path in files:
                    path.write_bytes(b"\0")
            elif how == "unsealed-truncate":
                (directory / "jaxconv_manifest.json").unlink()
                largest.write_bytes(largest.read_bytes()[:1000])
            else:
                shutil.rmtree(directory)
                if how == "loop":
                    os.symlink(directory.name, directory)
                elif how == "file":
                    directory.write_text("not a checkpoint\n")
                elif how == "dangling":
                    os.symlink("/nonexistent/jaxconv-checkpoint", directory)
                elif how == "empty":
                    directory.mkdir()
                elif how == "elsewhere":
                    shutil.copytree(ctx.shared.base_run / "checkpoints" / directory.name, ctx.scratch / "elsewhere")
                    os.symlink(ctx.scratch / "elsewhere", directory)
                else:
                    raise ValueError(how)
    step.__name__ = f"damage {which} checkpoint: {how}"
    return step


def unfinished_checkpoint_write(ctx: Ctx) -> None:
    """What a SIGKILL in the middle of a checkpoint write leaves: Orbax's temporary folder beside the checkpoints."""
    shutil.copytree(_checkpoint(ctx, "latest"), ctx.run / "checkpoints" / "10.orbax-checkpoint-tmp-1")


MOUNTS: set[pathlib.Path] = set()


def tmpfs(relative: str, size: str, *, read_only: bool = False,
          populate: Callable[[Ctx, pathlib.Path], None] | None = None) -> Callable[[Ctx], None]:
    """A tmpfs of ``size`` at {scratch}/relative (filled by ``populate``, then made read-only if asked);
    unmounted when the case ends. Skips the case where mounting is not allowed."""
    def step(ctx: Ctx) -> None:
        path = ctx.scratch / relative
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode:
            raise Skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
        MOUNTS.add(path)
        ctx.defer(lambda: unmount(path))
        if populate is not None:
            populate(ctx, path)
        if read_only:
            remount(path, "ro")
    return step


def remount(path: pathlib.Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def unmount(path: pathlib.Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            MOUNTS.discard(path)
            return
        time.sleep(0.5)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
    MOUNTS.discard(path)


def run_into(name: str = "run") -> Callable[[Ctx, pathlib.Path], None]:
    return lambda ctx, path: shutil.copytree(ctx.shared.base_run, path / name, symlinks=True)


# --- further checks (each returns a problem or None) ---------------------------------------------------------------


def no_marker(ctx: Ctx) -> str | None:
    marker = ctx.scratch / "PWNED"
    return "the pickle's code ran: the marker file was created" if marker.exists() else None


def evaluated_previous_step(ctx: Ctx) -> str | None:
    previous = ctx.shared.base_steps[-2]
    if ctx.primary and ctx.primary.status == 0 and not re.search(rf"\bstep {previous}\b", ctx.primary.stdout):
        return f"expected the evaluation of the previous checkpoint (step {previous}): {ctx.primary.stdout.strip()[:200]!r}"
    return None


def exists(relative: str) -> Callable[[Ctx], str | None]:
    return lambda ctx: None if (ctx.scratch / relative).exists() else f"{relative} is missing afterwards"


def metrics_all_json(ctx: Ctx) -> str | None:
    path = ctx.run / "metrics.jsonl"
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            return f"metrics.jsonl line {number} is still not JSON after the resume: {line[:80]!r}"
    return None


def stopped_step_is_sealed(ctx: Ctx) -> str | None:
    """A run stopped by a signal names the step it saved; that checkpoint must be there, sealed (checked
    right after the stop)."""
    found = re.search(r"stopped at step (\d+)", ctx.primary.stderr if ctx.primary else "")
    if not found:
        return None
    step = found.group(1)
    if not (ctx.run / "checkpoints" / step / "jaxconv_manifest.json").is_file():
        return f"the run said it saved step {step}, but checkpoints/{step} is not there sealed"
    return None


def no_partial_checkpoints(ctx: Ctx) -> str | None:
    partial = [p.name for p in (ctx.run / "checkpoints").glob("*tmp*")]
    return f"unfinished checkpoint writes left after the resume: {partial}" if partial else None


def last_good_checkpoint_named(ctx: Ctx, workdir: pathlib.Path) -> str | None:
    """A run stopped by a full disk names its last good checkpoint, which is kept (checked right after it stopped)."""
    sealed = [s for s in ctx.steps(workdir) if (workdir / "checkpoints" / str(s) / "jaxconv_manifest.json").is_file()]
    if sealed and ctx.primary and str(sealed[-1]) not in ctx.primary.last_line:
        return f"the message does not name the last good checkpoint (step {sealed[-1]}, kept)"
    return None


# --- actions -----------------------------------------------------------------------------------------------------------


def cli(*args: str, env: dict | None = None, timeout: float = TIMEOUT_S) -> Callable[[Ctx], Outcome]:
    return lambda ctx: ctx.cli(*args, env=env, timeout=timeout)


def api(call: str, setup: str = "") -> Callable[[Ctx], Outcome]:
    return lambda ctx: ctx.api(setup, call)


def resume(ctx: Ctx, *, workdir: str = "{run}", experiment_: str = "{long}", extra: Sequence[str] = (),
           exact: bool = True, mentions: Sequence[Mention] = ()) -> Outcome:
    """Resumes the case's run (with its config.json when it has one, else the experiment; and ``extra``)
    to 4 steps after its latest checkpoint; it must end with exit 0, saying where it resumed."""
    path = pathlib.Path(ctx.expand(workdir))
    step = ctx.latest_step(path) or 0
    args = ("train", "--workdir", workdir) if (path / "config.json").is_file() else \
        ("train", "--config", experiment_, "--workdir", workdir)
    outcome = ctx.cli(*args, *extra, f"--config.num_train_steps={step + 4}", label="resume")
    words = list(mentions) + ([f"resuming from step {step}" if exact else "resuming from step"] if step else [])
    ctx.require(outcome, mentions=words, what="the resumed run")
    return outcome


Moment = Callable[[Ctx, Proc], None]  # waits, in the case's context, for the moment to act on a process


def after_seconds(seconds: float) -> Moment:
    def wait(ctx: Ctx, proc: Proc) -> None:
        time.sleep(max(0.0, seconds - (time.monotonic() - proc.started)))
    wait.__name__ = f"{seconds:.1f} s after the start"
    return wait


def after_line(pattern: str, jitter: float = 0.0) -> Moment:
    def wait(ctx: Ctx, proc: Proc) -> None:
        if not proc.wait_for(pattern):
            raise HarnessError(f"{pattern!r} never appeared on stderr: {proc.stderr()[-600:]!r}")
        time.sleep(ctx.rng.uniform(0, jitter))
    return wait


def after_checkpoint(jitter: float = 0.0) -> Moment:
    def wait(ctx: Ctx, proc: Proc) -> None:
        ctx.wait_until(lambda: ctx.latest_step() is not None, proc, "a first checkpoint")
        time.sleep(ctx.rng.uniform(0, jitter))
    return wait


def interrupt(moment: Moment, signals: Sequence[int], *, gap: float = 0.1, group: bool = False,
              extra: Sequence[str] = (), experiment_: str = "{long}", exact: bool = True,
              inspect: Sequence[Callable[[Ctx], str | None]] = (),
              resume_mentions: Sequence[Mention] = ()) -> Callable[[Ctx], Outcome]:
    """Starts a run, sends ``signals`` (``gap`` s apart) at ``moment``, checks the workdir (``inspect``),
    and resumes it."""
    def action(ctx: Ctx) -> Outcome:
        proc = ctx.start("train", "--config", experiment_, "--workdir", "{run}", *extra, label="run")
        moment(ctx, proc)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(gap)
            proc.send(sig, group=group)
        ctx.primary = outcome = ctx.finish(proc)
        ctx.problems.extend(p for check in inspect if (p := check(ctx)))
        resume(ctx, experiment_=experiment_, extra=extra, exact=exact, mentions=resume_mentions)
        return outcome
    return action


LOCK_HOLDER = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
print("locked", file=sys.stderr, flush=True)
time.sleep(600)
"""


def while_locked(*args: str) -> Callable[[Ctx], Outcome]:
    """`jaxconv ARGS` while another process (not jaxconv) holds {run}/run.lock, as a live run would."""
    def action(ctx: Ctx) -> Outcome:
        holder = ctx.start_python(LOCK_HOLDER, "{run}/run.lock", label="holder")
        if not holder.wait_for("locked", timeout=30):
            raise HarnessError(f"the lock holder did not start: {holder.stderr()[-300:]}")
        ctx.mentions.append(f"pid {holder.pid}")
        outcome = ctx.cli(*args)
        holder.kill()
        ctx.finish(holder)
        return outcome
    return action


def while_training(*args: str, wait_for_checkpoint: bool = False, mention_holder: bool = True) -> Callable[[Ctx], Outcome]:
    """`jaxconv ARGS` while a real run trains in {run}; the run is then stopped with SIGTERM (exit 0)."""
    def action(ctx: Ctx) -> Outcome:
        first = ctx.start("train", "--config", "{long}", "--workdir", "{run}", label="first")
        after_line(PROGRESS)(ctx, first)
        if wait_for_checkpoint:
            after_checkpoint()(ctx, first)
        if mention_holder:
            ctx.mentions.append(f"pid {first.pid}")
        outcome = ctx.cli(*args, label="second")
        first.send(signal.SIGTERM)
        ctx.require(ctx.finish(first), what="the first run (stopped with SIGTERM)")
        return outcome
    return action


def two_runs_at_once(ctx: Ctx) -> Outcome:
    """Two runs started 0.3 s apart on one fresh workdir: one trains, the other is refused naming it."""
    args = ("train", "--config", "{long}", "--workdir", "{run}")
    first = ctx.start(*args, label="first")
    time.sleep(0.3)
    second = ctx.start(*args, label="second")
    deadline = time.monotonic() + 150
    while first.running() and second.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    ended = [p for p in (first, second) if not p.running()]
    if not ended:
        ctx.problems.append("both runs kept going on one workdir for 150 s")
        for p in (first, second):
            p.send(signal.SIGTERM)
        outcome = ctx.finish(second)
        ctx.finish(first)
        return outcome
    refused = ended[0]
    other = second if refused is first else first
    ctx.mentions.append(f"pid {other.pid}")
    outcome = ctx.finish(refused)
    other.send(signal.SIGTERM)
    ctx.require(ctx.finish(other), what="the run that got the workdir (stopped with SIGTERM)")
    return outcome


def takeover_after_sigkill(ctx: Ctx) -> Outcome:
    """A run SIGKILLed after its first checkpoint; a resume takes its lock over."""
    first = ctx.start("train", "--config", "{long}", "--workdir", "{run}", label="first")
    after_checkpoint(jitter=1.0)(ctx, first)
    first.send(signal.SIGKILL, group=True)
    ctx.finish(first)
    step = ctx.latest_step() or 0
    return ctx.cli("train", "--workdir", "{run}", f"--config.num_train_steps={step + 4}", label="resume")


def full_disk_run(workdir: str = "{scratch}/disk/run") -> Callable[[Ctx], Outcome]:
    """A tiny run whose workdir is on a small tmpfs; then the disk is grown and the run resumed."""
    def action(ctx: Ctx) -> Outcome:
        ctx.primary = outcome = ctx.cli("train", "--config", "{tiny}", "--workdir", workdir, label="run")
        if problem := last_good_checkpoint_named(ctx, pathlib.Path(ctx.expand(workdir))):
            ctx.problems.append(problem)
        remount(ctx.scratch / "disk", "size=64M")
        resume(ctx, workdir=workdir, experiment_="{tiny}", exact=False)
        return outcome
    return action


# --- the cases, by class ---------------------------------------------------------------------------------------------------


REGISTRY: dict[str, Callable[[], Iterable[Case]]] = {}


def cases_of(cls: str):
    """Registers a function yielding the cases of class ``cls``."""
    def register(builder: Callable[[], Iterable[Case]]):
        REGISTRY[cls] = builder
        return builder
    return register


TRAIN_TINY = ("train", "--config", "{tiny}", "--workdir", "{run}")
RESUME = ("train", "--workdir", "{run}")


@cases_of("lock")
def lock_cases() -> Iterator[Case]:
    busy = ("in use",)
    yield Case("lock-second-train-while-training", "a second `train` (same experiment) while a run trains in the workdir",
               while_training("train", "--config", "{long}", "--workdir", "{run}"), Usage(busy, tidy=False))
    yield Case("lock-resume-while-training", "`train --workdir` (its config.json) while a run trains there",
               while_training(*RESUME, "--config.num_train_steps=50", wait_for_checkpoint=True), Usage(busy, tidy=False))
    yield Case("lock-other-experiment-while-training", "another experiment on a workdir a run is training in",
               while_training(*TRAIN_TINY), Usage(busy, tidy=False))
    yield Case("lock-eval-while-training", "`eval` of a workdir while its run trains (reading is fine)",
               while_training("eval", "--workdir", "{run}", wait_for_checkpoint=True, mention_holder=False), Clean())
    yield Case("lock-two-started-together", "two identical runs started 0.3 s apart on a fresh workdir",
               two_runs_at_once, Usage(busy, tidy=False))
    yield Case("lock-sigkilled-holder-taken-over", "resume after the run holding the workdir was SIGKILLed",
               takeover_after_sigkill, Succeeds("taking it over", "resuming from step"))
    yield Case("lock-held-resume", "resume while another live process holds run.lock",
               while_locked(*RESUME, MORE_STEPS), Usage(busy), setup=(copy_run,))
    yield Case("lock-held-fresh-config", "`train --config` on a workdir another live process holds",
               while_locked(*TRAIN_TINY, MORE_STEPS), Usage(busy), setup=(copy_run,))
    yield Case("lock-held-new-workdir", "a fresh run on a workdir holding only a run.lock another process holds",
               while_locked(*TRAIN_TINY), Usage(busy), setup=(mkdir("run"),), allowed=("run/run.lock",))
    yield Case("lock-held-report", "`report` of a workdir whose run.lock is held (reading is fine)",
               while_locked("report", "{run}", "--out", "{scratch}/rep"), Clean(), setup=(copy_run,), allowed=("rep*",))
    yield Case("lock-stale-garbage-file", "resume with a run.lock full of garbage, held by no one",
               cli(*RESUME, MORE_STEPS), Succeeds("resuming from step"),
               setup=(copy_run, write("run/run.lock", b"\x00\xffgarbage{")))
    yield Case("lock-stale-other-host", "resume with a run.lock naming a dead process on another host (not locked)",
               cli(*RESUME, MORE_STEPS), Succeeds("resuming from step"),
               setup=(copy_run, write("run/run.lock", json.dumps({"host": "elsewhere", "pid": 999999, "since": 0}))))
    yield Case("lock-file-is-directory", "resume when run.lock is a directory",
               cli(*RESUME, MORE_STEPS), Usage(("run.lock",)), setup=(copy_run, remove("run/run.lock"), mkdir("run/run.lock")))
    yield Case("lock-file-dangling-symlink", "resume when run.lock is a symlink into a missing folder",
               cli(*RESUME, MORE_STEPS), Clean(("run.lock",)),
               setup=(copy_run, remove("run/run.lock"), symlink("run/run.lock", "{scratch}/missing/lock")))


RESUME_REFUSED = [("batch_size", "64"), ("image_size", "24"), ("learning_rate", "0.01"), ("seed", "1"),
                  ("model_options.shortcut", "B"), ("optimizer.name", "adamw"), ("augment", "none"),
                  ("optimizer.weight_decay", "0.001"), ("label_smoothing", "0.1"), ("schedule", "cosine"),
                  ("optimizer.momentum", "0.8"),
                  ("model", "resnet32"), ("dtype", "bfloat16"), ("bn_mode", "local"), ("shapes_train_examples", "512")]
RESUME_PASSES = [("log_every_steps", "1"), ("eval_every_steps", "5"), ("num_train_steps", "12"),
                 ("checkpoint_every_steps", "3"), ("keep_checkpoints", "1"), ("nan_policy", "rollback")]
RESUME_ALLOWED = [("batch_size", ["batch_size"], ["--config.batch_size=64"]),
                  ("learning_rate", ["learning_rate"], ["--config.learning_rate=0.01"]),
                  ("all", ["all"], ["--config.seed=3"]),
                  ("two-keys", ["seed,learning_rate"], ["--config.seed=3", "--config.learning_rate=0.01"]),
                  ("repeated-flag", ["seed", "learning_rate"], ["--config.seed=3", "--config.learning_rate=0.01"])]


def _key_words(key: str) -> Mention:
    return (key, key.split(".")[-1]) if "." in key else key


def _value_words(value: str) -> Mention:
    """A value as given, or as parsed when it is a list ('60,30' is shown as (60, 30)) or a float ('1e308' as 1e+308)."""
    if "," in value:
        return (value, f"({', '.join(value.split(','))})")
    try:
        shown = repr(float(value))
    except ValueError:
        return value
    return (value, shown) if shown != value else value


@cases_of("resume")
def resume_cases() -> Iterator[Case]:
    for key, value in RESUME_REFUSED:
        # another optimizer keeps other state: --allow-change cannot take it, the line points at init_weights instead
        remedy = "init_weights" if key == "optimizer.name" else "--allow-change"
        yield Case(f"resume-refuses-{key}", f"resume (its config.json) with --config.{key}={value}, no --allow-change",
                   cli(*RESUME, f"--config.{key}={value}", MORE_STEPS), Usage((_key_words(key), remedy)),
                   setup=(copy_run,))
    for key, value in [("batch_size", "64"), ("learning_rate", "0.01"), ("seed", "1")]:
        yield Case(f"resume-file-refuses-{key}", f"resume with the experiment file and --config.{key}={value}",
                   cli(*TRAIN_TINY, f"--config.{key}={value}", MORE_STEPS), Usage((key, "--allow-change")),
                   setup=(copy_run,))
    yield Case("resume-file-other-learning-rate", "resume with an experiment file whose learning_rate differs",
               cli("train", "--config", "{scratch}/other.py", "--workdir", "{run}"),
               Usage(("learning_rate", "--allow-change")), setup=(copy_run, experiment("other.py", learning_rate=0.02)))
    for name, keys, overrides in RESUME_ALLOWED:
        flags = [a for key in keys for a in ("--allow-change", key)]
        yield Case(f"resume-allow-change-{name}", f"resume with {' '.join(overrides)} and {' '.join(flags)}",
                   cli(*RESUME, *flags, *overrides, MORE_STEPS), Succeeds("resuming from step 8"),
                   setup=(copy_run,), checks=(exists("run/config_changes.jsonl"),))
    yield Case("resume-allow-change-unchanged", "--allow-change batch_size when batch_size does not change",
               cli(*RESUME, "--allow-change", "batch_size", MORE_STEPS), Succeeds("resuming from step 8"), setup=(copy_run,))
    yield Case("resume-allow-change-misspelt", "--allow-change batchsize (misspelt) --config.batch_size=64",
               cli(*RESUME, "--allow-change", "batchsize", "--config.batch_size=64", MORE_STEPS),
               Usage(("batchsize", "batch_size")), setup=(copy_run,))
    yield Case("resume-allow-change-empty", "--allow-change '' --config.batch_size=64",
               cli(*RESUME, "--allow-change", "", "--config.batch_size=64", MORE_STEPS),
               Usage(("batch_size",)), setup=(copy_run,))
    for key, value in RESUME_PASSES:
        extra = () if key == "num_train_steps" else (MORE_STEPS,)
        yield Case(f"resume-passes-{key}", f"resume with --config.{key}={value} (does not change what the run is)",
                   cli(*RESUME, f"--config.{key}={value}", *extra), Succeeds("resuming from step 8"), setup=(copy_run,))
    yield Case("resume-fewer-steps", "resume with num_train_steps=4, fewer than the 8 done (refused since 2decd9f: "
               "a resume keeps or lengthens a run)", cli(*RESUME, "--config.num_train_steps=4"),
               Usage(("num_train_steps", "already")), setup=(copy_run,))
    for key, value in [("num_train_steps", "0"), ("log_every_steps", "0"), ("image_size", "10000000"),
                       ("model_options.shortcut", "Z"), ("keep_checkpoints", "-1")]:
        more = () if key == "num_train_steps" else (MORE_STEPS,)  # (a later --config.KEY would win)
        yield Case(f"resume-bad-{key}", f"resume with an invalid --config.{key}={value}",
                   cli(*RESUME, *more, f"--config.{key}={value}"), Usage((_key_words(key), value)),
                   setup=(copy_run,))


def _drop(key: str) -> Callable[[dict], None]:
    return lambda config: config.pop(key)


def _set(key: str, value) -> Callable[[dict], None]:
    return lambda config: config.__setitem__(key, value)


CONFIG_DAMAGE = [  # id, set-up (on a copied run), what the message must name
    ("garbage", write("run/config.json", "{not json"), "config.json"),
    ("list", write("run/config.json", "[1, 2]"), "config.json"),
    ("empty", write("run/config.json", ""), "config.json"),
    ("binary", write("run/config.json", bytes(range(256))), "config.json"),
    ("wrong-type", edit_config(_set("batch_size", "big")), "batch_size"),
    ("missing-model", edit_config(_drop("model")), "model"),
    ("unknown-key", edit_config(_set("batchsize", 3)), "batchsize"),
    ("null-model-options", edit_config(_set("model_options", None)), "model_options"),
    ("bool-eval-batch-size", edit_config(_set("eval_batch_size", True)), "eval_batch_size"),
]
REPORT_DAMAGE = [  # id, set-up on a copied run; `report` must still work or say what is wrong
    ("metrics-torn-line", append("run/metrics.jsonl", '{"step": 8, "split": "tra')),
    ("metrics-binary", write("run/metrics.jsonl", bytes(range(256)) * 4)),
    ("metrics-empty", write("run/metrics.jsonl", "")),
    ("metrics-missing", remove("run/metrics.jsonl")),
    ("metrics-not-objects", write("run/metrics.jsonl", '[1, 2]\n"x"\nnull\n')),
    ("metrics-wrong-types", write("run/metrics.jsonl", '{"step": "eight", "split": "test", "top1": "high", "loss": []}\n')),
    ("metrics-nan", append("run/metrics.jsonl", '{"step": 9, "split": "test", "top1": NaN, "loss": Infinity}\n')),
    ("metrics-eval-without-top1", append("run/metrics.jsonl", '{"split": "eval", "step": 9}\n')),
    ("metrics-train-text-step", append("run/metrics.jsonl", '{"step": "x", "split": "train", "loss": 1.0, "top1": 0.5}\n')),
    ("summary-garbage", write("run/summary.json", "{oops")),
    ("config-garbage", write("run/config.json", "{oops")),
]
CHECKPOINT_DAMAGE = ["few-bytes", "truncate", "flip", "unsealed-garbage", "unsealed-truncate", "loop", "file", "dangling",
                     "empty"]


@cases_of("damage")
def damage_cases() -> Iterator[Case]:
    yield Case("damage-summary-missing-resume", "a finished run without summary.json (killed after its last checkpoint)",
               cli(*RESUME), Succeeds("summary"), setup=(copy_run, remove("run/summary.json")),
               checks=(exists("run/summary.json"),))
    yield Case("damage-metrics-torn-resume", "torn last line of metrics.jsonl, then resume",
               cli(*RESUME, MORE_STEPS), Succeeds("metrics.jsonl"),
               setup=(copy_run, append("run/metrics.jsonl", '{"step": 8, "split": "train", "lo')),
               checks=(metrics_all_json,))
    for name, damage in REPORT_DAMAGE:
        yield Case(f"damage-report-{name}", f"`report` of a run with {name.replace('-', ' ')}",
                   cli("report", "{run}", "--out", "{scratch}/rep"), Clean(), setup=(copy_run, damage),
                   allowed=("rep*",))
    for name, damage, word in CONFIG_DAMAGE:
        for command, args in (("eval", ("eval", "--workdir", "{run}")), ("train", (*RESUME, MORE_STEPS))):
            yield Case(f"damage-config-{name}-{command}", f"`{command}` of a run whose config.json is {name}",
                       cli(*args), Usage((word,)), setup=(copy_run, damage))
    for command, args in (("eval", ("eval", "--workdir", "{run}")), ("train", (*RESUME, MORE_STEPS))):
        yield Case(f"damage-config-is-directory-{command}", f"`{command}` of a run whose config.json is a directory",
                   cli(*args), Usage(("config.json",)), setup=(copy_run, remove("run/config.json"), mkdir("run/config.json")))
        yield Case(f"damage-checkpoints-is-file-{command}", f"`{command}` of a run whose checkpoints/ is a file",
                   cli(*args), Usage(("checkpoints",)),
                   setup=(copy_run, remove("run/checkpoints"), write("run/checkpoints", "not a folder")))
    yield Case("damage-all-checkpoints-eval", "`eval` when every checkpoint's files are a few bytes",
               cli("eval", "--workdir", "{run}"), Usage(("checkpoint",)), setup=(copy_run, damage_checkpoint("all", "few-bytes")))
    yield Case("damage-all-checkpoints-train", "resume when every checkpoint's files are a few bytes",
               cli(*RESUME, MORE_STEPS), Succeeds("broken"), setup=(copy_run, damage_checkpoint("all", "few-bytes")))
    for how in CHECKPOINT_DAMAGE:
        setup = (copy_run, damage_checkpoint("latest", how))
        yield Case(f"damage-latest-{how}-eval", f"`eval` when the latest checkpoint is damaged ({how})",
                   cli("eval", "--workdir", "{run}"), Succeeds("checkpoint", tidy=True), setup=setup,
                   checks=(evaluated_previous_step,))
        yield Case(f"damage-latest-{how}-train", f"resume when the latest checkpoint is damaged ({how})",
                   cli(*RESUME, MORE_STEPS), Succeeds("checkpoint", "resuming from step 6"), setup=setup)
    yield Case("damage-latest-symlink-elsewhere-eval", "`eval` when checkpoints/8 is a symlink to a good copy elsewhere",
               cli("eval", "--workdir", "{run}"), Succeeds(tidy=True), setup=(copy_run, damage_checkpoint("latest", "elsewhere")),
               checks=(exists("elsewhere/jaxconv_manifest.json"),))
    yield Case("damage-latest-symlink-elsewhere-train", "resume when checkpoints/8 is a symlink to a good copy elsewhere",
               cli(*RESUME, MORE_STEPS), Succeeds("resuming from step"),
               setup=(copy_run, damage_checkpoint("latest", "elsewhere")),
               checks=(exists("elsewhere/jaxconv_manifest.json"),))
    yield Case("damage-latest-eval-step", "`eval --step` of the damaged latest checkpoint",
               cli("eval", "--workdir", "{run}", "--step", "8"), Usage(("8",)),
               setup=(copy_run, damage_checkpoint("latest", "few-bytes")))
    yield Case("damage-eval-step-missing", "`eval --step 5`, a step that has no checkpoint",
               cli("eval", "--workdir", "{run}", "--step", "5"), Usage(("5",)), setup=(copy_run,))
    yield Case("damage-unfinished-write-left", "resume with an unfinished checkpoint write left by a SIGKILL",
               cli(*RESUME, MORE_STEPS), Succeeds("resuming from step 8"),
               setup=(copy_run, unfinished_checkpoint_write), checks=(no_partial_checkpoints,))
    yield Case("damage-config-other-model-eval", "`eval` of a run whose config.json names a different network",
               cli("eval", "--workdir", "{run}"), Usage(("checkpoint",)),
               setup=(copy_run, edit_config(_set("model_options", {"depths": [2, 2, 2]}))))
    yield Case("damage-latest-export", "`export` of a run whose latest checkpoint is damaged",
               cli("export", "--workdir", "{run}", "--out", "{scratch}/exported", "--format", "jax_export",
                   "--platforms", "cpu"), Clean(), setup=(copy_run, damage_checkpoint("latest", "few-bytes")),
               allowed=("exported*",))


def sigterm_moments() -> list[float]:
    rng = random.Random(SEED)
    return sorted(round(rng.uniform(1.0, 9.0), 1) for _ in range(4))


@cases_of("faults")
def fault_cases() -> Iterator[Case]:
    term = Ends(("SIGTERM",), (0,))
    sealed = (stopped_step_is_sealed,)
    every_step = ("--config.checkpoint_every_steps=1",)
    for seconds in sigterm_moments():
        yield Case(f"faults-sigterm-at-{seconds}s", f"SIGTERM {seconds} s after `train` starts; then resume",
                   interrupt(after_seconds(seconds), [signal.SIGTERM], exact=False, inspect=sealed), term)
    yield Case("faults-sigterm-on-experiment-line", "SIGTERM right after the 'experiment ... -> workdir' line; resume",
               interrupt(after_line("-> workdir", 0.3), [signal.SIGTERM], exact=False), term)
    for n, jitter in enumerate((0.5, 2.0, 4.0), 1):
        yield Case(f"faults-sigterm-training-{n}", f"SIGTERM 0-{jitter} s after the first progress line; then resume",
                   interrupt(after_line(PROGRESS, jitter), [signal.SIGTERM], inspect=sealed),
                   Ends(("SIGTERM", "saved a checkpoint")))
    yield Case("faults-sigterm-while-checkpointing", "SIGTERM during a run that checkpoints every step; resume",
               interrupt(after_line(PROGRESS, 2.0), [signal.SIGTERM], extra=every_step, inspect=sealed),
               term, checks=(no_partial_checkpoints,))
    yield Case("faults-sigterm-twice", "two SIGTERMs 50 ms apart during training; then resume",
               interrupt(after_line(PROGRESS, 1.0), [signal.SIGTERM, signal.SIGTERM], gap=0.05, inspect=sealed), term)
    yield Case("faults-sigterm-resume-start", "SIGTERM while a resume starts (on its 'resuming' line); then resume",
               interrupt(after_line("resuming", 0.2), [signal.SIGTERM], experiment_="{tiny}", exact=False,
                         extra=("--config.num_train_steps=5000",)),
               term, setup=(copy_run,))
    yield Case("faults-sigint-once", "one Ctrl-C (SIGINT to the process group) during training; then resume",
               interrupt(after_line(PROGRESS, 1.0), [signal.SIGINT], group=True, inspect=sealed),
               Ends(("Ctrl-C",), (0, 130)))
    for name, moment, extra in (("training", after_line(PROGRESS, 1.0), ()),
                                ("starting", after_line("-> workdir", 0.2), ()),
                                ("checkpointing", after_line(PROGRESS, 1.0), every_step)):
        # While starting, one Ctrl-C already stops the run before its first step (exit 0, since 19e00da); the second
        # may come once that stop is done, or meet the first in one call of CPython's handler (the main thread in C).
        statuses = (0, 130, -signal.SIGINT) if name == "starting" else (130, -signal.SIGINT)
        yield Case(f"faults-sigint-twice-{name}", f"two quick Ctrl-Cs (100 ms apart) while {name}; then resume",
                   interrupt(moment, [signal.SIGINT, signal.SIGINT], group=True, extra=extra, exact=False),
                   Ends((("interrupted", "stopped"),), statuses),
                   checks=(no_partial_checkpoints,) if extra else ())
    killed = Ends(statuses=(-signal.SIGKILL,))
    yield Case("faults-sigkill-training", "SIGKILL after the first checkpoint; then resume",
               interrupt(after_checkpoint(1.0), [signal.SIGKILL], group=True, exact=False,
                         resume_mentions=("taking it over",)), killed)
    yield Case("faults-sigkill-while-checkpointing", "SIGKILL during a run that checkpoints every step; then resume",
               interrupt(after_line(PROGRESS, 2.0), [signal.SIGKILL], group=True, exact=False, extra=every_step),
               killed, checks=(no_partial_checkpoints,))
    data_gen = ("--config.data_dir={scratch}/data", "--config.shapes_train_examples=6000", "--config.num_train_steps=2")
    for name, signals, expect in (("sigkill", [signal.SIGKILL], killed),
                                  ("sigint-twice", [signal.SIGINT, signal.SIGINT], Ends(statuses=(130, -signal.SIGINT)))):
        yield Case(f"faults-{name}-generating-data", f"{name} while the dataset is generated; then run again",
                   interrupt(after_line("generating", 1.0), signals, group=True, extra=data_gen,
                             experiment_="{tiny}", exact=False), expect)
    for size in ("1200K", "300K", "48K"):
        yield Case(f"faults-full-disk-{size}", f"train with the workdir on a {size} tmpfs; then grow it and resume",
                   full_disk_run(), Fails((("space", "full"),)), setup=(tmpfs("disk", size),))
    yield Case("faults-full-disk-dataset", "generate the dataset into a 200K tmpfs data_dir",
               cli(*TRAIN_TINY, "--config.data_dir={scratch}/disk/data"), Fails((("space", "full"),), tidy=True),
               setup=(tmpfs("disk", "200K"),), allowed=("disk/data", "disk/data/downloads*"))
    yield Case("faults-full-disk-report", "`report` into a 16K tmpfs",
               cli("report", "{run}", "--out", "{scratch}/disk/rep"), Fails((("space", "full"),), tidy=True),
               setup=(copy_run, tmpfs("disk", "16K")))
    yield Case("faults-full-disk-export", "`export` into a 64K tmpfs",
               cli("export", "--workdir", "{run}", "--out", "{scratch}/disk/exported"), Fails((("space", "full"),), tidy=True),
               setup=(copy_run, tmpfs("disk", "64K")))
    read_only = ("read-only", "not writable", "permission")
    yield Case("faults-read-only-new-workdir", "train into a new workdir on a read-only filesystem",
               cli(*TRAIN_TINY[:-1], "{scratch}/ro/run"), Usage((read_only,)), setup=(tmpfs("ro", "1M", read_only=True),))
    yield Case("faults-read-only-resume", "resume a run that sits on a read-only filesystem",
               cli("train", "--workdir", "{scratch}/ro/run", MORE_STEPS), Usage((read_only,)),
               setup=(tmpfs("ro", "16M", read_only=True, populate=run_into()),))
    yield Case("faults-read-only-eval", "`eval` of a run on a read-only filesystem (needs no writes)",
               cli("eval", "--workdir", "{scratch}/ro/run"), Succeeds(tidy=True),
               setup=(tmpfs("ro", "16M", read_only=True, populate=run_into()),))


EXPERIMENT_MISTAKES = [  # id, the experiment file's text, what the message must name
    ("syntax-error", "def get_config(:\n    return None\n", ("bad.py",)),
    ("raises", "def get_config():\n    return 1 / 0\n", ("bad.py",)),
    ("no-get_config", "X = 1\n", ("get_config",)),
    ("returns-dict", "def get_config():\n    return {'batch_size': 32}\n", ("ConfigDict",)),
    ("returns-none", "def get_config():\n    pass\n", ("ConfigDict",)),
    ("empty-file", "", ("get_config",)),
    ("imports-missing-module", "import not_a_module_xyz\n", ("not_a_module_xyz",)),
    ("unknown-key", "{base}    c.batchsize = 32\n    return c\n", ("batchsize",)),
    ("wrong-type-batch_size", "{base}    c.batch_size = '32'\n    return c\n", ("batch_size",)),
    ("wrong-type-learning_rate", "{base}    c.learning_rate = 'fast'\n    return c\n", ("learning_rate",)),
    ("wrong-type-image_size", "{base}    c.image_size = 16.5\n    return c\n", ("image_size",)),
    ("wrong-type-model_options", "{base}    c.model_options = 'depths=1'\n    return c\n", ("model_options",)),
    ("wrong-type-decay_epochs", "{base}    c.schedule = 'step'\n    c.decay_epochs = 'soon'\n    return c\n",
     ("decay_epochs",)),
    ("wrong-type-imports", "{base}    c.imports = 5\n    return c\n", ("imports",)),
]
EXPERIMENT_BASE = ("from jaxconv.train.config import base_config\n\n\ndef get_config():\n    c = base_config()\n"
                   "    c.num_train_steps = 2\n")

VALUE_MISTAKES = [  # key, value: given as --config.KEY=VALUE to the tiny experiment, on a fresh workdir
    ("image_size", "10000000"), ("image_size", "0"), ("image_size", "-16"), ("image_size", "abc"), ("image_size", "1"),
    ("image_size", "16.5"), ("batch_size", "0"), ("batch_size", "-32"), ("batch_size", "1000"),
    ("batch_size", "99999999999999999999999"), ("batch_size", "abc"), ("batch_size", "3.5"),
    ("learning_rate", "nan"), ("learning_rate", "inf"), ("learning_rate", "-0.1"), ("learning_rate", "abc"),
    ("learning_rate", "1e308"), ("warmup_epochs", "1e300"), ("warmup_epochs", "1e30"), ("model_options.widths", "(0, 0, 0)"),
    ("num_train_steps", "0"), ("num_train_steps", "-5"), ("num_train_steps", "99999999999999999999999"),
    ("num_epochs", "-1"), ("model_options.shortcut", "Z"), ("model_options.depths", "abc"),
    ("model_options.bogus", "1"), ("model_options.num_classes", "5"), ("model", "resnt20"), ("optimizer.name", "adam"),
    ("schedule", "linear"), ("augment", "mixup"), ("dtype", "float16"), ("parallel", "dp"), ("bn_mode", "global"),
    ("eval_crop", "corner"), ("nan_policy", "ignore"), ("optimizer.weight_decay", "-1"), ("label_smoothing", "1.5"),
    ("optimizer.grad_clip_norm", "-1"), ("ema_decay", "2"), ("warmup_epochs", "-1"), ("optimizer.momentum", "x"),
    ("optimizer.nesterov", "maybe"),
    ("keep_checkpoints", "0"), ("log_every_steps", "0"), ("eval_every_steps", "-1"), ("checkpoint_every_steps", "0"),
    ("seed", "-1"), ("seed", "1.5"), ("eval_batch_size", "0"), ("eval_examples", "-1"),
    ("shapes_train_examples", "0"), ("shapes_test_examples", "-1"), ("dataset", "nope"), ("dataset", "folder"),
    ("freeze", "nonexistent_module"), ("init_weights", "/nonexistent/weights.pth"), ("batchsize", "32"),
    ("model_option.depths", "1"), ("decay_epochs", "60,30"),
]
A_FILE = (write("afile", "x"),)
PATH_MISTAKES = [  # id, extra train arguments, set-up steps, what the message must name
    ("workdir-is-file", ("--workdir", "{scratch}/afile"), A_FILE, ("afile",)),
    ("workdir-under-file", ("--workdir", "{scratch}/afile/run"), A_FILE, ("afile",)),
    ("workdir-dangling-symlink", ("--workdir", "{scratch}/link"), (symlink("link", "/nonexistent/jaxconv-run"),),
     ("link",)),
    ("workdir-symlink-to-file", ("--workdir", "{scratch}/link"), (*A_FILE, symlink("link", "{scratch}/afile")), ("link",)),
    ("data_dir-is-file", ("--workdir", "{run}", "--config.data_dir={scratch}/afile"), A_FILE, (("data_dir", "afile"),)),
    ("data_dir-under-file", ("--workdir", "{run}", "--config.data_dir={scratch}/afile/data"), A_FILE,
     (("data_dir", "afile"),)),
    ("data_dir-empty-string", ("--workdir", "{run}", "--config.data_dir="), (), ("data_dir",)),
]
OUTPUT_MISTAKES = [  # id, command, set-up, what the message must name
    ("report-out-under-file", ("report", "{run}", "--out", "{scratch}/afile/rep"), write("afile", "x"), ("afile",)),
    ("report-out-is-file", ("report", "{run}", "--out", "{scratch}/afile"), write("afile", "x"), ("afile",)),
    ("report-out-read-only", ("report", "{run}", "--out", "{scratch}/ro/rep"), tmpfs("ro", "1M", read_only=True),
     (("read-only", "not writable", "permission"),)),
    ("export-out-under-file", ("export", "--workdir", "{run}", "--out", "{scratch}/afile/exported"), write("afile", "x"),
     ("afile",)),
    ("export-out-is-file", ("export", "--workdir", "{run}", "--out", "{scratch}/afile"), write("afile", "x"), ("afile",)),
    ("export-out-read-only", ("export", "--workdir", "{run}", "--out", "{scratch}/ro/exported"),
     tmpfs("ro", "1M", read_only=True), (("read-only", "not writable", "permission"),)),
    ("export-out-not-empty", ("export", "--workdir", "{run}", "--out", "{scratch}/full"), write("full/x", "x"), ("full",)),
    ("compare-out-under-file", ("compare", "resnet20", "--no-speed", "--out", "{scratch}/afile/cmp"), write("afile", "x"),
     ("afile",)),
    ("report-out-deep-bad-x", ("report", "{run}", "--out", "{scratch}/new/deeper/rep", "--x", "bogus_key"),
     write("afile", "x"), ("bogus_key",)),
]


@cases_of("config")
def config_cases() -> Iterator[Case]:
    for name, text, words in EXPERIMENT_MISTAKES:
        body = text.replace("{base}", EXPERIMENT_BASE)
        yield Case(f"config-experiment-{name}", f"an experiment file: {name.replace('-', ' ')}",
                   cli("train", "--config", "{scratch}/bad.py", "--workdir", "{run}"), Usage(words),
                   setup=(write("bad.py", body),))
    yield Case("config-experiment-missing", "--config names no file", cli("train", "--config", "{scratch}/nope.py",
               "--workdir", "{run}"), Usage(("nope.py",)))
    yield Case("config-experiment-is-directory", "--config names a directory",
               cli("train", "--config", "{scratch}/exp.py", "--workdir", "{run}"), Usage(("exp.py",)),
               setup=(mkdir("exp.py"),))
    yield Case("config-experiment-binary", "--config names a binary file", cli("train", "--config", "{scratch}/bin.py",
               "--workdir", "{run}"), Usage(("bin.py",)), setup=(write("bin.py", bytes(range(256)) * 8),))
    yield Case("config-experiment-unknown-variant", "--config FILE:VARIANT for a file without variants",
               cli("train", "--config", "{tiny}:full", "--workdir", "{run}"), Usage(("full",)))
    for key, value in VALUE_MISTAKES:
        yield Case(f"config-value-{key}={value}", f"train with --config.{key}={value}",
                   cli(*TRAIN_TINY, f"--config.{key}={value}"), Usage((_key_words(key), _value_words(value))))
    yield Case("config-override-without-value", "--config.batch_size given last, without a value",
               cli(*TRAIN_TINY, "--config.batch_size"), Usage(("batch_size",)))
    yield Case("config-override-not-config", "--learning-rate 0.1 (not a --config.KEY)",
               cli(*TRAIN_TINY, "--learning-rate", "0.1"), Usage(("--learning-rate",)))
    yield Case("config-override-empty-key", "--config.=3", cli(*TRAIN_TINY, "--config.=3"), Usage(("config.",)))
    for name, args, steps, words in PATH_MISTAKES:
        yield Case(f"config-{name}", f"train with {' '.join(args)}", cli("train", "--config", "{tiny}", *args),
                   Usage(words), setup=steps)
    for name, args, step, words in OUTPUT_MISTAKES:
        yield Case(f"config-{name}", f"{args[0]} with {' '.join(args[1:])}", cli(*args), Usage(words),
                   setup=(copy_run, step))
    yield Case("config-data_dir-read-only", "train with a data_dir on a read-only filesystem (nothing generated yet)",
               cli(*TRAIN_TINY, "--config.data_dir={scratch}/ro/data"), Usage(("data",)),
               setup=(tmpfs("ro", "1M", read_only=True),))
    yield Case("config-summary-huge-batch", "summary --batch-size 99999999999999999999999",
               cli("summary", "resnet50", "--batch-size", "99999999999999999999999"), Usage(("--batch-size",)))


CLASSES = ("circle", "square", "zebra")


def folder(root: str = "imgs", classes: Sequence[str] = CLASSES, per_class: int = 16,
           color_type: int = 2) -> Callable[[Ctx], None]:
    """An image folder dataset: root/<class>/<n>.png, 20x20 noise."""
    def step(ctx: Ctx) -> None:
        for c, name in enumerate(classes):
            directory = ctx.scratch / root / name
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (directory / f"{i}.png").write_bytes(png_bytes(20, 20, seed=100 * c + i, color_type=color_type))
    return step


FOLDER_TRAIN = (*TRAIN_TINY, "--config.dataset=folder", "--config.folder={scratch}/imgs", "--config.num_train_steps=2",
                "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2", "--config.data_dir={scratch}/data")


def _only_garbage(ctx: Ctx) -> None:
    zebra = ctx.scratch / "imgs" / "zebra"
    for path in zebra.iterdir():
        path.write_bytes(b"this is not a png\n")


def _dangling_links(ctx: Ctx) -> None:
    for i in range(3):
        os.symlink(f"/nonexistent/jaxconv-{i}.png", ctx.scratch / "imgs" / "circle" / f"gone{i}.png")


def _bad_files(ctx: Ctx) -> None:
    square = ctx.scratch / "imgs" / "square"
    (square / "zero.png").write_bytes(b"")
    (square / "cut.png").write_bytes(png_bytes(20, 20, 7)[:40])
    (square / "notes.txt").write_text("hello")
    (square / "dir.png").mkdir()


SHAPES_DIR = "data/jaxconv_shapes/16px_256_40/1.0.0"  # the tiny dataset, in a copy of the shared data dir


def copy_shared_data(ctx: Ctx) -> None:
    shutil.copytree(ctx.shared.data_dir, ctx.scratch / "data")


def damage_train_records(how: str) -> Callable[[Ctx], None]:
    """The copied dataset's train records: 'remove'd (a generation killed half-way) or overwritten with 'garbage'."""
    def step(ctx: Ctx) -> None:
        for path in (ctx.scratch / SHAPES_DIR).glob("*train.array_record*"):
            path.unlink() if how == "remove" else path.write_bytes(b"garbage" * 100)
    return step


@cases_of("data")
def data_cases() -> Iterator[Case]:
    ok_left = ("run*", "data*")
    yield Case("data-folder-class-all-undecodable", "a folder dataset whose class 'zebra' holds only undecodable files",
               cli(*FOLDER_TRAIN), Usage(("zebra",)), setup=(folder(), _only_garbage))
    yield Case("data-folder-one-class", "a folder dataset with a single class",
               cli(*FOLDER_TRAIN), Usage(("class",)), setup=(folder(classes=("circle",)),))
    yield Case("data-folder-dangling-symlinks", "a folder dataset with dangling symlinks among the images",
               cli(*FOLDER_TRAIN), Succeeds("skipped"), setup=(folder(), _dangling_links), allowed=ok_left)
    yield Case("data-folder-bad-files", "empty, truncated, non-image files and a folder named .png among the images",
               cli(*FOLDER_TRAIN), Succeeds("skipped"), setup=(folder(), _bad_files), allowed=ok_left)
    yield Case("data-folder-class-symlink-loop", "a class folder that is a symlink to the dataset root",
               cli(*FOLDER_TRAIN), Clean(), setup=(folder(), symlink("imgs/loop", "{scratch}/imgs")), allowed=ok_left)
    yield Case("data-folder-grayscale", "a folder dataset of grayscale PNGs", cli(*FOLDER_TRAIN), Succeeds(),
               setup=(folder(color_type=0),), allowed=ok_left)
    yield Case("data-folder-rgba", "a folder dataset of RGBA PNGs", cli(*FOLDER_TRAIN), Succeeds(),
               setup=(folder(color_type=6),), allowed=ok_left)
    huge = png_from_chunks(struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0), zlib.compress(b"\0" * 1000))
    yield Case("data-folder-huge-png-header", "a PNG whose header claims 30000x30000 pixels", cli(*FOLDER_TRAIN),
               Clean(), setup=(folder(), write("imgs/circle/huge.png", huge)), allowed=ok_left)
    yield Case("data-folder-non-utf8-name", "an image whose file name is not UTF-8", cli(*FOLDER_TRAIN), Clean(),
               setup=(folder(), write("imgs/circle/" + os.fsdecode(b"\xff\xfe.png"), png_bytes(20, 20, 3))),
               allowed=ok_left)
    yield Case("data-folder-missing", "--config.folder names nothing", cli(*FOLDER_TRAIN), Usage(("imgs",)))
    yield Case("data-folder-is-file", "--config.folder names a file", cli(*FOLDER_TRAIN), Usage(("imgs",)),
               setup=(write("imgs", "x"),))
    yield Case("data-folder-empty", "--config.folder names an empty directory", cli(*FOLDER_TRAIN), Usage(("imgs",)),
               setup=(mkdir("imgs"),))
    yield Case("data-folder-no-class-folders", "images directly in the root, no class folders", cli(*FOLDER_TRAIN),
               Usage(("class",)), setup=(write("imgs/a.png", png_bytes(20, 20, 1)), write("imgs/b.png", png_bytes(20, 20, 2))))
    yield Case("data-folder-val-unknown-class", "train/ and val/ where val has a class train lacks", cli(*FOLDER_TRAIN),
               Usage(("dog",)), setup=(folder("imgs/train"), folder("imgs/val", classes=("circle", "dog"), per_class=2)))
    yield Case("data-folder-val-empty", "train/ and an empty val/", cli(*FOLDER_TRAIN), Usage(("val",)),
               setup=(folder("imgs/train"), mkdir("imgs/val")))
    own_data = ("--config.data_dir={scratch}/data",)
    yield Case("data-shapes-half-written", "the dataset folder of a generation killed half-way (no train records)",
               cli(*TRAIN_TINY, *own_data), Clean(), setup=(copy_shared_data, damage_train_records("remove")),
               allowed=ok_left)
    yield Case("data-shapes-corrupt-records", "the dataset's train records overwritten with garbage",
               cli(*TRAIN_TINY, *own_data), Clean(), setup=(copy_shared_data, damage_train_records("garbage")),
               allowed=ok_left)
    yield Case("data-shapes-info-damaged", "the dataset's dataset_info.json damaged",
               cli(*TRAIN_TINY, *own_data), Clean(),
               setup=(copy_shared_data, write(f"{SHAPES_DIR}/dataset_info.json", "{oops")), allowed=ok_left)
    for name in ("mnist", "imagenet2012"):
        yield Case(f"data-{name}-unavailable", f"train on {name}, which is not downloaded (no network)",
                   cli(*TRAIN_TINY, f"--config.dataset={name}", "--config.data_dir={scratch}/data"),
                   Usage((name,)), allowed=("data", "data/downloads*"))


RESNET = "m = jaxconv.get_model('resnet20')\nv = m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))"
R18 = "{fixtures}/resnet18-zeros.safetensors"
API_CASES = [  # id, set-up code, call (sets `result`), what the message must name[, exception types]
    ("apply-1-channel", RESNET, "result = m.apply(v, jnp.zeros((1, 32, 32, 1)), train=False)", ("channel",)),
    ("apply-nchw", RESNET, "result = m.apply(v, jnp.zeros((1, 3, 32, 32)), train=False)", (("NHWC", "channels last"),)),
    ("init-nchw", "m = jaxconv.get_model('resnet20')", "result = m.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)))",
     (("NHWC", "channels last", "channel"),)),
    ("apply-3d", RESNET, "result = m.apply(v, jnp.zeros((32, 32, 3)), train=False)", (("NHWC", "(N, H, W, C)", "4-D", "batch", "rank"),)),
    ("apply-5d", RESNET, "result = m.apply(v, jnp.zeros((1, 1, 32, 32, 3)), train=False)",
     (("NHWC", "(N, H, W, C)", "4-D", "batch", "rank"),)),
    ("apply-string", RESNET, "result = m.apply(v, 'a cat', train=False)", ()),
    # Variables that do not fit the module: Flax's own documented errors (flax.errors, each with its page)
    # name the missing collection or parameter; jaxconv models are plain Flax modules and keep them.
    ("apply-params-only", RESNET, "result = m.apply({'params': v['params']}, jnp.zeros((1, 32, 32, 3)), train=False)",
     ("batch_stats",), (*API_ERRORS, "FlaxError")),
    ("apply-other-model-variables", RESNET, "result = jaxconv.get_model('resnet32').apply(v, jnp.zeros((1, 32, 32, 3)))",
     ("parameter",), (*API_ERRORS, "FlaxError")),
    ("init-alexnet-224", "m = jaxconv.get_model('alexnet')",
     "result = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))", ("224",)),
    ("get_model-typo", "", "result = jaxconv.get_model('resnt50')", ("resnt50", "resnet50")),
    ("get_model-int", "", "result = jaxconv.get_model(5)", (("name", "str", "model"),)),
    ("get_model-none", "", "result = jaxconv.get_model(None)", (("name", "str", "model"),)),
    ("get_model-num_classes-0", "", "result = jaxconv.get_model('resnet20', num_classes=0)", ("num_classes",)),
    ("get_model-num_classes-negative", "", "result = jaxconv.get_model('resnet20', num_classes=-10)", ("num_classes",)),
    ("get_model-num_classes-str", "", "result = jaxconv.get_model('resnet20', num_classes='ten')", ("num_classes",)),
    ("get_model-num_classes-float", "", "result = jaxconv.get_model('resnet20', num_classes=2.5)", ("num_classes",)),
    ("get_model-unknown-option", "", "result = jaxconv.get_model('resnet50', bogus=1)", ("bogus",)),
    ("get_model-shortcut", "", "result = jaxconv.get_model('resnet50', shortcut='Z')", ("shortcut",)),
    ("get_model-variant", "", "result = jaxconv.get_model('resnet50', variant='v3')", ("variant",)),
    ("get_model-dtype", "", "result = jaxconv.get_model('resnet20', dtype='float33')", ("dtype",)),
    ("get_model-norm", "", "result = jaxconv.get_model('resnet20', norm='banana')", ("norm",)),
    ("get_model-act", "", "result = jaxconv.get_model('resnet20', act='banana')", ("banana",)),
    ("get_model-drop_path_rate", "", "result = jaxconv.get_model('resnet50', drop_path_rate=2.0)", ("drop_path_rate",)),
    ("get_model-depths-zero", "",
     "result = jaxconv.get_model('resnet20', depths=(0, 0, 0)).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))",
     (("depths", "depth"),)),
    ("get_model-weights-unknown-tag", "",
     "result = jaxconv.get_model('resnet18', weights='NOPE', weights_dir='{scratch}/w', download=False)", ("NOPE",)),
    ("get_model-weights-offline", "",
     "result = jaxconv.get_model('resnet18', weights='IMAGENET1K_V1', weights_dir='{scratch}/w', download=False)",
     (("http", "download"),), ("ValueError", "TypeError", "OSError")),
    ("list_models-int", "", "result = jaxconv.list_models(5)", ("pattern",)),
    ("list_models-list", "", "result = jaxconv.list_models(['resnet*'])", ("pattern",)),
    ("list_models-bytes", "", "result = jaxconv.list_models(b'resnet*')", ("pattern",)),
    ("model_info-unknown", "", "result = jaxconv.model_info('nope')", ("nope",)),
    ("model_info-int", "", "result = jaxconv.model_info(5)", (("name", "str", "model"),)),
    ("summary-int", "", "result = jaxconv.summary(5)", ("model",)),
    ("summary-unknown", "", "result = jaxconv.summary('nope')", ("nope",)),
    ("summary-image_size-0", "", "result = jaxconv.summary('resnet50', image_size=0)", (("image_size", "image size"),)),
    ("summary-image_size-negative", "", "result = jaxconv.summary('resnet50', image_size=-224)", (("image_size", "image size"),)),
    ("summary-image_size-str", "", "result = jaxconv.summary('resnet50', image_size='big')", (("image_size", "image size"),)),
    ("summary-image_size-1-tuple", "", "result = jaxconv.summary('resnet50', image_size=(224,))", (("image_size", "image size"),)),
    ("summary-image_size-zero-width", "", "result = jaxconv.summary('resnet50', image_size=(224, 0))", (("image_size", "image size"),)),
    ("summary-batch_size-0", "", "result = jaxconv.summary('resnet50', batch_size=0)", (("batch_size", "batch size"),)),
    ("summary-batch_size-str", "", "result = jaxconv.summary('resnet50', batch_size='8')", (("batch_size", "batch size"),)),
    ("summary-in_channels-0", "", "result = jaxconv.summary('resnet50', in_channels=0)", ("in_channels",)),
    ("summary-num_classes-0", "", "result = jaxconv.summary('resnet50', num_classes=0)", ("num_classes",)),
    ("summary-dtype-int8", "", "result = jaxconv.summary('resnet50', dtype='int8')", ("dtype",)),
    ("summary-alexnet-224", "", "result = jaxconv.summary('alexnet', image_size=224)", ("224",)),
    ("load_pretrained-none-path", "", "result = jaxconv.load_pretrained('resnet18', None)", ("path",)),
    ("load_pretrained-int-path", "", "result = jaxconv.load_pretrained('resnet18', 5)", ("path",)),
    ("load_pretrained-missing-file", "", "result = jaxconv.load_pretrained('resnet18', '{scratch}/nope.safetensors')",
     ("nope.safetensors",), ("ValueError", "TypeError", "FileNotFoundError")),
    ("load_pretrained-directory", "", "result = jaxconv.load_pretrained('resnet18', '{scratch}')", ("{scratch}",),
     ("ValueError", "TypeError", "OSError")),
    ("load_pretrained-text-file", "", "result = jaxconv.load_pretrained('resnet18', '{scratch}/notes.txt')",
     ("notes.txt",)),
    ("load_pretrained-empty-file", "", "result = jaxconv.load_pretrained('resnet18', '{scratch}/empty.safetensors')",
     ("empty.safetensors",)),
    ("load_pretrained-garbage", "", "result = jaxconv.load_pretrained('resnet18', '{scratch}/garbage.safetensors')",
     ("garbage.safetensors",)),
    ("load_pretrained-huge-header", "", "result = jaxconv.load_pretrained('resnet18', '{scratch}/huge.safetensors')",
     ("huge.safetensors",)),
    ("load_pretrained-int8", "", "result = jaxconv.load_pretrained('resnet18', '{fixtures}/resnet18-int8.safetensors')",
     (("int8", "I8", "dtype"),)),
    ("load_pretrained-bool", "", "result = jaxconv.load_pretrained('resnet18', '{fixtures}/resnet18-bool.safetensors')",
     (("bool", "dtype"),)),
    ("load_pretrained-wrong-shapes", "",
     "result = jaxconv.load_pretrained('resnet18', '{fixtures}/resnet18-shapes.safetensors')", ("shape",)),
    ("load_pretrained-missing-keys", "",
     "result = jaxconv.load_pretrained('resnet18', '{fixtures}/resnet18-head.safetensors')", ("missing",)),
    ("load_pretrained-unconvertible-model", "", f"result = jaxconv.load_pretrained('resnet20', '{R18}')", ("resnet20",)),
    ("load_pretrained-unknown-model", "", f"result = jaxconv.load_pretrained('nope', '{R18}')", ("nope",)),
    ("load_pretrained-int-model", "", f"result = jaxconv.load_pretrained(5, '{R18}')", (("name", "str", "model"),)),
    ("register-existing-name", "import flax.linen as nn",
     "result = jaxconv.register('resnet50', nn.Dense, image_size=32)", (("resnet50", "already registered"),)),
    ("register-int-name", "import flax.linen as nn", "result = jaxconv.register(5, nn.Dense, image_size=32)", ("name",)),
    ("register-not-callable", "", "result = jaxconv.register('mine', 'not a factory', image_size=32)", ("factory",)),
    ("register-a-function", "", "result = jaxconv.register('mine', lambda **kw: None, image_size=32)",
     (("factory", "Flax module class"),)),
    ("register-image_size-0", "import flax.linen as nn", "result = jaxconv.register('mine', nn.Dense, image_size=0)",
     ("image_size",)),
]
API_MAY_RETURN = [  # id, call: huge but well-formed requests, which may be answered or refused
    ("summary-image_size-huge", "result = jaxconv.summary('resnet50', image_size=10_000_000).params"),
    ("summary-batch_size-huge", "result = jaxconv.summary('resnet50', batch_size=10**30).params"),
]


def api_fixtures(ctx: Ctx) -> None:
    """The files the API cases read (made in the scratch directory, or once in the shared fixtures)."""
    (ctx.scratch / "notes.txt").write_text("not weights\n")
    (ctx.scratch / "empty.safetensors").write_bytes(b"")
    (ctx.scratch / "garbage.safetensors").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(4096)))
    (ctx.scratch / "huge.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")


@cases_of("api")
def api_cases() -> Iterator[Case]:
    fixtures = ("notes.txt", "empty.safetensors", "garbage.safetensors", "huge.safetensors")
    for name, setup, call, words, *types in API_CASES:
        yield Case(f"api-{name}", call, api(call, setup), ApiError(words, types[0] if types else API_ERRORS),
                   setup=(api_fixtures, *weight_fixtures(call)), allowed=fixtures)
    for name, call in API_MAY_RETURN:
        yield Case(f"api-{name}", call, api(call), ApiError(("image_size" if "image" in name else "batch_size",),
                                                            may_return=True))


PICKLE_FILES = [("pth", "evil.pth", evil_pickle), ("pth-zip", "evil.pth", evil_torch_zip),
                ("pt", "evil.pt", evil_pickle), ("bin", "evil.bin", evil_pickle), ("ckpt", "evil.ckpt", evil_torch_zip),
                ("safetensors-suffix", "evil.safetensors", evil_pickle), ("no-suffix", "evil", evil_pickle)]


def evil_file(name: str, make: Callable[[pathlib.Path], bytes]) -> Callable[[Ctx], None]:
    return write(name, lambda ctx: make(ctx.scratch / "PWNED"))


def init_weights_experiment(ctx: Ctx) -> None:
    (ctx.scratch / "finetune.py").write_text(
        "from jaxconv.train.config import base_config\n\n\ndef get_config():\n    c = base_config()\n"
        f"    c.data_dir = {str(ctx.shared.data_dir)!r}\n    c.model = 'resnet18'\n    c.image_size = 32\n"
        f"    c.shapes_train_examples = 256\n    c.shapes_test_examples = 40\n    c.batch_size = 32\n"
        f"    c.num_train_steps = 2\n    c.init_weights = {str(ctx.scratch / 'evil.pth')!r}\n    return c\n")


def pickle_in_checkpoint(ctx: Ctx) -> None:
    latest = _checkpoint(ctx, "latest")
    for name in ("_CHECKPOINT_METADATA", "state/_METADATA", "meta/metadata"):
        (latest / name).write_bytes(evil_pickle(ctx.scratch / "PWNED"))


@cases_of("pickle")
def pickle_cases() -> Iterator[Case]:
    refused = (no_marker,)
    image = write("cat.png", png_bytes(32, 32, 5))
    for name, file, make in PICKLE_FILES:
        yield Case(f"pickle-predict-{name}", f"`predict --weights {file}` whose pickle would run code",
                   cli("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", f"{{scratch}}/{file}"),
                   Usage((file,)), setup=(image, evil_file(file, make)), checks=refused)
    for name, file, make in PICKLE_FILES[:2]:
        yield Case(f"pickle-load_pretrained-{name}", f"load_pretrained('resnet18', {file}) whose pickle would run code",
                   api(f"result = jaxconv.load_pretrained('resnet18', '{{scratch}}/{file}')"),
                   ApiError((file,), ("ValueError", "TypeError", "ImportError", "OSError")),
                   setup=(evil_file(file, make),), checks=refused)
    yield Case("pickle-get_model-weights-file", "get_model('resnet18', weights=<a .pth whose pickle would run code>)",
               api("result = jaxconv.get_model('resnet18', weights='{scratch}/evil.pth', download=False)"),
               ApiError(("evil.pth",), ("ValueError", "TypeError", "ImportError", "OSError")),
               setup=(evil_file("evil.pth", evil_pickle),), checks=refused)
    yield Case("pickle-export-weights", "`export --model resnet18 --weights evil.pth`",
               cli("export", "--model", "resnet18", "--weights", "{scratch}/evil.pth", "--out", "{scratch}/exported"),
               Usage(("evil.pth",)), setup=(evil_file("evil.pth", evil_pickle),), checks=refused)
    yield Case("pickle-train-init_weights", "fine-tune with config.init_weights = a .pth whose pickle would run code",
               cli("train", "--config", "{scratch}/finetune.py", "--workdir", "{run}"), Usage(("evil.pth",)),
               setup=(evil_file("evil.pth", evil_pickle), init_weights_experiment), checks=refused)
    yield Case("pickle-in-checkpoint-eval", "`eval` when the latest checkpoint's metadata files are such pickles",
               cli("eval", "--workdir", "{run}"), Succeeds("checkpoint", tidy=True),
               setup=(copy_run, pickle_in_checkpoint), checks=(no_marker, evaluated_previous_step))
    yield Case("pickle-as-image", "`predict` of a .png that is such a pickle (zero weights)",
               cli("predict", "{scratch}/evil.png", "--model", "resnet18", "--weights", "{fixtures}/resnet18-zeros.safetensors"),
               Usage(("image",)), setup=(evil_file("evil.png", evil_pickle), *weight_fixtures(R18)), checks=refused)


ARGS_MISTAKES = [  # id, jaxconv arguments, what the message must name (a copied run at {run} when they use it)
    ("summary-image-size-0", ("summary", "resnet50", "--image-size", "0"), ("--image-size",)),
    ("summary-image-size-negative", ("summary", "resnet50", "--image-size", "-5"), ("--image-size",)),
    ("summary-image-size-text", ("summary", "resnet50", "--image-size", "abc"), ("--image-size",)),
    ("summary-image-size-3d", ("summary", "resnet50", "--image-size", "10x10x10"), ("--image-size",)),
    ("summary-image-size-zero-width", ("summary", "resnet50", "--image-size", "224x0"), ("--image-size",)),
    ("summary-alexnet-224", ("summary", "alexnet", "--image-size", "224"), ("224",)),
    ("summary-in-channels-0", ("summary", "resnet50", "--in-channels", "0"), ("--in-channels",)),
    ("summary-num-classes-0", ("summary", "resnet50", "--num-classes", "0"), ("--num-classes",)),
    ("summary-unknown-model", ("summary", "resnt50"), ("resnt50",)),
    ("summary-no-model", ("summary",), ("model",)),
    ("summary-dtype", ("summary", "resnet50", "--dtype", "int8"), ("int8",)),
    ("summary-format", ("summary", "resnet50", "--format", "xml"), ("xml",)),
    ("list-no-match", ("list", "zzz*"), ("zzz*",)),
    ("list-format", ("list", "--format", "xml"), ("xml",)),
    ("list-two-patterns", ("list", "resnet*", "vgg*"), ("vgg*",)),
    ("compare-unknown-model", ("compare", "resnt50", "--no-speed"), ("resnt50",)),
    ("compare-runs-missing", ("compare", "--runs", "{scratch}/nope", "--no-speed"), ("nope",)),
    ("compare-runs-file", ("compare", "--runs", "{scratch}/afile", "--no-speed"), ("afile",)),
    ("compare-out-file", ("compare", "--no-speed", "--out", "{scratch}/afile"), ("afile",)),
    ("compare-image-size-1", ("compare", "alexnet", "--image-size", "1", "--no-speed"), ("1",)),
    ("compare-batch-size-0", ("compare", "--batch-size", "0"), ("--batch-size",)),
    ("bench-unknown-model", ("bench", "resnt50"), ("resnt50",)),
    ("bench-batch-size-0", ("bench", "resnet20", "--batch-size", "0"), ("--batch-size",)),
    ("bench-batch-size-huge", ("bench", "resnet20", "--batch-size", "1000000000000000", "--steps", "1"),
     (("batch", "memory"),)),
    ("bench-mode", ("bench", "resnet20", "--mode", "xyz"), ("xyz",)),
    ("bench-warmup-negative", ("bench", "resnet20", "--warmup", "-1"), ("warmup",)),
    ("bench-steps-0", ("bench", "resnet20", "--steps", "0"), ("--steps",)),
    ("bench-dtype", ("bench", "resnet20", "--dtype", "int8"), ("int8",)),
    ("bench-recipe", ("bench", "resnet20", "--mode", "data", "--recipe", "weird"), ("weird",)),
    ("eval-no-workdir", ("eval",), ("--workdir",)),
    ("eval-workdir-missing", ("eval", "--workdir", "{scratch}/nope"), ("nope",)),
    ("eval-workdir-file", ("eval", "--workdir", "{scratch}/afile"), ("afile",)),
    ("eval-workdir-empty-dir", ("eval", "--workdir", "{scratch}/emptydir"), ("emptydir",)),
    ("eval-step-0", ("eval", "--workdir", "{run}", "--step", "0"), ("--step",)),
    ("eval-step-text", ("eval", "--workdir", "{run}", "--step", "abc"), ("--step",)),
    ("eval-split", ("eval", "--workdir", "{run}", "--split", "nope"), ("nope",)),
    ("eval-format", ("eval", "--workdir", "{run}", "--format", "xml"), ("xml",)),
    ("eval-extra-argument", ("eval", "--workdir", "{run}", "--bogus"), ("--bogus",)),
    ("report-missing", ("report", "{scratch}/nope"), ("nope",)),
    ("report-empty-dir", ("report", "{scratch}/emptydir"), ("emptydir",)),
    ("report-file", ("report", "{scratch}/afile"), ("afile",)),
    ("export-nothing", ("export",), ("--out",)),
    ("export-no-source", ("export", "--out", "{scratch}/exported"), ("--workdir",)),
    ("export-both-sources", ("export", "--workdir", "{run}", "--model", "resnet18", "--weights", "IMAGENET1K_V1",
                             "--out", "{scratch}/exported"), ("--workdir",)),
    ("export-weights-without-model", ("export", "--weights", "IMAGENET1K_V1", "--out", "{scratch}/exported"), ("--model",)),
    ("export-format", ("export", "--workdir", "{run}", "--out", "{scratch}/exported", "--format", "onnx"), ("onnx",)),
    ("export-platforms", ("export", "--workdir", "{run}", "--out", "{scratch}/exported", "--platforms", "metal"),
     ("metal",)),
    ("export-workdir-missing", ("export", "--workdir", "{scratch}/nope", "--out", "{scratch}/exported"), ("nope",)),
    ("export-step-missing", ("export", "--workdir", "{run}", "--step", "999", "--out", "{scratch}/exported"), ("999",)),
    ("export-weights-missing", ("export", "--model", "resnet18", "--weights", "{scratch}/nope.pth", "--out",
                                "{scratch}/exported"), ("nope.pth",)),
    ("predict-image-missing", ("predict", "{scratch}/nope.png", "--model", "resnet18", "--weights", R18), ("nope.png",)),
    ("predict-not-an-image", ("predict", "{scratch}/afile", "--model", "resnet18", "--weights", R18), ("image",)),
    ("predict-empty-folder", ("predict", "{scratch}/emptydir", "--model", "resnet18", "--weights", R18), ("image",)),
    ("predict-weights-missing", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", "{scratch}/nope.pth"),
     ("nope.pth",)),
    ("predict-unknown-model", ("predict", "{scratch}/cat.png", "--model", "resnt18", "--weights", R18), ("resnt18",)),
    ("predict-model-without-weights", ("predict", "{scratch}/cat.png", "--model", "resnet20", "--weights", R18),
     ("resnet20",)),
    ("predict-offline-no-download", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", "IMAGENET1K_V1",
                                     "--no-download", "--weights-dir", "{scratch}/w"), (("http", "download"),)),
    ("predict-offline-download", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", "IMAGENET1K_V1",
                                  "--weights-dir", "{scratch}/w"), (("http", "download", "network"),)),
    ("predict-int8-weights", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights",
                              "{fixtures}/resnet18-int8.safetensors"), (("int8", "I8", "dtype"),)),
    ("predict-text-weights", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", "{scratch}/afile.safetensors"),
     ("afile.safetensors",)),
    ("predict-weights-tag", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", R18, "--weights-tag",
                             "BOGUS"), ("BOGUS",)),
    ("predict-top-0", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", R18, "--top", "0"), ("--top",)),
    ("predict-top-5000", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", R18, "--top", "5000"),
     ("--top",)),
    ("summary-option-widths-0", ("summary", "resnet20", "--option", "widths=(0, 0, 0)"), ("widths",)),
    ("summary-option-groups-0", ("summary", "alexnet", "--option", "groups=0"), ("groups",)),
    ("summary-option-num-classes", ("summary", "resnet20", "--option", "num_classes=0"), ("--num-classes",)),
    ("predict-weights-and-workdir", ("predict", "{scratch}/cat.png", "--weights", R18, "--workdir", "{run}"),
     ("--weights", "--workdir")),
    ("predict-neither-weights-nor-workdir", ("predict", "{scratch}/cat.png", "--model", "resnet18"),
     ("--weights", "--workdir")),
    ("predict-workdir-missing", ("predict", "{scratch}/cat.png", "--workdir", "{scratch}/nope"), ("nope",)),
    ("predict-workdir-with-model", ("predict", "{scratch}/cat.png", "--workdir", "{run}", "--model", "resnet18"),
     ("--model", "drop")),
    ("predict-workdir-top-too-many", ("predict", "{scratch}/cat.png", "--workdir", "{run}", "--top", "50"),
     ("--top 50", "10 classes")),
    ("predict-workdir-step-missing", ("predict", "{scratch}/cat.png", "--workdir", "{run}", "--step", "999"),
     ("999",)),
    ("predict-step-without-workdir", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", R18,
                                      "--step", "3"), ("--step", "--workdir")),
    ("predict-batch-size-0", ("predict", "{scratch}/cat.png", "--model", "resnet18", "--weights", R18, "--batch-size", "0"),
     ("--batch-size",)),
    ("no-command", (), ()),
    ("unknown-command", ("frobnicate",), ("frobnicate",)),
    ("train-unknown-flag", ("train", "--frobnicate"), ("--frobnicate",)),
    ("import-missing-module", ("list", "--import", "not_a_module_xyz"), ("not_a_module_xyz",)),
    ("import-syntax-error", ("list", "--import", "{scratch}/broken.py"), ("broken.py",)),
    ("import-raises", ("list", "--import", "{scratch}/raises.py"), ("raises.py",)),
    ("import-registers-existing-name", ("list", "--import", "{scratch}/dup.py"), ("resnet50",)),
    # the second round of probes as new users (2026-12-04, later): users' modules off the guide's path
    ("summary-option-bool-string", ("summary", "resnet20", "--option", "zero_init_last=maybe"), ("zero_init_last",)),
    ("summary-option-int-for-sequence", ("summary", "resnet20", "--option", "widths=16"), ("widths", "sequence")),
    ("summary-user-model-no-train", ("summary", "no_train", "--import", "{scratch}/odd.py", "--image-size", "16"),
     ("no_train", "train")),
    ("summary-user-model-tuple", ("summary", "tuple_out", "--import", "{scratch}/odd.py", "--image-size", "16"),
     ("tuple_out", "tuple")),
    ("bench-user-model-no-params", ("bench", "no_params", "--import", "{scratch}/odd.py", "--image-size", "16",
                                    "--batch-size", "2", "--steps", "1"), ("no_params", "parameters")),
    ("bench-layers-no-convolutions", ("bench", "mlp", "--import", "{scratch}/odd.py", "--mode", "layers",
                                      "--image-size", "16", "--batch-size", "2", "--steps", "1"), ("mlp", "convolutions")),
    ("train-user-model-wrong-classes", ("train", "--import", "{scratch}/odd.py", "--config.model=seven",
                                        "--workdir", "{scratch}/w7", "--config.image_size=16"), ("seven", "(N, 10)")),
    ("import-package-module-as-file", ("list", "--import", "{scratch}/lab/nets.py"), ("lab.nets",)),
    ("import-shadows-a-package", ("list", "--import", "{scratch}/wave.py"), ("shadows", "wave")),
    ("list-pattern-without-wildcard", ("list", "resnet"), ("*resnet*",)),
    ("export-empty-out", ("export", "--model", "resnet18", "--weights", R18, "--out", ""), ("--out",)),
]


ARGS_EDGES = [  # id, jaxconv arguments: odd but possibly valid requests (ResNets' geometry works at 1 px)
    ("summary-image-size-1", ("summary", "resnet50", "--image-size", "1")),
    ("bench-image-size-1", ("bench", "resnet20", "--image-size", "1", "--steps", "2")),
]


def args_fixtures(ctx: Ctx) -> None:
    """The files the argument cases point at."""
    (ctx.scratch / "afile").write_text("not what it claims\n")
    (ctx.scratch / "afile.safetensors").write_text("not weights\n")
    (ctx.scratch / "emptydir").mkdir()
    (ctx.scratch / "cat.png").write_bytes(png_bytes(32, 32, 9))
    (ctx.scratch / "broken.py").write_text("def oops(:\n")
    (ctx.scratch / "raises.py").write_text("raise RuntimeError('this module fails on import')\n")
    (ctx.scratch / "dup.py").write_text("import jaxconv\njaxconv.register('resnet50', lambda **kw: None, image_size=32)\n")
    (ctx.scratch / "odd.py").write_text(ODD_MODELS)
    (ctx.scratch / "lab").mkdir()
    (ctx.scratch / "lab" / "__init__.py").write_text("")
    (ctx.scratch / "lab" / "blocks.py").write_text("WIDTH = 8\n")
    (ctx.scratch / "lab" / "nets.py").write_text("from .blocks import WIDTH\n")
    (ctx.scratch / "wave.py").write_text("from wave import Wave_read\n")


ODD_MODELS = """
import flax.linen as nn
import jax.numpy as jnp
import jaxconv


class NoTrain(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


class TupleOut(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2))), x.mean()


class NoParams(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return jnp.tile(x.mean(axis=(1, 2, 3))[:, None], (1, self.num_classes))


class MLP(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1)))))


class Seven(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(7)(x.mean(axis=(1, 2)))


for name, cls in [("no_train", NoTrain), ("tuple_out", TupleOut), ("no_params", NoParams), ("mlp", MLP),
                  ("seven", Seven)]:
    jaxconv.register(name, cls, image_size=16, num_classes=10)
"""


ARGS_FIXTURES = ("afile", "afile.safetensors", "emptydir", "cat.png", "broken.py", "raises.py", "dup.py", "odd.py",
                 "lab", "lab/*", "wave.py")


@cases_of("args")
def args_cases() -> Iterator[Case]:
    for name, args, words in ARGS_MISTAKES:
        joined = " ".join(args)
        steps = (args_fixtures, *((copy_run,) if "{run}" in joined else ()), *weight_fixtures(joined))
        expect = Ends(statuses=(2,)) if name == "no-command" else Usage(words)
        yield Case(f"args-{name}", f"jaxconv {joined}", cli(*args, timeout=120 if "offline" in name else TIMEOUT_S),
                   expect, setup=steps, allowed=ARGS_FIXTURES)
    for name, args in ARGS_EDGES:
        yield Case(f"args-{name}", f"jaxconv {' '.join(args)}", cli(*args), Clean())
    yield Case("args-import-env-missing", "JAXCONV_IMPORT=not_a_module_xyz jaxconv list",
               cli("list", env={"JAXCONV_IMPORT": "not_a_module_xyz"}), Usage(("not_a_module_xyz",)))


# --- running the cases ----------------------------------------------------------------------------------------------------


def all_cases() -> list[Case]:
    cases = []
    for cls, builder in REGISTRY.items():
        for case in builder():
            case.cls = cls
            cases.append(case)
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"duplicate case ids: {duplicates}")
    return cases


def select(cases: list[Case], only: Sequence[str] | None) -> list[Case]:
    if not only:
        return cases
    chosen = [c for c in cases if any(c.cls == o or fnmatch.fnmatch(c.id, o) for o in only)]
    if not chosen:
        raise SystemExit(f"--only {' '.join(only)}: no case matches (see --list)")
    return chosen


def run_case(case: Case, shared: Shared) -> dict:
    safe = re.sub(r"[^\w.=-]", "_", case.id)
    ctx = Ctx(case, shared, shared.root / "cases" / safe, shared.root / "logs" / safe,
              random.Random(f"{SEED}:{case.id}"))
    ctx.scratch.mkdir(parents=True)
    started = time.monotonic()
    verdict, problems, left = "ERROR", [], None
    try:
        for step in case.setup:
            step(ctx)
        before = snapshot(ctx.scratch)
        outcome = case.action(ctx)
        ctx.primary = outcome
        ctx.stop_processes()
        left = Leftovers.between(before, snapshot(ctx.scratch))
        problems = case.expect.judge(outcome, left, ctx)
        problems += [p for check in case.checks if (p := check(ctx))]
        problems += ctx.problems
        verdict = "FAIL" if problems else "PASS"
    except Skip as e:
        verdict, problems = "SKIP", [str(e)]
    except HarnessError as e:
        verdict, problems = "ERROR", [f"harness: {e}"]
    except Exception:
        verdict, problems = "ERROR", [f"harness: {traceback.format_exc(limit=4)}"]
    finally:
        ctx.stop_processes()
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001
                ctx.notes.append(f"cleanup failed: {e}")
    primary = ctx.primary
    return {
        "id": case.id, "class": case.cls, "what": case.what, "verdict": verdict, "problems": problems,
        "expected": case.expect.describe(),
        "command": primary.command if primary else None,
        "exit_status": primary.status if primary else None,
        "exception": primary.exception if primary else None,
        "exception_message": (primary.api or {}).get("message") if primary else None,
        "traceback": primary.traceback if primary else None,
        "traceback_excerpt": primary.traceback_excerpt if primary else [],
        "stderr_lines": len(primary.lines) if primary else None,
        "stderr_tail": primary.lines[-3:] if primary else [],
        "left_behind": left.record() if left else None,
        "steps": [o.record() for o in ctx.outcomes],
        "notes": ctx.notes, "seconds": round(time.monotonic() - started, 1),
    }


def short_reason(result: dict) -> str:
    if result["verdict"] == "PASS":
        shown = result["exception"] or f"exit {result['exit_status']}"
        return f"({shown})"
    return "; ".join(p.splitlines()[0][:200] for p in result["problems"])


def summary_table(results: list[dict]) -> str:
    classes = list(dict.fromkeys(r["class"] for r in results))
    rows = [("class", "cases", "passed", "failed", "skipped", "errors")]
    for cls in [*classes, "total"]:
        mine = [r for r in results if cls in ("total", r["class"])]
        count = lambda v: sum(r["verdict"] == v for r in mine)  # noqa: E731
        rows.append((cls, len(mine), count("PASS"), count("FAIL"), count("SKIP"), count("ERROR")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
                     for row in rows)


def list_cases(cases: list[Case]) -> None:
    for cls in dict.fromkeys(c.cls for c in cases):
        mine = [c for c in cases if c.cls == cls]
        print(f"{cls} ({len(mine)} cases)")
        for c in mine:
            print(f"  {c.id:48} {c.what}\n  {'':48}   expects: {c.expect.describe()}")
    print(f"{len(cases)} cases")


def commit() -> str | None:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True)
    return (done.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else "")) if done.returncode == 0 else None


def stop_everything() -> None:
    with LIVE_LOCK:
        procs = list(LIVE)
    for proc in procs:
        proc.kill()
        proc.close()
    for path in list(MOUNTS):
        unmount(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="misuse_results.json", help="the JSON results (default misuse_results.json)")
    parser.add_argument("--only", nargs="+", metavar="CLASS_OR_ID", help="classes, case ids or id patterns (lock-*)")
    parser.add_argument("--list", action="store_true", help="list the cases and what each expects, run nothing")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (cases' files and logs)")
    args = parser.parse_args(argv)

    cases = select(all_cases(), args.only)
    if args.list:
        list_cases(cases)
        return 0
    root = pathlib.Path(tempfile.mkdtemp(prefix="jaxconv-misuse-"))
    print(f"{len(cases)} cases; scratch in {root}", flush=True)
    started = time.time()
    results: dict[str, dict] = {}
    try:
        shared = Shared(root)
        shared.prepare()
        print_lock = threading.Lock()
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_case, case, shared): case for case in cases}
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                results[result["id"]] = result
                with print_lock:
                    print(f"{result['verdict']:5} {result['id']}  {short_reason(result)}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping the cases' processes", file=sys.stderr)
        stop_everything()
        raise
    finally:
        stop_everything()
        if args.keep:
            print(f"kept the scratch directory {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    ordered = [results[c.id] for c in cases if c.id in results]
    table = summary_table(ordered)
    print("\n" + table)
    report = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit(),
              "minutes": round((time.time() - started) / 60, 1), "summary": table.splitlines(), "cases": ordered}
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0 if all(r["verdict"] == "PASS" for r in ordered) else 1


if __name__ == "__main__":
    sys.exit(main())
