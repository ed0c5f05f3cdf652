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
import fcntl
import hashlib
import io
import os
import pathlib
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxconv.data.catalog import DATASETS, DatasetSpec
from jaxconv.data.source import DatasetUnavailable, Source, preparing_data
from jaxconv.logs import without_absl_messages
from jaxconv.progress import Counter
from jaxconv.train.workdir import disk_failure



class DatasetDamaged(DatasetUnavailable):
    """A prepared copy whose files are not whole: ``path`` is its folder, ``problem`` what is wrong."""

    def __init__(self, name: str, path: pathlib.Path, problem: str):
        super().__init__(f"dataset {name!r}: {path} is damaged ({problem}); delete that folder and run again "
                         "to prepare it anew")
        self.path, self.problem = path, problem


class TFDSSource(Source):
    """A split of a TFDS dataset prepared as ArrayRecord: serialized examples by index."""

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str, spec: DatasetSpec):
        self.name = spec.name
        self.split = split
        self._data = builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        self._features = builder.info.features
        self.num_classes = spec.num_classes
        self.channels = spec.channels
        image = self._features["image"]
        self.stores_files = isinstance(image, tfds.features.Image) and image.np_dtype == np.uint8

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

    def encoded(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = self._features.deserialize_example(record, decoders={"image": tfds.decode.SkipDecoding()})
        return example["image"], tf.cast(example["label"], tf.int32)


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
    from google.protobuf.json_format import ParseError

    data_dir = data_dir or default_data_dir()
    where = pathlib.Path(data_dir) / spec.tfds_name
    try:
        if spec.name == "shapes":
            from jaxconv.data.shapes import JaxconvShapes, shapes_config

            config = shapes_config(image_size or 32, *shapes_examples)
            where = where / config.name / str(JaxconvShapes.VERSION)
            if config.name in JaxconvShapes.builder_configs:  # TFDS wants predefined configs by name
                config = config.name
            with without_absl_messages("Using custom data configuration"):
                return JaxconvShapes(config=config, data_dir=data_dir, file_format="array_record")
        return tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
    except ParseError as e:  # TFDS reads a prepared copy's dataset_info.json when it makes the builder
        raise DatasetDamaged(spec.name, where, f"dataset_info.json: {str(e).splitlines()[0]}") from None


def damage(builder: tfds.core.DatasetBuilder) -> str | None:
    """What is wrong with a prepared dataset's files — a shard missing, unreadable, or holding fewer
    records than its dataset_info.json says (a copy cut short) — or None when they are whole.
    Reads each shard's footer only."""
    from array_record.python.array_record_module import ArrayRecordReader

    for split in builder.info.splits.values():
        for path, expected in zip(split.filepaths, split.shard_lengths):
            path = pathlib.Path(str(path))
            if not path.is_file():
                return f"{path.name} is missing"
            try:
                reader = ArrayRecordReader(str(path))
                found = reader.num_records()
            except (RuntimeError, OSError, ValueError) as e:
                return f"{path.name} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            try:
                reader.close()
            except RuntimeError:
                pass  # a file cut short fails to close as well; its count has told already
            if found != expected:
                return f"{path.name} holds {found} records where its dataset_info.json says {expected}"
    return None


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
        problem = damage(builder)
        if problem is not None:  # a download is the user's: never deleted here
            raise DatasetDamaged(spec.name, data_path, problem)
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
    # What preparing creates; TFDS removes its own incomplete.* folder on a failure, not these.
    new = [path for path in (root, root / spec.tfds_name, root / "downloads", root / "downloads" / "extracted")
           if not path.exists()]
    try:
        # TFDS prints a banner to stdout.
        with contextlib.redirect_stdout(io.StringIO()), _counting(builder, spec), preparing_data():
            builder.download_and_prepare(file_format="array_record", download_config=config)
    except BaseException as e:  # a full disk, a second Ctrl-C: nothing half-made is left behind
        if isinstance(e, OSError) and (data_path / "dataset_info.json").exists():
            # Another machine sharing data_dir finished the same dataset first (TFDS's final rename found it
            # there): theirs is used, and nothing is removed, since every folder now holds it.
            log(f"{spec.name} in {data_path} was prepared by another run meanwhile; using it")
            return
        for path in new:
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(e, tfds.core.download.download_manager.NonMatchingChecksumError):
            raise DatasetUnavailable(
                f"dataset {spec.name!r}: a file in {manual_dir} ({', '.join(present) or 'a cached download'}) is not "
                f"the one TFDS expects (its size or SHA-256 differs: a partial or other download); replace it and run "
                f"again") from None
        if isinstance(e, (tarfile.TarError, zipfile.BadZipFile, EOFError)):  # e.g. a login page saved as the tar
            raise DatasetUnavailable(
                f"dataset {spec.name!r}: a file in {manual_dir} ({', '.join(present or spec.manual_files) or 'a cached download'}) "
                f"is not the archive it is named as ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"download it again and run again") from None
        # RuntimeError: the ArrayRecord writer's failure to write (a full disk) arrives as one.
        # The writer's message names a temporary file and its chunk numbers: the cause is enough. (No free space
        # is shown: the writer's open file may still hold what was removed.)
        disk = disk_failure(e, data_path, free=False) if isinstance(e, (OSError, RuntimeError, tf.errors.OpError)) \
            else None
        if disk is not None:
            full = disk.startswith(("no space", "the disk"))
            remedy = "free space there, or give config.data_dir on another disk" if full else \
                "give config.data_dir a folder you can write"
            raise DatasetUnavailable(f"dataset {spec.name!r}: preparing it in {data_path} failed: {disk}"
                                     + ("; nothing of it was kept" if new else "") + f"; {remedy}") from None
        if isinstance(e, (OSError, RuntimeError, tfds.core.download.DownloadError, tf.errors.OpError)):
            raise DatasetUnavailable(f"dataset {spec.name!r}: preparing it in {data_path} failed "
                                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                                     + ("; nothing of it was kept" if new else "")) from None
        raise


@contextlib.contextmanager
def _one_preparer(spec: DatasetSpec, data_dir: str | None, log: Callable[[str], None]):
    """Runs on one machine that prepare one dataset in one data_dir do it one at a time: the others wait,
    then find it prepared (two at once raced TFDS's final rename, and the loser's cleanup removed the
    winner's folders). The lock is a file in the temporary directory, since data_dir may not exist yet."""
    root = str(pathlib.Path(data_dir or default_data_dir()).expanduser().absolute())
    key = hashlib.sha256(f"{root}\0{spec.tfds_name}".encode()).hexdigest()[:16]
    with open(pathlib.Path(tempfile.gettempdir()) / f"jaxconv-prepare-{key}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run that is preparing {spec.name} in {root}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
        from jaxconv.data.folder import folder_splits

        sources = folder_splits(folder, log=log)
        spec = dataclasses.replace(spec, num_classes=sources["train"].num_classes)
        return spec, sources

    def prepared() -> tfds.core.DatasetBuilder:
        with _one_preparer(spec, data_dir, log):
            try:
                builder = tfds_builder(spec, data_dir, image_size=image_size, shapes_examples=shapes_examples)
                prepare(builder, spec, data_dir, log)
            except DatasetDamaged as e:
                if spec.tfds_name != "jaxconv_shapes":
                    raise
                # The built-in dataset is generated here, deterministically: it is made again.
                log(f"the built-in dataset in {e.path} is damaged ({e.problem}); generating it again")
                shutil.rmtree(e.path)
                builder = tfds_builder(spec, data_dir, image_size=image_size, shapes_examples=shapes_examples)
                prepare(builder, spec, data_dir, log)
        if not builder.info.splits:  # made by another machine after this builder looked: read it now
            builder = tfds_builder(spec, data_dir, image_size=image_size, shapes_examples=shapes_examples)
        return builder

    if prepare_first is not None:  # several processes: one prepares while the others wait
        prepare_first(prepared)
    builder = prepared()  # (then each checks its own copy: it may not see the shared one)
    return spec, {
        "train": TFDSSource(builder, spec.train_split, spec),
        "eval": TFDSSource(builder, spec.eval_split, spec),
    }
