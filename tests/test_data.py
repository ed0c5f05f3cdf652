"""Data: the built-in dataset, the real TFDS builders (mocked), folders, and the input pipeline."""

from __future__ import annotations

import dataclasses
import io
import time

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxconv.data import augment, pipeline
from jaxconv.data.folder import folder_splits
from jaxconv.data.procedural import CLASS_NAMES, example_rng, render
from jaxconv.data.sources import (
    DATASETS,
    DatasetUnavailable,
    TFDSSource,
    open_dataset,
    prepare,
    tfds_builder,
)

tfds.disable_progress_bar()


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small generated copy of the built-in dataset (16 px, 120 train / 30 test examples)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    spec, sources = open_dataset("shapes", data_dir=str(data_dir), image_size=16, shapes_examples=(120, 30),
                                 log=lambda _: None)
    return spec, sources, data_dir


def preprocess(spec, size=16, **kwargs):
    return pipeline.Preprocess(image_size=size, mean=spec.mean, std=spec.std, **kwargs)


# --- the built-in dataset ---------------------------------------------------------------------------


def test_rendering_is_deterministic_and_works_at_any_resolution():
    for size in (16, 32, 97, 224):
        image = render(3, example_rng(0, "train", 5), size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    a = render(4, example_rng(1, "train", 9), 32)
    np.testing.assert_array_equal(a, render(4, example_rng(1, "train", 9), 32))
    assert not np.array_equal(a, render(4, example_rng(1, "train", 10), 32))
    assert not np.array_equal(a, render(4, example_rng(1, "test", 9), 32))


def test_colour_and_intensity_do_not_reveal_the_class():
    """A linear classifier on global colour/intensity statistics stays near chance (10%)."""
    count = 1500
    features, labels = [], []
    for i in range(count):
        image = render(i % 10, example_rng(11, "train", i), 24).astype(np.float32) / 255
        gray = image.mean(-1)
        histogram = np.histogram(gray, bins=8, range=(0, 1))[0] / gray.size
        features.append(np.concatenate([image.mean((0, 1)), image.std((0, 1)), [gray.mean(), gray.std()], histogram]))
        labels.append(i % 10)
    x = np.concatenate([np.array(features), np.ones((count, 1))], axis=1)
    y = np.array(labels)
    train, test = slice(0, 1200), slice(1200, None)
    weights = np.linalg.lstsq(x[train], np.eye(10)[y[train]], rcond=None)[0]
    accuracy = ((x[test] @ weights).argmax(1) == y[test]).mean()
    assert accuracy < 0.2
    class_means = [x[train][y[train] == k, 6].mean() for k in range(10)]
    assert max(class_means) - min(class_means) < 0.05  # mean intensity per class


def test_builder_generates_balanced_deterministic_splits(shapes, tmp_path):
    spec, sources, _ = shapes
    assert (len(sources["train"]), len(sources["eval"])) == (120, 30)
    assert spec.num_classes == len(CLASS_NAMES) == 10
    record = sources["train"].fetch(np.array([0, 1]))
    images, labels = zip(*(sources["train"].decode(tf.constant(r)) for r in record))
    assert images[0].shape == (16, 16, 3) and images[0].dtype == tf.uint8
    all_labels = [int(sources["train"].decode(tf.constant(r))[1]) for r in sources["train"].fetch(np.arange(120))]
    assert np.bincount(all_labels).tolist() == [12] * 10
    # A second generation elsewhere yields the same records in the same order.
    _, again = open_dataset("shapes", data_dir=str(tmp_path), image_size=16, shapes_examples=(120, 30),
                            log=lambda _: None)
    assert list(again["train"].fetch(np.arange(5))) == list(sources["train"].fetch(np.arange(5)))


# --- the input pipeline --------------------------------------------------------------------------------


def first_batches(source, spec, count, **kwargs):
    ds = pipeline.train_dataset(source, preprocess(spec, augment="cifar"), **kwargs)
    iterator = ds.as_numpy_iterator()
    return [next(iterator) for _ in range(count)]


def test_training_order_is_a_function_of_seed_and_step(shapes):
    spec, sources, _ = shapes
    train = sources["train"]
    batches = first_batches(train, spec, 9, global_batch=24, seed=3)
    assert batches[0]["image"].shape == (24, 16, 16, 3) and batches[0]["label"].dtype == np.int32
    resumed = first_batches(train, spec, 2, global_batch=24, seed=3, start_step=6)
    for a, b in zip(batches[6:8], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    other_seed = first_batches(train, spec, 1, global_batch=24, seed=4)
    assert not np.array_equal(other_seed[0]["image"], batches[0]["image"])


def test_each_process_reads_its_own_part_of_the_same_global_batch(shapes):
    spec, sources, _ = shapes
    whole = first_batches(sources["train"], spec, 3, global_batch=24, seed=0)
    parts = [first_batches(sources["train"], spec, 3, global_batch=24, seed=0, process_index=p, process_count=3)
             for p in range(3)]
    for step in range(3):
        joined = np.concatenate([parts[p][step]["image"] for p in range(3)])
        np.testing.assert_array_equal(joined, whole[step]["image"])


def test_the_training_pipeline_has_no_generator_dataset(shapes):
    """On Python 3.11 tf.data's GeneratorDataset kernel pins glibc's mmap threshold at 128 KiB for the
    whole process; XLA's CPU convolutions then page-fault through fresh buffers at every step and a
    small network trains at half speed (docs/benchmarks.md). The pipeline must not contain one."""
    spec, sources, _ = shapes
    ds = pipeline.train_dataset(sources["train"], preprocess(spec, augment="cifar"), global_batch=24, seed=0)
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert {"MapDataset", "ParallelMapDatasetV2", "BatchDatasetV2"} <= ops  # the whole graph was read
    assert not {op for op in ops if op.startswith("GeneratorDataset")}


def test_an_epoch_visits_every_example_once():
    order = pipeline.epoch_permutation(0, 0, 120)
    assert sorted(order.tolist()) == list(range(120))
    assert not np.array_equal(order, pipeline.epoch_permutation(0, 1, 120))


def test_evaluation_counts_every_example_exactly_once(shapes):
    spec, sources, _ = shapes
    source = sources["eval"]  # 30 examples
    expected = sorted(int(source.decode(tf.constant(r))[1]) for r in source.fetch(np.arange(30)))
    for processes in (1, 2):
        seen, steps_per_process = [], set()
        for p in range(processes):
            ds, steps = pipeline.eval_dataset(source, preprocess(spec), global_batch=8, process_index=p,
                                              process_count=processes)
            batches = list(ds.as_numpy_iterator())
            steps_per_process.add(len(batches))
            assert len(batches) == steps
            for batch in batches:
                seen += batch["label"][batch["mask"] > 0].tolist()
        assert len(steps_per_process) == 1  # every process runs the same number of steps
        assert sorted(seen) == expected and len(seen) == 30


def test_ten_crop_views(shapes):
    spec, sources, _ = shapes
    ds, _ = pipeline.eval_dataset(sources["eval"], preprocess(spec), global_batch=4, ten_crop=True)
    batch = next(ds.as_numpy_iterator())
    assert batch["image"].shape == (4, 10, 16, 16, 3)
    image = tf.random.uniform((20, 24, 3), 0, 255)
    views = augment.ten_crop(image, 16, resize_ratio=1.0)  # shorter side 16: 16 x 20
    resized = augment.resize_shorter_side(image, 16)
    np.testing.assert_allclose(views[0], resized[:16, :16])  # top-left
    np.testing.assert_allclose(views[3], resized[-16:, -16:])  # bottom-right
    np.testing.assert_allclose(views[9], tf.image.flip_left_right(views[4]))  # mirrored centre


def test_augmentation_recipes():
    image = tf.cast(tf.random.uniform((40, 60, 3), 0, 256, tf.int32), tf.uint8)
    seed = tf.constant([1, 2], tf.int64)
    for recipe in augment.AUGMENTATIONS:
        out, shift = augment.train_augment(image, 32, recipe, seed)
        assert out.shape == (32, 32, 3) and out.dtype == tf.uint8 and shift.shape == (3,)
        np.testing.assert_array_equal(out, augment.train_augment(image, 32, recipe, seed)[0])  # stateless
        assert (float(tf.reduce_max(tf.abs(shift))) > 0) == (recipe == "alexnet")  # AlexNet's lighting only
    with pytest.raises(ValueError, match="augment"):
        augment.train_augment(image, 32, "mixup", seed)


def test_a_long_strip_is_cut_to_its_middle_before_the_shorter_side_is_resized():
    """A 1 x 60,000 px image resized to 256 on its shorter side was 256 x 15,360,000 px: the input pipeline ran
    out of memory (and the run hung). The middle 16:1 part is resized instead; the centre crop is the same."""
    rng = np.random.default_rng(0)
    strip = tf.constant(rng.integers(0, 256, (4, 1000, 3), dtype=np.uint8))  # 250:1
    whole = augment.center_crop(tf.image.resize(tf.cast(strip, tf.float32), (19, 4750), antialias=True), 16)
    view = augment.eval_view(strip, 16, "center")  # shorter side to ceil(16 * 256 / 224) = 19
    assert np.abs(view.numpy() - whole.numpy()).max() < 0.01  # of 255 grey levels: the scale's last bits
    assert augment.resize_shorter_side(tf.cast(strip, tf.float32), 19).shape == (19, 19 * 16, 3)
    huge = tf.zeros((1, 60_000, 3), tf.uint8)
    image, _ = augment.train_augment(huge, 224, "alexnet", tf.constant([0, 1], tf.int64))
    assert image.shape == (224, 224, 3)
    assert augment.ten_crop(huge, 224).shape == (10, 224, 224, 3)
    square = tf.constant(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))  # untouched below 16:1
    assert np.array_equal(augment.resize_shorter_side(tf.cast(square, tf.float32), 19).numpy(),
                          tf.image.resize(tf.cast(square, tf.float32), (25, 19), antialias=True).numpy())


def test_views_are_rounded_to_8_bits_not_cut():
    """The host sends 8-bit views: the float view rounded (at most half a grey level off), as PIL does."""
    image = tf.cast(tf.random.uniform((40, 60, 3), 0, 256, tf.int32), tf.uint8)
    view, _ = augment.train_augment(image, 32, "none", tf.constant([0, 0], tf.int64))
    exact = tf.image.resize(tf.cast(image, tf.float32), (32, 32), antialias=True).numpy()
    np.testing.assert_array_equal(view.numpy(), np.round(exact))
    assert np.abs(view.numpy() - exact).max() <= 0.5


def test_model_inputs_normalise_8_bit_images_on_the_device():
    from jaxconv.train.steps import StepOptions, model_inputs

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
    options = StepOptions(num_classes=3, mean=mean, std=std)
    np.testing.assert_allclose(model_inputs({"image": images}, options), (images - np.array(mean)) / np.array(std),
                               rtol=1e-6)
    shift = np.array([[1.5, -2.0, 0.25], [0.0, 3.0, -1.0]], np.float32)  # AlexNet's lighting, per example
    np.testing.assert_allclose(model_inputs({"image": images, "lighting": shift}, options),
                               (images + shift[:, None, None] - np.array(mean)) / np.array(std), rtol=1e-6)
    ten_crops = np.stack([images] * 10, axis=1)  # (b, 10, h, w, c) evaluation views
    assert model_inputs({"image": ten_crops}, options).shape == ten_crops.shape
    half = model_inputs({"image": images}, dataclasses.replace(options, input_dtype="bfloat16"))
    assert half.dtype == jnp.bfloat16
    normalised = np.zeros((2, 4, 4, 3), np.float32)
    assert model_inputs({"image": normalised}, options) is normalised  # floats are already model inputs
    with pytest.raises(ValueError, match="mean and std"):
        model_inputs({"image": images}, StepOptions(num_classes=3))


# --- the Inception crop, decoded from the JPEG ----------------------------------------------------------


def jpeg(image, **options):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", **options)
    return tf.constant(buffer.getvalue())


@pytest.mark.parametrize("options", [
    {"quality": 90, "subsampling": 2},  # 4:2:0, as ImageNet's files mostly are
    {"quality": 75, "subsampling": 1},  # 4:2:2
    {"quality": 95, "subsampling": 0},  # 4:4:4
    {"quality": 85, "subsampling": 2, "progressive": True},
])
def test_the_jpeg_crop_is_the_crop_of_the_whole_decoded_image(options):
    """Decoding only the crop window (and a margin) gives, pixel for pixel, what decoding the whole
    file and cropping gave: the augmentation is unchanged, only cheaper."""
    from jaxconv.bench.data import synthetic_images

    for i, image in enumerate(synthetic_images(2, size=None, seed=7)):
        data = jpeg(image, **options)
        whole = tf.io.decode_jpeg(data, channels=3)
        for s in range(12):
            seed = tf.constant([s, i], tf.int64)
            from_file, _ = augment.train_augment(data, 64, "inception", seed, channels=3)
            np.testing.assert_array_equal(from_file, augment.train_augment(whole, 64, "inception", seed)[0])
    gray = jpeg(np.asarray(image[..., 0]), quality=90)  # a grayscale file, read as RGB
    seed = tf.constant([3, 3], tf.int64)
    np.testing.assert_array_equal(augment.train_augment(gray, 64, "inception", seed, channels=3)[0],
                                  augment.train_augment(tf.io.decode_jpeg(gray, channels=3), 64, "inception", seed)[0])
    png = tf.io.encode_png(image)  # not a JPEG: decoded whole, then cropped
    np.testing.assert_array_equal(augment.train_augment(png, 64, "inception", seed, channels=3)[0],
                                  augment.train_augment(image, 64, "inception", seed)[0])


def test_inception_crop_areas_aspects_and_flips():
    """Szegedy et al.'s ranges: 8-100% of the area, aspect 3/4-4/3; half the crops mirrored."""
    shape = tf.constant([375, 500, 3])
    areas, aspects = [], []
    for s in range(400):
        _, size = augment.inception_window(shape, tf.constant([s, 1], tf.int64))
        height, width = size.numpy()[:2]
        areas.append(height * width / (375 * 500))
        aspects.append(width / height)
    areas, aspects = np.array(areas), np.array(aspects)
    assert areas.min() >= 0.08 - 0.01 and areas.max() <= 1.0
    assert np.all((aspects > 0.74) & (aspects < 1.35))
    assert 0.3 < np.median(areas) < 0.7 and areas.max() > 0.9 and areas.min() < 0.15  # the whole range is used
    flips = [bool(np.array_equal(augment.random_flip(tf.constant([[[1], [2]]]), tf.constant([s, 2], tf.int64)),
                                 [[[2], [1]]])) for s in range(400)]
    assert 0.42 < np.mean(flips) < 0.58  # 0.5 within 3 standard deviations of 400 draws


# --- the real TFDS builders, mocked ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,recipe,size",
    [("cifar10", "cifar", 32), ("imagenet2012", "inception", 224), ("imagenet2012", "alexnet", 227)],
)
def test_real_builders_feed_the_pipeline(name, recipe, size, tmp_path):
    spec = DATASETS[name]
    with tfds.testing.mock_data(num_examples=24):
        builder = tfds_builder(spec, str(tmp_path))
        train = TFDSSource(builder, spec.train_split, spec)
        evaluation = TFDSSource(builder, spec.eval_split, spec)
        batch = next(pipeline.train_dataset(train, preprocess(spec, size, augment=recipe), global_batch=8,
                                            seed=0).as_numpy_iterator())
        assert batch["image"].shape == (8, size, size, 3) and batch["image"].dtype == np.uint8
        assert ("lighting" in batch) == (recipe == "alexnet")
        assert batch["label"].min() >= 0 and batch["label"].max() < spec.num_classes
        ds, steps = pipeline.eval_dataset(evaluation, preprocess(spec, size, eval_crop="center"), global_batch=10)
        batches = list(ds.as_numpy_iterator())
        assert sum(b["mask"].sum() for b in batches) == len(evaluation) and len(batches) == steps
        views, _ = pipeline.eval_dataset(evaluation, preprocess(spec, size), global_batch=4, ten_crop=True)
        assert next(views.as_numpy_iterator())["image"].shape == (4, 10, size, size, 3)


def test_missing_imagenet_says_which_files_go_where(tmp_path):
    spec = DATASETS["imagenet2012"]
    with pytest.raises(DatasetUnavailable) as error:
        prepare(tfds_builder(spec, str(tmp_path)), spec, str(tmp_path), log=lambda _: None)
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message


def test_a_manual_download_that_is_not_a_tar_is_one_line_and_leaves_nothing(tmp_path):
    spec = DATASETS["imagenet2012"]
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in spec.manual_files:  # a login page saved under the tar's name: tarfile's ReadError was a traceback
        (manual / name).write_text("<html>please sign in</html>")
    with pytest.raises(DatasetUnavailable, match=r"is not the archive it is named as \(ReadError"):
        prepare(tfds_builder(spec, str(tmp_path)), spec, str(tmp_path), log=lambda _: None)
    assert {p.name for p in tmp_path.rglob("*")} == {"downloads", "manual", *spec.manual_files}  # no extracted/


def test_missing_dataset_without_network_fails_fast(tmp_path, monkeypatch):
    import jaxconv.data.sources as sources

    monkeypatch.setattr(sources, "_reachable", lambda host, timeout=5.0: False)
    spec = DATASETS["cifar10"]
    started = time.time()
    with pytest.raises(DatasetUnavailable) as error:
        prepare(tfds_builder(spec, str(tmp_path)), spec, str(tmp_path), log=lambda _: None)
    assert time.time() - started < 10
    message = str(error.value)
    assert "cifar10" in message and "www.cs.toronto.edu" in message and str(tmp_path) in message


def test_reachability_probe_is_bounded():
    started = time.time()
    import jaxconv.data.sources as sources

    sources._reachable("unreachable.invalid", timeout=1.0)
    assert time.time() - started < 5


# --- a folder of class subfolders ----------------------------------------------------------------------------


def write_images(root, classes, per_class, size=(12, 10)):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((*size, 3), (20 * i) % 256, np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            data = tf.io.encode_png(pixels) if suffix == ".png" else tf.io.encode_jpeg(pixels)
            tf.io.write_file(str(root / c / f"{i}{suffix}"), data)


def test_folder_with_split_subfolders(tmp_path):
    write_images(tmp_path / "train", ["cat", "dog"], 4)
    write_images(tmp_path / "val", ["cat", "dog"], 2)
    sources = folder_splits(tmp_path)
    assert (len(sources["train"]), len(sources["eval"])) == (8, 4)
    assert sources["train"].classes == ("cat", "dog")
    image, label = sources["eval"].decode(tf.constant(sources["eval"].fetch(np.array([3]))[0]))
    assert image.shape == (12, 10, 3) and int(label) == 1
    spec = DATASETS["folder"]
    batch = next(pipeline.train_dataset(sources["train"], preprocess(spec, 8, augment="inception"), global_batch=4,
                                        seed=0).as_numpy_iterator())
    assert batch["image"].shape == (4, 8, 8, 3)


def test_folder_of_class_subfolders_holds_out_a_deterministic_part(tmp_path):
    write_images(tmp_path, ["a", "b", "c"], 30)
    first, second = folder_splits(tmp_path), folder_splits(tmp_path)
    train, held = len(first["train"]), len(first["eval"])
    assert train + held == 90 and 0 < held < 30
    assert list(first["eval"].fetch(np.arange(held))) == list(second["eval"].fetch(np.arange(held)))
    with pytest.raises(DatasetUnavailable, match="not a directory"):
        folder_splits(tmp_path / "missing")


@pytest.mark.parametrize("layout", ["Train+Val", "train only", "train+dev", "val is a file"])
def test_split_folders_the_layout_does_not_take_are_named_as_splits_not_trained_as_classes(tmp_path, layout):
    """Train/ + Val/ trained a two-class 'Train vs Val' classifier; train/ alone was 'one class subfolder'."""
    names = {"Train+Val": ("Train", "Val"), "train only": ("train",), "train+dev": ("train", "dev"),
             "val is a file": ("train",)}[layout]
    for name in names:
        write_images(tmp_path / name, ["cat", "dog"], 2)
    if layout == "val is a file":
        (tmp_path / "val").write_text("not a folder")
    with pytest.raises(DatasetUnavailable, match=r"which look like splits, not classes; splits are train/ and one "
                                                 r"of val/"):
        folder_splits(tmp_path)


def test_a_hold_out_that_leaves_a_split_or_a_class_empty_says_so(tmp_path):
    """Held-out files are chosen by a hash of their path: with few images a class (or the whole evaluation
    split) can come out empty, which was reported as unreadable images or trained without the class."""
    import zlib

    def named(held: bool, start: int = 0) -> str:
        return next(f"{i}.png" for i in range(start, 10_000)
                    if (zlib.crc32(f"a/{i}.png".encode()) % 1000 < 100) == held)

    write_images(tmp_path / "few", ["b"], 0)
    (tmp_path / "few" / "a").mkdir()
    pixels = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8))
    tf.io.write_file(str(tmp_path / "few" / "a" / named(False)), pixels)
    tf.io.write_file(str(tmp_path / "few" / "b" / named(False).replace("a/", "")), pixels)
    with pytest.raises(DatasetUnavailable, match="left no image to evaluate on: 2 images are too few"):
        folder_splits(tmp_path / "few")
    for path in (tmp_path / "few" / "a").iterdir():
        path.unlink()
    tf.io.write_file(str(tmp_path / "few" / "a" / named(True)), pixels)
    with pytest.raises(DatasetUnavailable, match=r"class folder .*few/a has 1 image\(s\), all held out"):
        folder_splits(tmp_path / "few")


def test_closing_device_batches_releases_the_input_iterator_at_once():
    """DeviceBatches.close() stops its producer and drops the tf.data iterator on the closing
    thread: an iterator left for the interpreter's exit waited up to a minute there for its
    autotuning thread (`jaxconv train` sat 23-45 s after its last line)."""
    import gc
    import weakref

    from jaxconv.data.prefetch import DeviceBatches

    dataset = tf.data.Dataset.range(1_000_000).map(lambda i: i * 2, num_parallel_calls=tf.data.AUTOTUNE)
    iterator = dataset.batch(4).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    alive = weakref.ref(iterator)
    batches = DeviceBatches(iterator, put=lambda batch: batch, ahead=1)
    del iterator
    assert list(next(batches)) == [0, 2, 4, 6]
    time.sleep(0.2)  # the producer fills the queue and waits for room
    gc.disable()  # released by reference counting, not by a later collection
    try:
        batches.close()
        assert not batches._thread.is_alive() and alive() is None
    finally:
        gc.enable()


def test_the_pipelines_run_without_tf_data_autotuning_thread_and_use_every_core():
    """Deleting a tf.data iterator waits for its autotuning thread, whose wake-ups come up to a minute
    apart late in a run and which sometimes misses the one cancellation gives (a run's end sat 0-60 s;
    docs/benchmarks.md); without that thread, AUTOTUNE's parallel calls must still reach every core
    the process may use, past tf.data's default of 16."""
    import os

    from jaxconv.data.source import dataset_options

    options = dataset_options()
    assert options.autotune.enabled is False
    assert options.autotune.initial_parallelism == len(os.sched_getaffinity(0))


def test_evaluation_views_are_torchvisions_resize_and_centre_crop_of_pils_pixels(tmp_path):
    """torchvision's Resize(256) + CenterCrop(224) on PIL's decode: the long side int(256 * long / short) (it was
    rounded: 640 x 427 resized to 384, not 383), the offset int(round(excess / 2)) with a half to even (it was
    floored), and the JPEG decoded with the accurate inverse DCT as PIL does (TensorFlow's default fast one was
    up to 20 grey levels off). Views were up to 145 grey levels off, a pixel's shift; now within 1."""
    from PIL import Image

    from jaxconv.data.catalog import DATASETS

    rng = np.random.default_rng(0)
    sizes = {"c0": (640, 427), "c1": (1023, 257), "c2": (301, 299), "c3": (500, 334), "c4": (333, 500)}
    for name, (w, h) in sizes.items():  # one class per image, so that a view's label names its file
        for split in ("train", "val"):
            (tmp_path / split / name).mkdir(parents=True)
        waves = 128 + 100 * np.sin(np.add.outer(np.arange(h) / 9.0, np.arange(w) / 13.0))[..., None]
        pixels = np.clip(waves + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)  # smooth, with texture
        Image.fromarray(pixels).save(tmp_path / "val" / name / "x.jpg", quality=95, subsampling=0)
        Image.fromarray(pixels[:64, :64]).save(tmp_path / "train" / name / "t.jpg")
    splits = folder_splits(tmp_path)
    ds, _ = pipeline.eval_dataset(splits["eval"], preprocess(DATASETS["folder"], 224, eval_crop="center"),
                                  global_batch=1)
    seen = []
    for batch in ds.as_numpy_iterator():
        name = sorted(sizes)[int(batch["label"][0])]
        w, h = sizes[name]
        size = (256, 256 * h // w) if w <= h else (256 * w // h, 256)
        resized = Image.open(tmp_path / "val" / name / "x.jpg").convert("RGB").resize(size, Image.BILINEAR)
        left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
        expected = np.asarray(resized.crop((left, top, left + 224, top + 224))).astype(int)
        assert np.abs(batch["image"][0].astype(int) - expected).max() <= 1, (name, size)
        seen.append(name)
    assert sorted(seen) == sorted(sizes)
