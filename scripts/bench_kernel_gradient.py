"""A 3x3 convolution's kernel gradient on XLA:CPU, three ways, timed alternately (issue 23 §2).

XLA computes it as a convolution on operands it first transposes (channels first, the batch as
features); the alternatives contract over N*H*W directly on the NHWC operands: one matrix product
per tap of the shifted input view with the output gradient ("taps"), or one product of the
nine-tap patch matrix ("im2col"). Values are checked against XLA's; medians of 7 alternated runs.

    python scripts/bench_kernel_gradient.py
"""

from __future__ import annotations

import statistics
import time

from jaxconv.cli.startup import apply_default_xla_flags

apply_default_xla_flags()  # as the jaxconv CLI starts: before JAX is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

SHAPES = [(32, 32, 16), (32, 16, 32), (32, 8, 64), (128, 32, 16)]  # (batch, side, channels): ResNet-20 at 32 px


def conv(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def kgrad_autodiff(x, k, g):
    _, vjp = jax.vjp(lambda k: conv(x, k), k)
    return vjp(g)[0]


def _views(x):
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [padded[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]


def kgrad_taps(x, k, g):
    rows = [lax.dot_general(view, g, (((0, 1, 2), (0, 1, 2)), ((), ()))) for view in _views(x)]
    return jnp.stack(rows).reshape(3, 3, x.shape[-1], g.shape[-1])


def kgrad_im2col(x, k, g):
    n, h, w, c = x.shape
    patches = jnp.stack(_views(x), axis=3).reshape(n * h * w, 9 * c)
    return lax.dot_general(patches, g.reshape(n * h * w, -1), (((0,), (0,)), ((), ()))).reshape(3, 3, c, -1)


def main() -> None:
    rng = np.random.default_rng(0)
    ways = {"autodiff": jax.jit(kgrad_autodiff), "taps": jax.jit(kgrad_taps), "im2col": jax.jit(kgrad_im2col)}
    print("(batch, side, channels): median ms of", ", ".join(ways))
    for n, s, c in SHAPES:
        x, g = (jnp.asarray(rng.standard_normal((n, s, s, c), np.float32)) for _ in range(2))
        k = jnp.asarray(rng.standard_normal((3, 3, c, c), np.float32))
        reference = ways["autodiff"](x, k, g)
        for f in ways.values():
            np.testing.assert_allclose(f(x, k, g), reference, rtol=1e-3, atol=1e-2)
        times = {name: [] for name in ways}
        for _ in range(7):
            for name, f in ways.items():
                started = time.perf_counter()
                f(x, k, g).block_until_ready()
                times[name].append(time.perf_counter() - started)
        print((n, s, c), {name: round(1e3 * statistics.median(t), 2) for name, t in times.items()}, flush=True)


if __name__ == "__main__":
    main()
