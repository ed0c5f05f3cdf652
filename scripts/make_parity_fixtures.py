"""Makes the torchvision parity fixtures in tests/fixtures/parity/ (run once, with torch).

Needs torch and torchvision, and JAX and Flax (the families' declarations say which models to
make and how torchvision builds them), e.g. in a separate environment:

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0            # the CPU build
    /work/torchenv/bin/pip install --no-deps torchvision==0.29.1
    /work/torchenv/bin/pip install jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 safetensors pillow

Run from the repository root:

    /work/torchenv/bin/python scripts/make_parity_fixtures.py                    # every model
    /work/torchenv/bin/python scripts/make_parity_fixtures.py --models squeezenet1_0,squeezenet1_1   # a new family

It writes
- layouts.json.gz: for every model jaxconv converts, torchvision's state-dict key -> shape
  listing, in the layout of the published file (GoogLeNet with its auxiliary heads, DenseNet
  with its files' 'norm.1' key names), and
  the eps and momentum of its BatchNorm layers;
- <model>.npz for one model per family (its declaration's parity_size): torchvision's eval-mode logits for two seeded
  input images, with pseudo-random weights from jaxconv.pretrained.synthetic (the same
  generator the tests use on the same listing), and checksums of both, so that a test can
  tell a changed random stream from a conversion error.

With torchvision's C extension missing (a CPU-only torch), torchvision.models still builds
and runs once its meta registrations are stubbed, as done below.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import types
from collections import OrderedDict

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jaxconv.pretrained.convert import SUPPORTED, torchvision_keys  # noqa: E402 -- the families' declarations
from jaxconv.pretrained.synthetic import checksum, random_images, random_state_dict  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "parity"
WEIGHT_SEED = 0
INPUT_SEED = 1
BATCH = 2
# One model per family (its declaration's parity_size), at a small size that torchvision and jaxconv
# both take; the odd sizes exercise PyTorch's floor (convolutions) and ceil_mode (GoogLeNet's pools)
# rounding, and AlexNet/VGG end on a 2x2 map, so their adaptive pools and flatten order see distinct values.
PARITY_SIZES = {name: torchvision_keys(name).parity_size for name in SUPPORTED if torchvision_keys(name).parity_size}


def import_torchvision():
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


def build_torch_model(name: str, for_parity: bool):
    """The torchvision model for jaxconv's ``name``, with the options of its published weights."""
    keys = torchvision_keys(name)
    builder = getattr(import_torchvision().models, keys.builder or name)
    # GoogLeNet's published file has the auxiliary heads; the published model runs without them.
    options = keys.parity_options if for_parity and keys.parity_options is not None else keys.builder_options
    return builder(weights=None, **options)


def layout_of(model, name: str) -> list[list]:
    """The model's state-dict keys (as the published file names them) and shapes."""
    published = torchvision_keys(name).published_key or (lambda key: key)
    return [[published(key), list(value.shape)] for key, value in model.state_dict().items()]


def batchnorm_settings(model) -> dict[str, list[float]]:
    """The distinct eps and momentum values of the model's BatchNorm layers."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return {"eps": sorted({m.eps for m in norms}), "momentum": sorted({m.momentum for m in norms})}


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--models", help="comma-separated: make only these models' fixtures (a new family), "
                                         "keeping the others' entries in layouts.json.gz")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    names = SUPPORTED
    layouts, batchnorm = {}, {}
    if args.models:
        names = tuple(n.strip() for n in args.models.split(",") if n.strip())
        unknown = [n for n in names if n not in SUPPORTED]
        if unknown:
            parser.error(f"--models: {', '.join(unknown)} convert from no torchvision weights; "
                         f"models: {', '.join(SUPPORTED)}")
        with gzip.open(args.out / "layouts.json.gz", "rt", encoding="utf-8") as f:
            previous = json.load(f)
        layouts, batchnorm = previous["layouts"], previous["batchnorm"]

    for name in names:
        model = build_torch_model(name, for_parity=False)
        layouts[name] = layout_of(model, name)
        batchnorm[name] = batchnorm_settings(model)
        print(f"{name}: {len(layouts[name])} entries, BatchNorm {batchnorm[name]}", file=sys.stderr)
    with gzip.open(args.out / "layouts.json.gz", "wt", encoding="utf-8") as f:
        listing = {"torchvision": import_torchvision().__version__, "layouts": layouts, "batchnorm": batchnorm}
        json.dump(listing, f, separators=(",", ":"))

    for name, size in PARITY_SIZES.items():
        if name not in names:
            continue
        model = build_torch_model(name, for_parity=True).eval()
        layout = {key: shape for key, shape in layout_of(model, name)}
        state = random_state_dict(layout, WEIGHT_SEED)
        own = model.state_dict()
        current = dict(zip(layout, own))  # published key -> torchvision's current one
        loaded = OrderedDict((current[k], torch.from_numpy(v)) for k, v in state.items())
        loaded._metadata = own._metadata  # the modules' versions, as a saved file has them (MNASNet requires its own)
        model.load_state_dict(loaded, strict=True)
        images = random_images((BATCH, size, size, 3), INPUT_SEED)  # NHWC, as jaxconv takes them
        with torch.no_grad():
            logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
        np.savez_compressed(
            args.out / f"{name}.npz",
            logits=logits.astype(np.float32),
            image_size=size,
            batch=BATCH,
            weight_seed=WEIGHT_SEED,
            input_seed=INPUT_SEED,
            weights_checksum=checksum(state),
            input_checksum=checksum(images),
            torch_version=torch.__version__,
        )
        spread = f"logits std {logits.std():.3f}, max |logit| {np.abs(logits).max():.3f}"
        print(f"{name} @ {size}px: {spread}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
