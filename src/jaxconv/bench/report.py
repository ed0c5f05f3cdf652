"""`jaxconv bench`'s dispatch and its text report."""

from __future__ import annotations

from collections.abc import Callable

from jaxconv.bench.common import Request, check_request, requested_model
from jaxconv.bench.data import measure_data
from jaxconv.bench.layers import PASSES, measure_layers
from jaxconv.bench.step import measure_step


def run(request: Request, progress: Callable[[str], None] | None = None) -> dict:
    """Dispatches a request to measure_step, measure_layers or measure_data.

    ``progress`` is given a line once the request is found sound and the long part begins
    (compiling the step, or timing the convolutions), so that nothing says it is compiling a
    model that is then refused.
    """
    check_request(request)
    if request.mode == "layers":
        return measure_layers(request, progress)
    if request.mode != "data":
        return measure_step(request, progress)
    info = requested_model(request.model)
    size = request.image_size or info.image_size
    recipe = request.recipe or ("imagenet" if size >= 64 else "cifar")
    result = measure_data(recipe, request.batch_size, size, request.steps, request.warmup)
    return {"model": request.model, **result}


def _format_layers(result: dict, si) -> str:
    head = (f"{result['model']}: its {result['conv_layers']} convolutions ({result['distinct_layers']} distinct), "
            f"batch {result['batch_size']} at {result['image_size']} px, {result['dtype']}, "
            f"{result['device_kind']} ({result['backend']}); median of {result['steps']} after {result['warmup']}")
    columns = ("layer", "count", "forward ms", "input grad ms", "kernel grad ms", "GFLOP/s fwd / in / kernel")
    table = []
    for row in result["layers"]:
        ms = ["-" if row[f"{name}_s"] is None else f"{row[f'{name}_s'] * 1e3:.2f}" for name in PASSES]
        rates = ["-" if row[f"{name}_flops_per_sec"] is None else f"{row[f'{name}_flops_per_sec'] / 1e9:.0f}"
                 for name in PASSES]
        table.append([row["layer"], str(row["count"]), *ms, " / ".join(rates)])
    totals = result["totals"]
    table.append(["all layers (x count)", str(result["conv_layers"]),
                  *(f"{totals[f'{name}_s'] * 1e3:.1f}" for name in PASSES),
                  f"{result['achieved_flops_per_sec'] / 1e9:.0f} overall"])
    widths = [max(len(columns[i]), *(len(r[i]) for r in table)) for i in range(len(columns))]

    def line(cells):
        return "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [head, line(columns), *(line(r) for r in table),
             f"  the convolutions of one training step, one at a time: {result['step_time_s'] * 1e3:.1f} ms "
             f"({si(result['macs_per_step'], 'MAC')} forward); compile {result['compile_s']:.1f} s"]
    return "\n".join(lines) + "\n"


def format_text(result: dict) -> str:
    """A short human-readable report of a measure_* result."""

    def si(value, unit):
        if value is None:
            return "n/a"
        for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {prefix}{unit}"
        return f"{value:.3g} {unit}"

    def binary(value):  # bytes in KiB/MiB/GiB, as `jaxconv summary` and the rest of jaxconv count them
        from jaxconv.analysis.summary import human_bytes

        return "n/a" if value is None else human_bytes(value)

    if result["mode"] == "layers":
        return _format_layers(result, si)
    if result["mode"] == "data":
        head = (f"input pipeline, {result['recipe']} recipe ({result['augment']} augmentation) at "
                f"{result['image_size']} px, batch {result['batch_size']}, {result['host_cpus']} host CPUs")
        lines = [head,
                 f"  images/s      {result['images_per_sec']:,.1f} ({result['images_per_sec_per_core']:,.1f} per "
                 f"host CPU), uint8 batches from {result['source']} records",
                 f"  batch time    {result['step_time_s'] * 1e3:.1f} ms mean over {result['steps']} batches "
                 f"(single pulls {result['step_time_min_s'] * 1e3:.1f}-{result['step_time_max_s'] * 1e3:.1f} ms)",
                 f"  first batch   {result['compile_s']:.2f} s",
                 f"  records       {result['source']}"
                 + (f", {result['mean_record_bytes'] / 1e3:.1f} kB each" if result.get("mean_record_bytes") else "")]
        return "\n".join(lines) + "\n"
    head = (f"{result['model']} {result['mode']} step, batch {result['batch_size']} at {result['image_size']} px, "
            f"{result['dtype']}, {result['devices']} x {result['device_kind']} ({result['backend']})")
    mfu = "n/a" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    lines = [head,
             f"  images/s      {result['images_per_sec']:,.1f}",
             f"  step time     {result['step_time_s'] * 1e3:.1f} ms median of {result['steps']} "
             f"(min {result['step_time_min_s'] * 1e3:.1f}, max {result['step_time_max_s'] * 1e3:.1f}) "
             f"after {result['warmup']} warm-up",
             f"  compile       {result['compile_s']:.2f} s (+ {result['lower_s']:.2f} s lowering)",
             f"  XLA FLOPs     {si(result['flops_per_step'], 'FLOP')} per step, "
             f"{si(result['flops_per_image'], 'FLOP')} per image",
             f"  model FLOPs   {si(result['model_flops_per_step'], 'FLOP')} per step (2 x MACs"
             f"{' x 3' if result['mode'] == 'train' else ''})",
             f"  achieved      {si(result['achieved_flops_per_sec'], 'FLOP/s')} of model FLOPs  MFU {mfu}",
             f"  memory        peak {binary(result['peak_memory_bytes'])}, XLA estimate "
             f"{binary(result['xla_memory_bytes'])}" + (" (per device)" if result["devices"] > 1 else "")]
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"
