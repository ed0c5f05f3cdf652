"""Makes tests/fixtures/autoaugment.npz: torchvision's TrivialAugment/RandAugment operations applied to one
image, for tests/test_autoaugment.py to compare jaxconv's TensorFlow versions with (run once, with torch).

    /work/torchenv/bin/python scripts/make_autoaugment_fixture.py

(torch and torchvision from pip: python3 -m venv /work/torchenv && /work/torchenv/bin/pip install torch
torchvision numpy.)
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

# A CPU torch wheel with torchvision's PyPI wheel: its C ops (nms, ...) do not load, and registering their
# fake kernels fails at import. The transforms used here are pure torch; skip those registrations.
torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
import torchvision  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402
from torchvision.transforms.autoaugment import _apply_op  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "autoaugment.npz"
NAMES = {"identity": "Identity", "shear_x": "ShearX", "shear_y": "ShearY", "translate_x": "TranslateX",
         "translate_y": "TranslateY", "rotate": "Rotate", "brightness": "Brightness", "color": "Color",
         "contrast": "Contrast", "sharpness": "Sharpness", "posterize": "Posterize", "solarize": "Solarize",
         "autocontrast": "AutoContrast", "equalize": "Equalize"}
# (operation, magnitude): both signs, magnitudes from inside both policies' ranges. The blends' factors are
# binary fractions, exact in float32 and float64 alike: a factor's last bit would otherwise decide the
# truncation of pixels whose product is an integer, which is the harness's rounding, not the operation.
CASES = [("identity", 0.0), ("shear_x", 0.3), ("shear_x", -0.5), ("shear_y", 0.3), ("shear_y", -0.99),
         ("translate_x", 7.6), ("translate_x", -5.2), ("translate_y", 9.9), ("translate_y", -32.0),
         ("rotate", 30.0), ("rotate", -77.0), ("rotate", 135.0), ("brightness", 0.5), ("brightness", -0.625),
         ("color", 0.75), ("color", -0.875), ("contrast", 0.375), ("contrast", -0.75), ("sharpness", 0.875),
         ("sharpness", -0.5), ("posterize", 3.0), ("posterize", 6.0), ("solarize", 128.0), ("solarize", 0.0),
         ("autocontrast", 0.0), ("equalize", 0.0)]


def test_image() -> np.ndarray:
    """32 x 40 (not square, so that height and width cannot be swapped unnoticed), with a flat patch and a gradient."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    image[5:20, 8:30] = rng.integers(100, 140, (15, 22, 3))
    image[22:30, :] = np.linspace(20, 200, 40).astype(np.uint8)[None, :, None]
    return image


def main() -> None:
    image = test_image()
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    outputs = {}
    for name, magnitude in CASES:
        result = _apply_op(tensor, NAMES[name], magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
        outputs[f"{name}|{magnitude}"] = result.permute(1, 2, 0).numpy()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, image=image, torchvision=np.array(torchvision.__version__), **outputs)
    print(f"wrote {OUT} ({len(outputs)} cases, torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
