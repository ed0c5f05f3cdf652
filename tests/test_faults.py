"""Faults: broken and interrupted checkpoints, full disks, unwritable workdirs, NaN rollback, bad images."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import signal
import re
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from jaxconv.checkpoint import CheckpointWriteError, Checkpoints, KeepSealed
from jaxconv.manifest import MANIFEST
from jaxconv.cli import main
from jaxconv.data.folder import folder_splits
from jaxconv.data.sources import DatasetUnavailable
from jaxconv.train.config import validate
from jaxconv.train.loop import TrainingDiverged, train
from tiny import tiny_config

pytestmark = pytest.mark.xdist_group("faults")


def toy_state(value: float) -> dict:
    return {"w": jnp.full((64, 64), value, jnp.float32), "b": jnp.full((8,), value, jnp.float32)}


def saved(tmp_path, steps=(1, 2), keep=3) -> tuple[Checkpoints, list[str]]:
    messages: list[str] = []
    checkpoints = Checkpoints(tmp_path, keep=keep, log=messages.append)
    for step in steps:
        checkpoints.save(step, toy_state(step), {"step": step})
        checkpoints.wait()
    return checkpoints, messages


def largest_file(directory: pathlib.Path) -> pathlib.Path:
    return max((p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST), key=lambda p: p.stat().st_size)


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Stands in for a full disk: a write past ``nbytes`` of a file fails (EFBIG) instead of killing the process."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)


# --- broken checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_a_broken_latest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage):
    checkpoints, messages = saved(tmp_path)
    assert (checkpoints.step_directory(2) / MANIFEST).exists()  # sealed once written
    victim = largest_file(checkpoints.step_directory(2))
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    else:
        victim.write_bytes(data[:-16] + bytes(b ^ 0xFF for b in data[-16:]))
    state, meta, step = checkpoints.restore_latest(toy_state(0.0))
    assert step == 1 and meta["step"] == 1 and float(state["w"][0, 0]) == 1.0
    assert len(messages) == 1 and messages[0].startswith("checkpoint 2 is broken")
    assert ("truncated" if damage == "truncate" else "checksum") in messages[0]
    kept = list((tmp_path / "broken_checkpoints").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("2-")  # kept for inspection, not deleted
    assert checkpoints.all_steps() == [1]
    checkpoints.close()


def test_an_unsealed_unreadable_checkpoint_is_also_caught(tmp_path):
    checkpoints, messages = saved(tmp_path)
    directory = checkpoints.step_directory(2)
    (directory / MANIFEST).unlink()  # as if killed right after the save, before sealing
    for path in directory.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "state" in str(path):
            path.write_bytes(b"\0")
    _, _, step = checkpoints.restore_latest(toy_state(0.0))
    assert step == 1 and "unreadable" in messages[0]
    checkpoints.close()


def test_an_unsealed_checkpoint_that_reads_but_holds_nan_is_broken(tmp_path):
    """Without a manifest nothing checks a checkpoint's bytes; a corruption that still reads (as NaN
    here) is caught because a run never saves a state that is not finite."""
    checkpoints, messages = saved(tmp_path)
    checkpoints.save(3, toy_state(float("nan")), {"step": 3})
    checkpoints.wait()
    (checkpoints.step_directory(3) / MANIFEST).unlink()  # as if its run was killed before sealing it
    _, _, step = checkpoints.restore_latest(toy_state(0.0))
    assert step == 2 and len(messages) == 1 and "NaN or infinite values" in messages[0]
    checkpoints.close()


def test_a_checkpoint_a_killed_run_left_unsealed_is_sealed_on_restore_and_the_others_pruned(tmp_path):
    """A run killed between a save and its seal leaves it unsealed; the next run seals the one it
    resumes from, and drops older leftovers as it would sealed ones (they were kept for ever)."""
    checkpoints, messages = saved(tmp_path, steps=(1, 2, 3))
    checkpoints.close()
    for step in (1, 3):
        (tmp_path / "checkpoints" / str(step) / MANIFEST).unlink()
    reopened = Checkpoints(tmp_path, keep=2, log=messages.append)
    state, _, step = reopened.restore_latest(toy_state(0.0))
    assert step == 3 and float(state["w"][0, 0]) == 3.0 and reopened.is_sealed(3) and not messages
    for step in (4, 5):
        reopened.save(step, toy_state(step), {"step": step})
        reopened.wait()
    assert reopened.all_steps() == [4, 5]
    reopened.close()


def test_a_finished_save_is_sealed_without_waiting_for_the_next_one(tmp_path):
    """The loop asks after every step; a run killed between two saves then leaves the first sealed."""
    checkpoints = Checkpoints(tmp_path, keep=3)
    checkpoints.save(1, toy_state(1.0), {"step": 1})
    deadline = time.time() + 60
    while not checkpoints.is_sealed(1) and time.time() < deadline:
        checkpoints.seal_finished()
        time.sleep(0.01)
    assert checkpoints.is_sealed(1)
    checkpoints.close()


def test_a_reader_beside_a_training_run_skips_checkpoints_deleted_while_it_reads(tmp_path):
    """`jaxconv eval` on a run that is training: checkpoints it listed may be pruned before it reads
    them, and newer ones appear; neither is a broken checkpoint."""
    writer, _ = saved(tmp_path, steps=(1, 2, 3))
    messages: list[str] = []
    reader = Checkpoints(tmp_path, read_only=True, log=messages.append)
    assert reader.all_steps() == [1, 2, 3]
    writer.save(4, toy_state(4.0), {"step": 4})
    writer.wait()
    writer.manager.delete(3)
    state, _, step = reader.restore_latest(toy_state(0.0))
    assert step == 4 and float(state["w"][0, 0]) == 4.0 and not messages
    assert not (tmp_path / "broken_checkpoints").exists()
    reader.close(), writer.close()


def test_an_interrupted_write_is_never_restored_and_is_cleaned_up(tmp_path):
    checkpoints, _ = saved(tmp_path)
    checkpoints.close()
    partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp"  # what a SIGKILL mid-write leaves
    shutil.copytree(tmp_path / "checkpoints" / "2", partial)
    largest_file(partial).write_bytes(b"")
    reopened = Checkpoints(tmp_path, keep=3)
    assert reopened.all_steps() == [1, 2]
    state, _, step = reopened.restore_latest(toy_state(0.0))
    assert step == 2
    reopened.save(3, state, {"step": 3})  # the resumed run writes step 3 again, cleanly
    reopened.wait()
    assert not partial.exists() and reopened.all_steps() == [1, 2, 3] and reopened.is_sealed(3)
    reopened.close()


def test_no_good_checkpoint_is_deleted_while_the_newest_is_unsealed():
    sealed = {1, 2, 3}
    policy = KeepSealed(keep=1, pending=lambda step: step not in sealed)

    class Info:
        def __init__(self, step, top1=None):
            self.step, self.metrics = step, None if top1 is None else {"top1": top1}

    infos = [Info(1, 0.9), Info(2), Info(3), Info(4)]
    assert policy.should_preserve(infos, context=None) == [True, False, True, True]
    sealed.add(4)
    assert policy.should_preserve(infos, context=None) == [True, False, False, True]


def test_eval_uses_the_previous_checkpoint_when_the_latest_is_broken(tmp_path):
    # (through the same restore path as training; see test_train for a full run)
    checkpoints, messages = saved(tmp_path, steps=(1, 2, 3))
    largest_file(checkpoints.step_directory(3)).write_bytes(b"x")
    with pytest.raises(ValueError, match="checkpoint 3 .* is broken"):
        checkpoints.restore_latest(toy_state(0.0), step=3)  # an explicitly requested step is not replaced
    _, _, step = checkpoints.restore_latest(toy_state(0.0))
    assert step == 2
    checkpoints.close()


# --- writes that fail ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def tiny(data_dir, **changes):
    return validate(tiny_config(data_dir, log_every_steps=1, **changes), device_count=jax.device_count())


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    original = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):  # the disk fills up before step 6 is written
        if step >= 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(CheckpointWriteError) as error:
        train(tiny(data_dir), tmp_path / "run", log=lambda _: None)
    assert "could not write checkpoint 6" in str(error.value)
    assert "no space left on the device" in str(error.value) and "the last good checkpoint (4) is kept" in str(error.value)
    assert Checkpoints(tmp_path / "run", read_only=True).all_steps() == [2, 4]
    # logged every step: the first window holds only the step that compiled, which has no rate (it said 0 img/s)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_sec"] for r in records if r["split"] == "train"]
    assert speeds[0] is None and len(speeds) >= 4 and all(speed > 0 for speed in speeds[1:])


def test_a_save_that_fails_halfway_leaves_no_partial_checkpoint(tmp_path):
    """On a real full disk Orbax's save fails part-way and left its temporary folder (`6.orbax-checkpoint-tmp`)
    holding the space the user then looks for; the failed step is removed (when said, and again once Orbax's
    writer threads have ended, on closing), the sealed ones kept.
    (A file-size limit stands in for the full disk: every file past the first bytes fails to write.)"""
    checkpoints, _ = saved(tmp_path, steps=(1,))
    with file_size_limit(64), pytest.raises(CheckpointWriteError, match=r"could not write checkpoint 2 in .*; the "
                                                                        r"last good checkpoint \(1\) is kept"):
        checkpoints.save(2, toy_state(2.0), {"step": 2})
        checkpoints.wait()
    checkpoints.close()  # as the training loop does when a save failed: Orbax's writer threads have all ended
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["1"]
    reopened = Checkpoints(tmp_path, log=lambda _: None)
    assert reopened.restore_latest(toy_state(0.0))[2] == 1
    reopened.close()


def test_an_unwritable_workdir_is_reported_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main(["train", "--workdir", str(blocker / "run"), "--config.num_train_steps=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 3 and "is not writable" in err[-1]


def test_a_workdir_on_a_full_disk_is_refused_in_one_line_and_leaves_nothing(tmp_path):
    """A full disk lets a file be created but not written: the writability probe must not stay behind,
    nor the workdir the refused run created. (A file-size limit of 1 byte stands in for the full disk.)"""
    from jaxconv.train.workdir import WorkdirError, holding

    existing, new = tmp_path / "existing", tmp_path / "new"
    existing.mkdir()
    with file_size_limit(1):
        for workdir in (existing, new):
            with pytest.raises(WorkdirError, match=f"workdir {re.escape(str(workdir))} is not writable: File too large"):
                with holding(workdir, log=lambda _: None):
                    pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"] and not any(existing.iterdir())


# --- NaN rollback ---------------------------------------------------------------------------------------


def poison_input(monkeypatch, at_step: int, only_first_time: bool):
    """Makes the images of one step NaN, so that its loss is NaN: a stand-in for a numerical blow-up.

    (Poisoning the input rather than the step keeps the compiled step the one other tests use.)
    """
    from jaxconv.data import pipeline
    from jaxconv.data.catalog import DATASETS

    spec = DATASETS["shapes"]
    real = pipeline.train_dataset
    poisoned = []

    def train_dataset(*args, start_step=0, **kwargs):
        dataset = real(*args, start_step=start_step, **kwargs)
        if only_first_time and poisoned:
            return dataset
        poisoned.append(start_step)

        def poison(step, batch):  # float images are model inputs: normalised here, NaN at one step
            image = (tf.cast(batch["image"], tf.float32) - spec.mean) / spec.std
            return {**batch, "image": tf.where(step == at_step, image * np.nan, image)}

        return tf.data.Dataset.zip(tf.data.Dataset.range(start_step + 1, 2**62), dataset).map(poison)

    monkeypatch.setattr(pipeline, "train_dataset", train_dataset)


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    poison_input(monkeypatch, at_step=5, only_first_time=False)
    with pytest.raises(TrainingDiverged, match="became (NaN|infinite) at step 5"):
        train(tiny(data_dir), tmp_path / "run", log=lambda _: None)  # nan_policy="stop", the default
    assert Checkpoints(tmp_path / "run", read_only=True).all_steps() == [2, 4]  # nothing from step 5 on
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())  # a report tells it from a killed run
    assert summary["status"] == "diverged" and "at step 5" in summary["error"] and summary["diverged_at_step"] == 5


def test_nan_rollback_restores_the_last_checkpoint_with_a_lower_learning_rate(data_dir, tmp_path, monkeypatch):
    poison_input(monkeypatch, at_step=5, only_first_time=True)
    messages: list[str] = []
    summary = train(tiny(data_dir, nan_policy="rollback"), tmp_path / "run", log=messages.append)
    assert summary["status"] == "completed" and summary["steps"] == 8 and summary["rollbacks"] == 1
    assert any(re.search("became (NaN|infinite) at step 5", m) and "rolled back to step 4" in m and "x0.5" in m
               and "rollback 1 of at most 3" in m for m in messages)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 4, "split": "rollback", "lr_scale": 0.5, "rollbacks": 1} in records


def test_after_a_rollback_the_logs_show_the_learning_rate_applied_and_a_resume_says_the_scale_stays(
        data_dir, tmp_path, monkeypatch):
    poison_input(monkeypatch, at_step=5, only_first_time=True)
    messages: list[str] = []
    train(tiny(data_dir, nan_policy="rollback"), tmp_path / "run", log=messages.append)
    rollback = next(m for m in messages if "rolled back" in m)
    assert "(learning rate 0.05)" in rollback and "x0.5 (now 0.025;" in rollback  # the rate it stopped at, the new one
    train_records = [r for r in (json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
                                 .splitlines()) if r["split"] == "train"]
    assert {r["step"]: r["learning_rate"] for r in train_records} == {s: 0.05 if s <= 4 else 0.025 for s in range(1, 9)}
    assert all(r.get("lr_scale") == 0.5 for r in train_records if r["step"] > 4)
    messages.clear()  # a resume with another learning_rate still trains at half of it
    config = tiny(data_dir, nan_policy="rollback", learning_rate=0.1, num_train_steps=10)
    train(config, tmp_path / "run", log=messages.append, allow_changes={"learning_rate", "num_train_steps"})
    assert any("x0.5" in m and "learning_rate 0.1 applies as 0.05" in m for m in messages), messages
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-2]
    assert last["step"] == 10 and last["learning_rate"] == 0.05


def test_a_rollback_moves_the_records_of_the_abandoned_steps_aside(data_dir, tmp_path, monkeypatch):
    poison_input(monkeypatch, at_step=4, only_first_time=True)  # step 3 is logged, then rolled back to 2
    messages: list[str] = []
    summary = train(tiny(data_dir, nan_policy="rollback"), tmp_path / "run", log=messages.append)
    assert summary["status"] == "completed" and summary["rollbacks"] == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))  # each step once
    assert {"step": 2, "split": "rollback", "lr_scale": 0.5, "rollbacks": 1} in records
    aside = [json.loads(line) for line in (tmp_path / "run" / "metrics_superseded.jsonl").read_text().splitlines()]
    assert [(r["step"], r["learning_rate"]) for r in aside] == [(3, 0.05)]
    assert any("metrics.jsonl: moved 1 record(s) of steps after 2" in m for m in messages)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))  # TensorBoard drops the abandoned steps too
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/learning_rate")] == \
        [(1, 0.05), (2, 0.05), *((s, 0.025) for s in range(3, 9))]


def test_nan_rollbacks_are_bounded(data_dir, tmp_path, monkeypatch):
    poison_input(monkeypatch, at_step=5, only_first_time=False)
    with pytest.raises(TrainingDiverged, match="after 2 rollbacks"):
        train(tiny(data_dir, nan_policy="rollback", max_rollbacks=2), tmp_path / "run", log=lambda _: None)


# --- bad images in a folder ---------------------------------------------------------------------------------


def write(path: pathlib.Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def test_folder_skips_and_counts_bad_files_and_converts_colour_modes(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        for i in range(6):
            write(tmp_path / c / f"{i}.png", rng.integers(0, 255, (9, 9, 3), dtype=np.uint8))
    write(tmp_path / "cat" / "gray.png", rng.integers(0, 255, (9, 9, 1), dtype=np.uint8))
    write(tmp_path / "dog" / "rgba.png", rng.integers(0, 255, (9, 9, 4), dtype=np.uint8))
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    messages: list[str] = []
    sources = folder_splits(tmp_path, log=messages.append)
    assert len(sources["train"]) + len(sources["eval"]) == 14
    assert len(messages) == 1 and "skipped 2 files" in messages[0]
    assert "cat/broken.jpg" in messages[0] and "dog/notes.txt" in messages[0]
    everything = [sources[s] for s in ("train", "eval")]
    names = {f: (src, i) for src in everything for i, f in enumerate(src._paths)}
    for name in ("gray.png", "rgba.png"):
        src, index = next(v for k, v in names.items() if k.endswith(name.encode()))
        image, _ = src.decode(tf.constant(src.fetch(np.array([index]))[0]))
        assert image.shape == (9, 9, 3)


def test_folder_and_predict_read_an_8_bit_bmp_by_its_palette(tmp_path):
    """TensorFlow's BMP decoder returns an 8-bit BMP's palette indices as grey levels: red read as [167]*3."""
    from PIL import Image

    from jaxconv.pretrained.predict import load_image

    rng = np.random.default_rng(0)
    for c, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        for i in range(6):
            pixels = np.clip(np.asarray(colour) + rng.integers(-9, 9, (8, 8, 3)), 0, 255).astype(np.uint8)
            (tmp_path / c).mkdir(exist_ok=True)
            Image.fromarray(pixels).convert("P").save(tmp_path / c / f"{i}.bmp")
    sources = folder_splits(tmp_path, log=lambda _: None)
    for src in sources.values():
        for index, path in enumerate(src._paths):
            expected = np.asarray(Image.open(path).convert("RGB"))  # torchvision's reading
            image, _ = src.decode(tf.constant(src.fetch(np.array([index]))[0]))
            assert np.array_equal(image.numpy(), expected)
            assert np.array_equal(load_image(path.decode()), expected)


def test_folder_reads_file_names_that_are_not_utf8(tmp_path):
    """Names from another locale (Latin-1 bytes on a UTF-8 system) are read with their labels, and shown escaped."""
    rng = np.random.default_rng(0)
    root = os.fsencode(tmp_path)
    try:
        for c, stem in ((b"caf\xe9", b"\xe9t\xe9"), (b"dog", b"d")):
            os.makedirs(root + b"/" + c)
            for i in range(4):
                tf.io.write_file(root + b"/%s/%s%d.png" % (c, stem, i),
                                 tf.io.encode_png(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)))
        pathlib.Path(os.fsdecode(root + b"/dog/r\xe9sum\xe9.txt")).write_text("not an image")
    except (OSError, UnicodeError):
        pytest.skip("this file system takes UTF-8 names only")
    messages: list[str] = []
    sources = folder_splits(tmp_path, eval_fraction=0.5, log=messages.append)
    messages[0].encode("utf-8")  # printable as it is (no lone surrogates)
    assert "dog/r\\xe9sum\\xe9.txt" in messages[0]
    labels = []
    for src in sources.values():
        for record in src.fetch(np.arange(len(src))):
            image, label = src.decode(tf.constant(record))
            assert image.shape == (9, 9, 3)
            labels.append(int(label))
    assert sorted(labels) == [0] * 4 + [1] * 4


def test_folder_label_outside_the_training_classes_names_the_file(tmp_path):
    for name in ("train/cat/0.png", "train/dog/0.png", "val/cat/0.png", "val/zebra/7.png"):
        write(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetUnavailable, match=r"val/zebra/7.png has label 'zebra', which is outside the 2 "):
        folder_splits(tmp_path)


def test_folder_empty_split_names_it(tmp_path):
    write(tmp_path / "train" / "cat" / "0.png", np.zeros((4, 4, 3), np.uint8))
    write(tmp_path / "train" / "dog" / "0.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "val" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat" / "junk.png").write_bytes(b"junk")
    with pytest.raises(DatasetUnavailable, match=r"the eval split \(.*val\) has no readable images"):
        folder_splits(tmp_path)


def test_folder_class_without_a_readable_image_and_a_single_class_are_refused(tmp_path):
    write(tmp_path / "cat" / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetUnavailable, match=r"one class subfolder \(cat\); a classifier needs at least two"):
        folder_splits(tmp_path)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "1.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DatasetUnavailable, match=r"class folder .*dog has no readable image; add images, or remove"):
        folder_splits(tmp_path)


def test_folder_counts_dangling_symlinks_with_the_skipped_files(tmp_path):
    for name in ("cat/0.png", "cat/1.png", "dog/0.png"):  # (cat/0.png alone is held out for evaluation)
        write(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "dog" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    messages: list[str] = []
    folder_splits(tmp_path, log=messages.append)
    assert len(messages) == 1 and "skipped 1 files" in messages[0] and "dog/gone.png" in messages[0]



def test_folder_follows_links_to_folders_as_torchvision_does_and_reports_a_cycle(tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    for name in ("cat/0.png", "cat/1.png", "dog/0.png"):
        write(root / name, np.zeros((4, 4, 3), np.uint8))
    for name in ("more/2.png", "more/3.png"):
        write(elsewhere / name, np.zeros((4, 4, 3), np.uint8))
    (root / "dog" / "linked").symlink_to(elsewhere / "more", target_is_directory=True)
    (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)
    messages: list[str] = []
    sources = folder_splits(root, log=messages.append)
    # torchvision's ImageFolder (os.walk with followlinks=True) reads dog/linked/2.png and 3.png too
    read = sorted(os.fsdecode(p) for s in ("train", "eval") for p in sources[s]._paths)
    assert read == [str(root / n) for n in ("cat/0.png", "cat/1.png", "dog/0.png", "dog/linked/2.png",
                                            "dog/linked/3.png")]
    assert len(messages) == 1 and "skipped 1 files" in messages[0] and "cat/loop/" in messages[0]

# --- files in the way, offline datasets, inputs in the wrong layout -------------------------------------------


def test_report_and_export_to_a_place_they_cannot_write_say_so_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet20", "dataset": "shapes"}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "eval", "top1": 0.5, "loss": 1.0}) + "\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    for command in (["report", str(run)], ["export", "--model", "resnet18", "--weights", "IMAGENET1K_V1"]):
        assert main([*command, "--out", str(blocker / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"jaxconv: error: --out {blocker / 'out'}: cannot write there (Not a directory)"]


def test_a_download_already_in_the_manual_dir_is_used_offline(tmp_path, monkeypatch):
    from jaxconv.data import sources

    monkeypatch.setattr(sources, "_reachable", lambda host, timeout=5.0: pytest.fail("probed the network"))
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"an interrupted download")
    # TFDS looks there (and checks the file against its registered size and SHA-256) instead of downloading.
    with pytest.raises(DatasetUnavailable, match=r"cifar-10-binary.tar.gz\) is not the one TFDS expects"):
        sources.open_dataset("cifar10", data_dir=str(tmp_path), log=lambda _: None)


def test_a_damaged_built_in_dataset_is_made_again_and_a_damaged_download_is_refused(tmp_path):
    from jaxconv.data.sources import DATASETS, DatasetDamaged, open_dataset, prepare, tfds_builder

    messages: list[str] = []
    options = dict(data_dir=str(tmp_path), image_size=16, shapes_examples=(64, 16), log=messages.append)
    _, sources = open_dataset("shapes", **options)
    whole = sources["train"].fetch(np.arange(64))
    shard = next(tmp_path.rglob("*train.array_record*"))
    os.truncate(shard, shard.stat().st_size // 2)  # a copy cut short: TFDS would read empty records
    # prepare() alone (what every dataset goes through) never deletes: it names the damage
    builder = tfds_builder(DATASETS["shapes"], str(tmp_path), image_size=16, shapes_examples=(64, 16))
    with pytest.raises(DatasetDamaged, match=r"holds 0 records where its dataset_info.json says 64\); delete that "
                                             r"folder and run again"):
        prepare(builder, DATASETS["shapes"], str(tmp_path), log=messages.append)
    _, sources = open_dataset("shapes", **options)  # the built-in dataset: generated again, the same
    assert "is damaged" in messages[-2] and "generating it again" in messages[-2]
    assert (sources["train"].fetch(np.arange(64)) == whole).all()
    next(tmp_path.rglob("dataset_info.json")).write_text("{not json")
    _, sources = open_dataset("shapes", **options)
    assert "dataset_info.json: Failed to load JSON" in messages[-2]
    assert (sources["train"].fetch(np.arange(64)) == whole).all()


def test_two_runs_preparing_one_dataset_at_once_take_turns_and_both_read_it(tmp_path):
    """Two runs started together on one data_dir (a sweep's parallel jobs, a reference run beside a
    multi-process one) raced TFDS's final rename; the loser then removed the folders the winner had
    filled. Now the second waits for the first, says so, and reads what the first made."""
    import threading

    from jaxconv.data.sources import open_dataset

    options = dict(data_dir=str(tmp_path / "data"), image_size=16, shapes_examples=(200, 16))
    first_started, results = threading.Event(), {}

    def run(name, messages):
        def log(message):
            messages.append(message)
            first_started.set()
        results[name] = open_dataset("shapes", log=log, **options)[1]["train"].fetch(np.arange(200))

    first_log, second_log = [], []
    first = threading.Thread(target=run, args=("first", first_log))
    first.start()
    assert first_started.wait(60) and first_log[0].startswith("generating shapes")
    second = threading.Thread(target=run, args=("second", second_log))
    second.start()
    first.join(120), second.join(120)
    assert second_log and second_log[0].startswith("waiting for another run that is preparing shapes in ")
    assert not any(m.startswith("generating") for m in second_log)
    assert (results["first"] == results["second"]).all()


def test_a_full_disk_while_the_built_in_dataset_is_generated_leaves_nothing_behind(tmp_path):
    """A file-size limit stands in for the full disk: writes past it fail as they would with ENOSPC."""
    from jaxconv.data.sources import open_dataset

    with file_size_limit(20_000), pytest.raises(DatasetUnavailable, match=r"preparing it in .* failed \(RuntimeError: "
                                                                          r".*File too large.*; nothing of it was kept"):
        open_dataset("shapes", data_dir=str(tmp_path / "data"), image_size=16, shapes_examples=(400, 40),
                     log=lambda _: None)
    assert not (tmp_path / "data").exists()


def test_a_full_disk_while_a_dataset_is_prepared_is_said_in_a_few_words(tmp_path, monkeypatch):
    """ArrayRecord's writer reports a full disk as a RuntimeError of some 400 characters naming its temporary
    file and chunk numbers (seen on a real 4 MiB disk): the line says the disk is full and what to do. (Its message is raised here after the first examples are written, as the writer does.)"""
    from jaxconv.data.shapes import JaxconvShapes
    from jaxconv.data.sources import open_dataset

    real = JaxconvShapes._generate_examples

    def generate_then_fill_the_disk(self, split, count):
        yield from list(real(self, split, count))[:5]
        raise RuntimeError('Failed to finalize writing of split "train": write() failed: No space left on device; '
                           'writing /d/incomplete.0OEQGD_1.0.0/jaxconv_shapes-train.array_record-00000-of-00001; '
                           'at byte 4190208; Could not submit chunk: 7044')

    monkeypatch.setattr(JaxconvShapes, "_generate_examples", generate_then_fill_the_disk)
    with pytest.raises(DatasetUnavailable) as error:
        open_dataset("shapes", data_dir=str(tmp_path / "data"), image_size=16, shapes_examples=(40, 8),
                     log=lambda _: None)
    assert re.fullmatch(r"dataset 'shapes': preparing it in \S+ failed: no space left on the device; nothing of "
                        r"it was kept; free space there, or give config.data_dir on another disk",
                        str(error.value)), str(error.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_dataset_is_generated_stops_at_once_and_keeps_nothing(tmp_path, signum):
    """Preparing a dataset can take hours and saves nothing: Ctrl-C or SIGTERM there stops at once."""
    from jaxconv.data import shapes

    generated = []

    def signal_at_the_tenth_image():
        generated.append(1)
        if len(generated) == 10:
            os.kill(os.getpid(), signum)

    config = tiny(tmp_path / "data", shapes_train_examples=2000)
    with shapes.reporting(signal_at_the_tenth_image), pytest.raises(KeyboardInterrupt, match=(
            "while the dataset was prepared: stopped at once; nothing of it is kept")):
        train(config, tmp_path / "run", log=lambda _: None)
    assert len(generated) < 2000 and not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_signal_while_a_prepared_dataset_opens_or_the_model_is_built_stops_before_the_first_step(
        data_dir, tmp_path, monkeypatch):
    """Only preparing a dataset is cut at once: a SIGTERM (a preemption) while the start opens a dataset
    that is already prepared, or builds the model, lets the start finish and stops before the first
    step, as a preempted run should (it once ended with exit status 130 and a line about a dataset
    being prepared)."""
    from jaxconv.train import experiment

    real = experiment.get_model

    def get_model_under_preemption(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "get_model", get_model_under_preemption)
    lines = []
    summary = train(tiny(data_dir), tmp_path / "run", log=lines.append)
    assert summary["status"] == "preempted" and summary["steps"] == 0
    assert lines[-1] == "SIGTERM before the first step: stopped; run the same command to start"


def test_a_signal_just_before_a_dataset_is_generated_stops_it_before_it_starts(tmp_path, monkeypatch):
    """A stop request that comes as the dataset is about to be generated (hours, for some) ends the
    start there, as one during the generation does, keeping nothing."""
    from jaxconv.data import sources

    real = sources.tfds_builder

    def builder_under_preemption(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "tfds_builder", builder_under_preemption)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM while the dataset was prepared: stopped at once"):
        train(tiny(tmp_path / "data"), tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_model_given_nchw_or_other_channels_says_which_layout_it_takes():
    from jaxconv.models import get_model

    model = get_model("resnet20")
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, 32, 32, 3)))
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    with pytest.raises(ValueError, match=r"weights take 3 input channels, the input has 32 \(shape \(1, 3, 32, 32\)\); it "
                                         r"looks like NCHW: jaxconv models take NHWC, x.transpose\(0, 2, 3, 1\)"):
        model.apply(variables, jnp.zeros((1, 3, 32, 32)), train=False)
    with pytest.raises(ValueError, match="jaxconv models take NHWC images with 3 channels"):
        model.apply(variables, jnp.zeros((1, 32, 32, 1)), train=False)
    with pytest.raises(ValueError, match=r"stem/conv: the input's shape \(1, 3, 32, 32\) looks like NCHW: jaxconv models "
                                         r"take NHWC images, x.transpose\(0, 2, 3, 1\) gives \(1, 32, 32, 3\)"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, 3, 32, 32)))
    with pytest.raises(TypeError, match=r"stem/conv: expected an \(N, H, W, C\) array of images, got str 'a cat'"):
        model.apply(variables, "a cat", train=False)


def test_inner_maps_are_not_taken_for_nchw_images_only_the_input_is(capsys):
    """12x256 NHWC images make ResNet-20's third stage see (1, 3, 64, 64) maps: not an NCHW image, so accepted;
    an input that does look like NCHW is refused in one line by `jaxconv summary`, not with a traceback."""
    from jaxconv.models import get_model

    model = get_model("resnet20")
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, 12, 256, 3)))
    assert shapes["params"]["stage3"]["block0"]["conv2"]["kernel"].shape == (3, 3, 64, 64)
    assert main(["summary", "resnet20", "--image-size", "12x256", "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["summary", "resnet20", "--image-size", "3x32", "--in-channels", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxconv: error: resnet20 cannot take these inputs (--image-size 3x32 "
                                               "--in-channels 32): stem/conv: the input's shape (1, 3, 32, 32) looks like")


@pytest.mark.parametrize("option, value, needle", [
    ("shortcut", "Z", "shortcut must be one of 'A', 'B', 'C' or None, got 'Z'"),
    ("variant", "v3", "variant must be one of 'v1', 'v1.5' or None"),
    ("dtype", "float33", "dtype is the compute dtype, a floating type"),
    ("dtype", "int8", "dtype is the compute dtype, a floating type"),
    ("norm", "banana", "norm='banana': expected one of batch, group, layer or None"),
    ("drop_path_rate", 2.0, "drop_path_rate is a probability, 0 <= drop_path_rate < 1, got 2.0"),
    ("dropout", -0.5, "dropout is a probability"),
    ("stem", "imgnet", "stem must be one of 'imagenet', 'cifar' (or a module), got 'imgnet'"),
    ("block", "bottleneck", "block takes a module or function (its default: Bottleneck), not the string 'bottleneck'"),
    ("zero_init_last", "no", "zero_init_last takes True or False (its default: False), got 'no'"),
    ("depths", 16, "depths takes a sequence (its default: (3, 4, 6, 3)), got 16"),
    ("stem_width", "64", "stem_width takes a number (its default: 64), got '64'"),
])
def test_get_model_checks_option_values_when_it_builds_the_model(option, value, needle):
    """As torchvision's constructors do: a wrong value is refused by get_model, not deep inside init (or never)."""
    from jaxconv.models import get_model

    with pytest.raises(ValueError, match=re.escape(f"resnet50: {needle}")):
        get_model("resnet50", **{option: value})
    for fine in ({"shortcut": "A"}, {"variant": "v1"}, {"dtype": jnp.bfloat16}, {"dtype": "float16"}, {"norm": "group"},
                 {"norm": None}, {"drop_path_rate": 0.1}, {"dropout": 0}, {"stem": "cifar"}):
        get_model("resnet50", **fine)
    # A stem by name (what a config file holds): ResNet-20 with ImageNet's 7x7/2 stem and max pool.
    model = get_model("resnet20", stem="imagenet")
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 32, 32, 3), "float32"))
    assert variables["params"]["stem"]["conv"]["kernel"].shape == (7, 7, 3, 16)


def test_summary_options_read_true_and_false_as_the_configs_write_them(capsys):
    """`--option aux_logits=false` was the string 'false', which Python takes for true: GoogLeNet was counted
    with its auxiliary heads (13,378,280 parameters, docs/analysis.md, instead of 6,998,552 without)."""
    for text in ("aux_logits=false", "aux_logits=False", "aux_logits=FALSE"):
        assert main(["summary", "googlenet", "--option", text, "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["params"] == 6_998_552
    assert main(["summary", "resnet20", "--option", "zero_init_last=maybe"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "jaxconv: error: --option zero_init_last='maybe': resnet20 refuses it: zero_init_last takes True or False "
        "(its default: False), got 'maybe'"]


def test_api_calls_with_the_wrong_kind_of_argument_say_what_they_take():
    import jaxconv
    from jaxconv.pretrained.weights import UnknownWeightsError

    with pytest.raises(TypeError, match="model must be a registered model's name .* or a Flax Module, got int 5"):
        jaxconv.summary(5)
    from jaxconv.analysis import format_summary

    with pytest.raises(TypeError, match=r"format_summary takes what summary\(\) returns, e.g. "
                                        r"format_summary\(summary\('resnet20'\)\), got str"):
        format_summary("resnet20")
    with pytest.raises(ValueError, match="NOPE") as raised:  # a ValueError like an unknown model; still a KeyError
        jaxconv.get_model("resnet18", weights="NOPE", download=False)
    assert isinstance(raised.value, (UnknownWeightsError, KeyError))


# --- memory running out ---------------------------------------------------------------------------------


def _jax_out_of_memory():
    return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 36801082808 bytes.\nmore detail")


def _tf_out_of_memory():
    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1,100000,100000,3] "
                                            "and type float on /job:localhost/replica:0/task:0/device:CPU:0\n[[{{node}}]]")


def _numpy_out_of_memory():
    try:  # numpy's own exception (a MemoryError), with its own message, without allocating
        from numpy.core._exceptions import _ArrayMemoryError
    except ImportError:
        from numpy._core._exceptions import _ArrayMemoryError
    return _ArrayMemoryError((2, 20000, 20000, 3), np.dtype(np.float64))


@pytest.mark.parametrize("error,first", [
    (_jax_out_of_memory, "RESOURCE_EXHAUSTED: Out of memory allocating 36801082808 bytes."),
    (_tf_out_of_memory, "OOM when allocating tensor with shape[1,100000,100000,3] and type float on "),
    (_numpy_out_of_memory, "Unable to allocate 17.9 GiB for an array with shape (2, 20000, 20000, 3)"),
])
def test_running_out_of_memory_is_one_line_saying_what_to_lower(monkeypatch, capsys, error, first):
    """These were tracebacks (bench at --image-size 100000, export's check at 20000, under ulimit -v)."""
    from jaxconv.cli import bench

    def run_out(*args):
        raise error()

    monkeypatch.setattr(bench, "run", run_out)
    assert main(["bench", "resnet20", "--image-size", "100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"jaxconv: error: jaxconv bench ran out of memory ({first}"), err
    assert err[0].endswith("; lower --batch-size or --image-size"), err


def test_only_memory_exhaustion_is_reported_so(monkeypatch):
    from jaxconv.cli import bench

    def fail(*args):
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    monkeypatch.setattr(bench, "run", fail)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        main(["bench", "resnet20"])


# --- experiment files and signals a student meets (the probe of 2026-12-04, fourth) ---------------------


@pytest.mark.parametrize("body, needle", [
    ("import sys; sys.exit(0)", "get_config() called sys.exit(0) (SystemExit: 0 (exp.py, line 5)); it must return a "
                                "ConfigDict"),  # it ended `jaxconv train` silently, exit 0
    ("c.group = ml_collections.ConfigDict({'a': 1}); return c", "config.group=a: 1: unknown key"),  # on two lines
    ("import jax; c.model_options = {'act': jax.nn.gelu}; return c",
     "act is function gelu, which config.json cannot record"),  # a traceback when config.json was written
])
def test_experiment_files_that_stray_are_one_line(tmp_path, capsys, body, needle):
    (tmp_path / "exp.py").write_text("import ml_collections\nfrom jaxconv.train.config import base_config\n\n"
                                     f"def get_config():\n    c = base_config(); {body}\n")
    assert main(["train", "--config", str(tmp_path / "exp.py"), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_frozen_config_is_thawed(tmp_path):
    from jaxconv.train.config import load_config

    (tmp_path / "exp.py").write_text("import ml_collections\nfrom jaxconv.train.config import base_config\n\n"
                                     "def get_config():\n    c = base_config()\n    c.num_train_steps = 3\n"
                                     "    return ml_collections.FrozenConfigDict(c)\n")
    config = load_config(tmp_path / "exp.py")
    config.seed = 1  # jaxconv fills in values: an AttributeError traceback before
    assert config.num_train_steps == 3


def test_sighup_stops_a_run_as_sigterm_does():
    """A closed terminal or a dropped ssh sends SIGHUP: it killed the run (exit 129), every step since the last
    checkpoint lost."""
    from jaxconv.train.signals import stop_signals

    before = signal.getsignal(signal.SIGHUP)
    with stop_signals(lambda _: None) as stop:
        assert not stop.at_step(1)
        signal.raise_signal(signal.SIGHUP)
        assert stop.at_step(1) and stop.reason() == "SIGHUP"
    assert signal.getsignal(signal.SIGHUP) is before


def test_a_reader_that_goes_away_ends_no_run():
    """`jaxconv train 2>&1 | head`: the first write after the reader left raised BrokenPipeError, which ended the
    run between two checkpoints (exit 1, its steps since lost). The program's streams now go quiet instead."""
    from jaxconv.cli.startup import ClosedPipeProof

    read, write = os.pipe()
    os.close(read)
    stream = ClosedPipeProof(os.fdopen(write, "w"))
    assert stream.write("step 70/300\n") == len("step 70/300\n")
    stream.flush()
    assert stream.reader_gone and stream.write("step 80/300\n") == len("step 80/300\n")
    assert stream.fileno() == write  # the rest is the stream's own
