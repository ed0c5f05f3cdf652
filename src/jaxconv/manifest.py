"""Sealing a finished checkpoint: a manifest with the size and SHA-256 of every file in its directory.

``jaxconv.checkpoint`` seals each checkpoint once Orbax has finished writing it, and checks the seal
before restoring: a truncated or corrupted file is then named, not met as an unpickling error.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

MANIFEST = "jaxconv_manifest.json"


def _file_digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: pathlib.Path) -> None:
    """Seals a finished checkpoint directory: the size and SHA-256 of each of its files."""
    entries = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _file_digest(p)}
               for p in _files(directory)}
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps({"files": entries}, indent=1, sort_keys=True))
    os.replace(temporary, directory / MANIFEST)


def verify_manifest(directory: pathlib.Path, *, digests: bool = True) -> str | None:
    """None if the directory matches its manifest (or has none yet); else what is wrong.

    ``digests=False`` checks only that every file is there with its size (no file is read).
    """
    manifest = directory / MANIFEST
    if not manifest.exists():
        return None
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        entries = {str(name): (int(value["size"]), str(value["sha256"])) for name, value in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its manifest is unreadable ({type(e).__name__}: {e})"
    for name, (size, sha256) in entries.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, {size} expected (truncated?)"
        if digests and _file_digest(path) != sha256:
            return f"{name} does not match its checksum (corrupted)"
    return None


def screen_step(directory: pathlib.Path) -> str | None:
    """What makes WORKDIR/checkpoints/<step> unusable at a glance (no file is read whole), or None.

    Something that is not a real directory (a symbolic link, a file the user put there), a sealed
    checkpoint missing files or with files of the wrong size, or metrics that are not JSON (Orbax
    reads every checkpoint's metrics when it starts).
    """
    if directory.is_symlink():
        return "a symbolic link, not a checkpoint directory"
    if not directory.is_dir():
        return "a file, not a checkpoint directory"
    problem = verify_manifest(directory, digests=False)
    if problem is not None:
        return problem
    metrics = directory / "metrics" / "metrics"
    if metrics.is_file():
        try:
            json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return f"its metrics are unreadable ({type(e).__name__})"
    return None


__all__ = ["MANIFEST", "screen_step", "verify_manifest", "write_manifest"]
