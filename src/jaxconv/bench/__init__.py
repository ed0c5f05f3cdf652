"""`jaxconv bench`: training, evaluation and input-pipeline throughput, measured as `jaxconv train` runs.

    >>> from jaxconv.bench import measure_train
    >>> measure_train("resnet50", batch_size=256, dtype="bfloat16")["images_per_sec"]

Train and eval modes run the project's own steps (``jaxconv.train.steps``: the real optimizer,
BatchNorm in training mode, the state donated) through the same DataParallel runner as the
training loop, on a synthetic batch already on the devices, so they measure the model's compute
alone. The step is lowered and compiled explicitly (both timed; the persistent compilation
cache applies), then run ``warmup`` times untimed and ``steps`` times, each step waited for
with block_until_ready: the median is the step time. ``flops_per_step`` is XLA's cost analysis
of the compiled step (on the CPU a little below 2 x the analyzer's MACs per pass, as XLA skips
the multiply-adds that land on zero padding; on GPUs it leaves out the convolutions and matmuls
handed to cuDNN and cuBLAS, and the report says so). Achieved FLOP/s and MFU use the model's
FLOPs, ``model_flops_per_step`` (2 x the analyzer's MACs, x 3 for a training step), the
convention MFU is quoted in; MFU divides them by the device's published dense peak
(``PEAK_TFLOPS``), and is None where the device is not in the table (every CPU).

Data mode times the input pipeline alone (``jaxconv.data.pipeline.train_dataset``: record
fetch, decode, augmentation, batching of uint8 images in tf.data on the host's cores; the
normalisation runs later, in the compiled step) on encoded records: ImageNet-sized synthetic
JPEGs for the 'imagenet' recipe (a real photograph for 'imagenet-photo'), 32 x 32 PNGs for the
'cifar' recipe, as TFDS stores those datasets.

Layers mode takes the model apart: each distinct convolution (input shape, kernel, stride,
padding, groups) is timed alone, forward, input gradient and kernel gradient, as the model runs
it (``jaxconv.layers.conv.convolve``), to show which convolutions and which pass a training
step spends its time in. ``scripts/bench_vs_torch.py --layers`` times PyTorch's kernels on the
same list.

The package: ``common`` (the request, errors, published peaks), ``step`` (train and eval steps),
``layers`` (the convolutions one by one), ``data`` (the input pipeline), ``report`` (dispatch
and text report).
"""

from __future__ import annotations

from jaxconv.bench.common import DTYPES, MODES, PEAK_TFLOPS, RECIPES, BenchError, Request, peak_flops_per_sec
from jaxconv.bench.data import EncodedImageSource, measure_data, synthetic_images
from jaxconv.bench.layers import PASSES, ConvLayer, conv_layers, layer_row, measure_layers, time_conv_layer
from jaxconv.bench.report import format_text, run
from jaxconv.bench.step import CompiledStep, compile_step, measure_eval, measure_step, measure_train, \
    model_flops_per_step

__all__ = ["DTYPES", "MODES", "PASSES", "PEAK_TFLOPS", "RECIPES", "BenchError", "CompiledStep", "ConvLayer",
           "EncodedImageSource", "Request", "compile_step", "conv_layers", "format_text", "layer_row", "measure_data",
           "measure_eval", "measure_layers", "measure_step", "measure_train", "model_flops_per_step",
           "peak_flops_per_sec", "run", "synthetic_images", "time_conv_layer"]
