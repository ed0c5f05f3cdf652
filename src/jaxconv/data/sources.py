"""Datasets as random-access sources of (encoded image, label) records.

Every dataset is read by index: TFDS datasets are prepared in the ArrayRecord format and
opened with ``builder.as_data_source``; a folder of images is a sorted list of files. Random
access is what lets the input pipeline define one global order per epoch, let each process
read only the examples of its own part of each batch, and resume at any step without
replaying the stream (see ``jaxconv.data.pipeline``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import socket
import sys
import threading
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxconv.data.catalog import DATASETS, DatasetSpec
from jaxconv.errors import UserError
from jaxconv.logs import without_absl_messages
from jaxconv.progress import Counter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class DatasetUnavailable(UserError):
    """The dataset is not prepared and cannot be prepared here; the message says what to do."""


class Source:
    """Random access to one split: ``len(source)`` examples, read by index.

    ``fetch(indices)`` (numpy, in the input pipeline's Python thread) returns what
    ``decode(record)`` (TensorFlow, in parallel tf.data workers) turns into an
    (H, W, C) uint8 image and an int32 label.
    """

    num_classes: int
    channels: int
    name: str

    def __len__(self) -> int:
        raise NotImplementedError

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError


class TFDSSource(Source):
    """A split of a TFDS dataset prepared as ArrayRecord: serialized examples by index."""

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str, spec: DatasetSpec):
        self.name = spec.name
        self.split = split
        self._data = builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        self._features = builder.info.features
        self.num_classes = spec.num_classes
        self.channels = spec.channels

    def __len__(self) -> int:
        return len(self._data)

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        return np.array([self._data[int(i)] for i in indices], dtype=object)

    def decode(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = self._features.deserialize_example(record)
        image = example["image"]
        if image.shape.rank == 2:
            image = image[..., None]
        return image, tf.cast(example["label"], tf.int32)


class FolderSource(Source):
    """Images in class subfolders: ``root/<class>/<image>``, labels by sorted class name.

    ``files`` are relative to ``root``; ``classes`` is the full, shared class list.
    """

    def __init__(self, root: pathlib.Path, files: Sequence[str], labels: Sequence[int], classes: Sequence[str]):
        self.name = "folder"
        self.root = root
        self.classes = tuple(classes)
        self.num_classes = len(self.classes)
        self.channels = 3
        # As bytes: a file name that is not UTF-8 (surrogate-escaped by Python) cannot become a tf.string.
        self._paths = [os.fsencode(root / f) for f in files]
        self._labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self._paths)

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        return np.array([b"%d:%s" % (self._labels[i], self._paths[i]) for i in indices], dtype=object)

    def decode(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        label, path = tf.unstack(tf.strings.split(record, ":", maxsplit=1), num=2)  # bytes, not UTF-8 regexes
        label = tf.strings.to_number(label, tf.int32)
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image, label


def printable(name: str) -> str:
    """A file name as a terminal can show it: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_image(path: pathlib.Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _class_files(root: pathlib.Path) -> tuple[dict[str, list[str]], list[str]]:
    """Image files per class subfolder, and the other files found there (relative to root)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    images, others = {}, []
    for c in classes:
        images[c] = []
        for path in sorted((root / c).rglob("*")):
            if path.name.startswith("."):
                continue
            if path.is_symlink() and not path.exists():  # a dangling link: reported with the skipped files
                others.append(str(path.relative_to(root)))
                continue
            if not path.is_file():
                continue
            (images[c] if _is_image(path) else others).append(str(path.relative_to(root)))
    return images, others


def _scan_cache_path(root: pathlib.Path) -> pathlib.Path:
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "jaxconv" / "folder_scans"
    return cache / (hashlib.sha1(str(root.resolve()).encode()).hexdigest() + ".json")


def decodable(root: pathlib.Path, files: Sequence[str]) -> list[bool]:
    """Which files TensorFlow can decode as images, checked in parallel, remembered by size and mtime."""
    cache_path = _scan_cache_path(root)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}

    def key(name):
        stat = (root / name).stat()
        return f"{name}|{stat.st_size}|{stat.st_mtime_ns}"

    keys = [key(f) for f in files]
    unknown = [i for i, k in enumerate(keys) if k not in cache]
    if unknown:
        paths = tf.constant([os.fsencode(root / files[i]) for i in unknown])
        ds = tf.data.Dataset.from_tensor_slices((tf.range(len(unknown)), paths))
        ds = ds.map(lambda i, p: (i, tf.shape(tf.io.decode_image(tf.io.read_file(p), channels=3,
                                                                   expand_animations=False))),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.ignore_errors()
        good = set()
        with Counter(f"checking the images of {root}", len(unknown), unit=" files") as counter:
            for i, _ in ds.as_numpy_iterator():
                good.add(int(i))
                counter.advance()
        for j, i in enumerate(unknown):
            cache[keys[i]] = j in good
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache))
        except OSError:
            pass  # the scan is only a cache
    return [bool(cache[k]) for k in keys]


EVAL_DIR_NAMES = ("val", "validation", "test", "eval")


@dataclasses.dataclass
class FolderScan:
    """What folder_splits found: the usable images, and what it skipped."""

    skipped: list[str]  # relative to the dataset root: non-image and undecodable files

    def report(self, root) -> str | None:
        if not self.skipped:
            return None
        shown = ", ".join(map(printable, self.skipped[:5])) + (f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else "")
        return (f"folder {root}: skipped {len(self.skipped)} files that are not readable images or are broken "
                f"links ({shown})")


def folder_splits(root: str | os.PathLike, eval_fraction: float = 0.1,
                  log: Callable[[str], None] | None = None) -> dict[str, FolderSource]:
    """The 'train' and 'eval' splits of a folder of class subfolders.

    ``root/train/<class>/…`` with ``root/val|validation|test/<class>/…`` uses those splits;
    otherwise ``root/<class>/…`` is split deterministically, ``eval_fraction`` of each class's
    files (chosen by a hash of the path) held out for evaluation. Files that are not images,
    or that do not decode, are skipped and reported; grayscale and RGBA images are read as RGB.
    A class in the evaluation split that training does not have, or an empty split, raises
    DatasetUnavailable naming it.
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DatasetUnavailable(f"dataset 'folder': {root} is not a directory; point folder at a directory of "
                                 "class subfolders (root/<class>/<image>)")
    eval_dir = next((root / n for n in EVAL_DIR_NAMES if (root / n).is_dir()), None)
    skipped: list[str] = []

    def usable(base: pathlib.Path) -> dict[str, list[str]]:
        by_class, others = _class_files(base)
        prefix = "" if base == root else f"{base.relative_to(root)}/"
        skipped.extend(prefix + f for f in others)
        names = [f for c in by_class for f in by_class[c]]
        ok = dict(zip(names, decodable(base, names)))
        skipped.extend(prefix + f for f in names if not ok[f])
        return {c: [f for f in files if ok[f]] for c, files in by_class.items()}

    if (root / "train").is_dir() and eval_dir is not None:
        train, held_out = usable(root / "train"), usable(eval_dir)
        classes = sorted(train)
        strangers = [c for c in held_out if c not in train and held_out[c]]
        if strangers:
            example = f"{eval_dir.name}/{held_out[strangers[0]][0]}"
            raise DatasetUnavailable(
                f"dataset 'folder': {example} has label {strangers[0]!r}, which is outside the {len(classes)} "
                f"training classes ({', '.join(classes)})"
            )
        parts = {"train": (root / "train", train), "eval": (eval_dir, held_out)}
        found = train
    else:
        files = found = usable(root)
        classes = sorted(files)
        parts = {"train": (root, {}), "eval": (root, {})}
        for c, names in files.items():
            for name in names:
                held = zlib.crc32(os.fsencode(name)) % 1000 < eval_fraction * 1000
                parts["eval" if held else "train"][1].setdefault(c, []).append(name)
    if not classes:
        raise DatasetUnavailable(f"dataset 'folder': {root} has no class subfolders (expected root/<class>/<image>)")
    train_base = parts["train"][0]
    empty = [c for c in classes if not found[c]]
    if empty and any(found.values()):
        raise DatasetUnavailable(
            f"dataset 'folder': class folder {train_base / empty[0]} has no readable image"
            + (f" (nor do {', '.join(empty[1:4])}{' …' if len(empty) > 4 else ''})" if len(empty) > 1 else "")
            + "; add images, or remove the folder so that it is not a class")
    if len(classes) < 2:
        raise DatasetUnavailable(f"dataset 'folder': {train_base} has one class subfolder ({classes[0]}); "
                                 f"a classifier needs at least two (root/<class>/<image>)")
    report = FolderScan(skipped).report(root)
    if report and log is not None:
        log(report)
    sources = {}
    for split, (base, by_class) in parts.items():
        files = [f for c in classes for f in by_class.get(c, [])]
        labels = [i for i, c in enumerate(classes) for _ in by_class.get(c, [])]
        if not files:
            raise DatasetUnavailable(f"dataset 'folder': the {split} split ({base}) has no readable images "
                                     f"({', '.join(IMAGE_SUFFIXES)})")
        sources[split] = FolderSource(base, files, labels, classes)
    return sources


def _reachable(host: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to host:443 opens within ``timeout`` (DNS included): never hangs."""
    result = [False]

    def probe():
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return result[0]


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def tfds_builder(spec: DatasetSpec, data_dir: str | None, *, image_size: int | None = None,
                 shapes_examples: tuple[int, int] = (20_000, 2_000)) -> tfds.core.DatasetBuilder:
    """The TFDS builder of a dataset, configured to read and write ArrayRecord files."""
    data_dir = data_dir or default_data_dir()
    if spec.name == "shapes":
        from jaxconv.data.shapes import JaxconvShapes, shapes_config

        config = shapes_config(image_size or 32, *shapes_examples)
        if config.name in JaxconvShapes.builder_configs:  # TFDS wants predefined configs by name
            config = config.name
        with without_absl_messages("Using custom data configuration"):
            return JaxconvShapes(config=config, data_dir=data_dir, file_format="array_record")
    return tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")


def prepare(
    builder: tfds.core.DatasetBuilder, spec: DatasetSpec, data_dir: str | None, log: Callable[[str], None] = print
) -> None:
    """Makes sure the dataset is prepared as ArrayRecord, generating or downloading it if it can.

    Raises DatasetUnavailable with what to do when it is missing and cannot be fetched here
    (no network, or a manual download that has not been made), instead of hanging.
    """
    data_path = pathlib.Path(str(builder.data_path))
    if (data_path / "dataset_info.json").exists():
        file_format = builder.info.file_format
        if file_format is not None and file_format.value != "array_record":
            raise DatasetUnavailable(
                f"dataset {spec.name!r}: {data_path} holds {file_format.value} files, but jaxconv reads ArrayRecord "
                f"(random access). Convert them with `tfds convert_format --dataset_version_dir={data_path} "
                f"--out_file_format=array_record`, or use another data_dir"
            )
        return
    root = pathlib.Path(data_dir or default_data_dir())
    if spec.manual_files:
        manual_dir = root / "downloads" / "manual"  # TFDS's default manual_dir
        missing = [f for f in spec.manual_files if not (manual_dir / f).exists()]
        if missing:
            raise DatasetUnavailable(
                f"dataset {spec.name!r} is not prepared in {data_path} and needs a manual download: put "
                f"{' and '.join(missing)} into {manual_dir} (from {spec.manual_source}), then run again"
            )
    manual_dir = root / "downloads" / "manual"
    expected = sorted({info.filename for info in (getattr(builder, "url_infos", None) or {}).values()
                       if info.filename})
    # TFDS takes a file it would download from its manual dir when one of that name is there (offline use).
    present = [name for name in expected if (manual_dir / name).is_file()]
    if not spec.manual_files and not present and spec.download_host and not _reachable(spec.download_host):
        manual = (f", or put {' and '.join(expected)} (downloaded elsewhere) into {manual_dir}"
                  if 0 < len(expected) <= 4 else "")
        raise DatasetUnavailable(
            f"dataset {spec.name!r} is not prepared in {data_path} and {spec.download_host} cannot be reached "
            f"(no network?). Run once where the network is available{manual}, or copy a prepared "
            f"{spec.tfds_name} (ArrayRecord) into {root}"
        )
    what = "generating" if spec.tfds_name == "jaxconv_shapes" else "downloading and preparing"
    log(f"{what} {spec.name} into {data_path} (once)"
        + (f", from {', '.join(present)} in {manual_dir}" if present else ""))
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if spec.tfds_name != "jaxconv_shapes" else None
    try:
        with contextlib.redirect_stdout(io.StringIO()), _counting(builder, spec):  # TFDS prints a banner to stdout
            builder.download_and_prepare(file_format="array_record", download_config=config)
    except tfds.core.download.download_manager.NonMatchingChecksumError:
        raise DatasetUnavailable(
            f"dataset {spec.name!r}: a file in {manual_dir} ({', '.join(present) or 'a cached download'}) is not the one "
            f"TFDS expects (its size or SHA-256 differs: a partial or other download); replace it and run again"
        ) from None
    except (OSError, tfds.core.download.DownloadError, tf.errors.OpError) as e:
        raise DatasetUnavailable(f"dataset {spec.name!r}: preparing it in {data_path} failed "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


@contextlib.contextmanager
def _counting(builder, spec: DatasetSpec):
    """Progress while the built-in dataset is generated (a count and an ETA); TFDS's own progress
    bars, on a terminal, while another dataset downloads and is prepared."""
    if spec.tfds_name == "jaxconv_shapes":
        from jaxconv.data import shapes

        from tensorflow_datasets.core.utils import tqdm_utils

        config = builder.builder_config
        bars = getattr(tqdm_utils, "_active", False)  # TFDS's own bars: this counter says it instead
        tfds.disable_progress_bar()
        try:
            with Counter(f"generating {spec.name}", config.train_examples + config.test_examples,
                         unit=" images") as counter, shapes.reporting(counter.advance):
                yield
        finally:
            if bars:
                tfds.enable_progress_bar()
    elif sys.stderr.isatty():
        tfds.enable_progress_bar()
        try:
            yield
        finally:
            tfds.disable_progress_bar()
    else:
        yield


def open_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    folder: str | None = None,
    shapes_examples: tuple[int, int] = (20_000, 2_000),
    log: Callable[[str], None] = print,
    prepare_first: Callable[[Callable[[], None]], None] | None = None,
) -> tuple[DatasetSpec, dict[str, Source]]:
    """Opens the 'train' and 'eval' splits of a dataset, preparing it first if needed.

    ``prepare_first(fn)``, in multi-process runs, calls ``fn`` on one process while the
    others wait (so that two processes never write the same dataset at once); afterwards
    every process prepares its own copy if it cannot see the shared one.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if name == "folder":
        if not folder:
            raise DatasetUnavailable("dataset 'folder' needs folder=<directory of class subfolders>")
        sources = folder_splits(folder, log=log)
        spec = dataclasses.replace(spec, num_classes=sources["train"].num_classes)
        return spec, sources
    builder = tfds_builder(spec, data_dir, image_size=image_size, shapes_examples=shapes_examples)
    if prepare_first is None:
        prepare(builder, spec, data_dir, log)
    else:  # several processes: one prepares while the others wait, then each checks its own copy
        prepare_first(lambda: prepare(builder, spec, data_dir, log))
        builder = tfds_builder(spec, data_dir, image_size=image_size, shapes_examples=shapes_examples)
        prepare(builder, spec, data_dir, log)
    return spec, {
        "train": TFDSSource(builder, spec.train_split, spec),
        "eval": TFDSSource(builder, spec.eval_split, spec),
    }
