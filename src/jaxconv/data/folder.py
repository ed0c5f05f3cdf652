"""A folder of images as a dataset: ``root/<class>/<image>`` (or train/ and val/ splits of that shape).

Files are listed in sorted order and checked once (in parallel, remembered by size and mtime)
for whether TensorFlow decodes them; what does not decode is skipped and reported in one line.
File names need not be UTF-8: paths reach TensorFlow as bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from jaxconv.data import augment
from jaxconv.data.source import DatasetUnavailable, Source, dataset_options, preparing_data
from jaxconv.progress import Counter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


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
        self.stores_files = True
        # As bytes: a file name that is not UTF-8 (surrogate-escaped by Python) cannot become a tf.string.
        self._paths = [os.fsencode(root / f) for f in files]
        self._labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self._paths)

    def fetch(self, indices: np.ndarray) -> np.ndarray:
        return np.array([b"%d:%s" % (self._labels[i], self._paths[i]) for i in indices], dtype=object)

    def decode(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        data, label = self.encoded(record)
        return augment.decode(data, 3), label

    def encoded(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        label, path = tf.unstack(tf.strings.split(record, ":", maxsplit=1), num=2)  # bytes, not UTF-8 regexes
        return tf.io.read_file(path), tf.strings.to_number(label, tf.int32)


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
        entries, unread = _walk(root / c)
        others.extend(str(d.relative_to(root)) + os.sep for d in unread)
        for path in entries:
            if path.is_symlink() and not path.exists():  # a dangling link: reported with the skipped files
                others.append(str(path.relative_to(root)))
                continue
            if not path.is_file():
                continue
            (images[c] if _is_image(path) else others).append(str(path.relative_to(root)))
    return images, others


def _walk(top: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """Every entry below top but hidden ones, sorted, links to folders followed (as torchvision's
    ImageFolder does); and the folders not read: those that cannot be listed, and links back into a
    folder the walk is already inside (a cycle)."""
    found: list[pathlib.Path] = []
    unread: list[pathlib.Path] = []

    def visit(directory: pathlib.Path, inside: frozenset[str]) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            unread.append(directory)
            return
        for path in entries:
            if path.name.startswith("."):
                continue
            if not path.is_dir():
                found.append(path)
            elif (real := os.path.realpath(path)) in inside:
                unread.append(path)
            else:
                visit(path, inside | {real})

    visit(top, frozenset({os.path.realpath(top)}))
    return sorted(found), unread


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
        ds = ds.ignore_errors().with_options(dataset_options())
        good = set()
        with Counter(f"checking the images of {root}", len(unknown), unit=" files") as counter, preparing_data():
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
    split_like = [c for c in classes if c.lower() in ("train", "training", "dev", *EVAL_DIR_NAMES)]
    if parts["train"][0] == root and split_like and len(split_like) == len(classes):
        # train/ without val/ beside it, Train/ + Val/, train/ + dev/: split folders, not classes
        raise DatasetUnavailable(
            f"dataset 'folder': {root} holds {', '.join(f'{c}/' for c in classes)}, which look like splits, not "
            f"classes; splits are train/ and one of {', '.join(f'{n}/' for n in EVAL_DIR_NAMES)} (lower case, both "
            f"folders of class subfolders), or put the class folders directly in {root} to hold out "
            f"{eval_fraction:.0%} of each class by hash")
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
    untrained = [c for c in classes if found[c] and not parts["train"][1].get(c)] if train_base == root else []
    if untrained:
        c = untrained[0]
        raise DatasetUnavailable(
            f"dataset 'folder': class folder {root / c} has {len(found[c])} image(s), all held out for evaluation "
            f"(by a hash of the file name), so training would never see the class; add images to it, or give "
            f"train/ and val/ folders")
    report = FolderScan(skipped).report(root)
    if report and log is not None:
        log(report)
    sources = {}
    for split, (base, by_class) in parts.items():
        files = [f for c in classes for f in by_class.get(c, [])]
        labels = [i for i, c in enumerate(classes) for _ in by_class.get(c, [])]
        if not files and split == "eval" and base == root:
            raise DatasetUnavailable(
                f"dataset 'folder': holding out {eval_fraction:.0%} of each class of {root} (chosen by a hash of the "
                f"file name) left no image to evaluate on: {sum(map(len, found.values()))} images are too few; add "
                f"images, or give train/ and val/ folders")
        if not files:
            raise DatasetUnavailable(f"dataset 'folder': the {split} split ({base}) has no readable images "
                                     f"({', '.join(IMAGE_SUFFIXES)})")
        sources[split] = FolderSource(base, files, labels, classes)
    return sources
