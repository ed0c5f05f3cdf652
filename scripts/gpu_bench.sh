#!/usr/bin/env bash
# The GPU benchmarks of docs/benchmarks.md (issue 7's targets), each stage's results in OUTDIR.
#
#   scripts/gpu_bench.sh OUTDIR                 # every stage, in the order below
#   scripts/gpu_bench.sh OUTDIR target vs-resnet50   # some of them
#
# Stages:
#   env       the machine: GPU, driver, Python packages, commit          -> environment.txt
#   target    jaxconv alone: ResNet-50 bf16 training, batch 256          -> resnet50_bf16_b256.{json,txt}
#   vs-MODEL  MODEL against PyTorch's fastest variant, timed alternately -> vs_torch_MODEL.{md,json}
#             (MODEL: resnet50 at batch 256, resnet18 at 32 px, vgg16, efficientnet_b0; each a few
#             minutes, most of it torch.compile)
#   layers    ResNet-50's convolutions one by one, XLA against cuDNN     -> layers_resnet50.{md,json}
#   xla-options  ResNet-50's bf16 step compiled with GPU options of XLA, alternately in one process
#             (command buffers off, cuDNN runtime fusion, Triton GEMMs off) -> xla_options_resnet50.json
#   data      the ImageNet and CIFAR input pipelines on the host's cores -> data_{imagenet,cifar}.json
#             (needs TensorFlow; the other stages need only JAX, Flax, Optax, ml_collections and torch)
#
# Environment: PYTHON (default python3) runs jaxconv; TORCH_PYTHON, if set, runs the PyTorch
# worker (a separate environment, when the two frameworks' CUDA libraries clash); TORCH_VARIANTS,
# if set, the PyTorch variants the vs stages try (bench_vs_torch.py's --torch-variants). Run from the
# repository root, with jaxconv installed or PYTHONPATH=src. Each stage's log is OUTDIR/STAGE.log;
# a stage that fails does not stop the others, and the exit status is 1 if any failed.
set -uo pipefail

all=(env target vs-resnet50 vs-resnet18 vs-vgg16 vs-efficientnet_b0 layers xla-options data)
usage() { echo "usage: scripts/gpu_bench.sh OUTDIR [${all[*]}] (default: all)" >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
out=$1; shift
stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=("${all[@]}")
for stage in "${stages[@]}"; do
  [[ " ${all[*]} " == *" $stage "* ]] || { echo "gpu_bench.sh: unknown stage '$stage'" >&2; usage; }
done
mkdir -p "$out" || exit 2

python=${PYTHON:-python3}
vs_torch=("$python" scripts/bench_vs_torch.py --device cuda --dtype bfloat16)
[[ -n ${TORCH_PYTHON:-} ]] && vs_torch+=(--torch-python "$TORCH_PYTHON")
[[ -n ${TORCH_VARIANTS:-} ]] && vs_torch+=(--torch-variants "$TORCH_VARIANTS")

stage_env() {
  {
  date -u '+%Y-%m-%d %H:%M:%S UTC'
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  echo "host CPUs $(nproc)"
  "$python" - <<'EOF'
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "ml_collections", "torch",
             "torchvision", "tensorflow", "tensorflow-cpu", "tensorflow-datasets"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        pass
import jax
print("jax devices", jax.devices())
EOF
  } | tee "$out/environment.txt"
}

stage_target() {
  "$python" -m jaxconv.cli bench resnet50 --batch-size 256 --dtype bfloat16 --steps 50 --format json \
    > "$out/resnet50_bf16_b256.json" &&
  "$python" -c 'import json, sys; from jaxconv.bench import format_text; sys.stdout.write(format_text(json.load(open(sys.argv[1]))))' \
    "$out/resnet50_bf16_b256.json" | tee "$out/resnet50_bf16_b256.txt"
}

stage_vs() {  # MODEL at bench_vs_torch.py's GPU batch size and resolution; 4 rounds of 20 steps a side
  "${vs_torch[@]}" --models "$1" --steps 20 --rounds 4 --json-out "$out/vs_torch_$1.json" | tee "$out/vs_torch_$1.md"
}

stage_layers() {
  "${vs_torch[@]}" --models resnet50 --batch-size 256 --layers --json-out "$out/layers_resnet50.json" \
    | tee "$out/layers_resnet50.md"
}

stage_xla-options() {  # an option this jaxlib does not know is reported in the JSON, not fatal
  "$python" scripts/bench_xla_options.py resnet50:224:256 --dtype bfloat16 --rounds 5 --steps 10 --variant base= \
    --variant no_command_buffers=xla_gpu_enable_command_buffer= --variant runtime_fusion=xla_gpu_use_runtime_fusion=true \
    --variant no_triton_gemm=xla_gpu_enable_triton_gemm=false > "$out/xla_options_resnet50.json" &&
  cat "$out/xla_options_resnet50.json"
}

stage_data() {
  "$python" -m jaxconv.cli bench resnet50 --mode data --batch-size 256 --format json > "$out/data_imagenet.json" &&
  "$python" -m jaxconv.cli bench resnet20 --mode data --recipe cifar --batch-size 256 --format json > "$out/data_cifar.json" &&
  cat "$out/data_imagenet.json" "$out/data_cifar.json"
}

failed=()
for stage in "${stages[@]}"; do
  echo "== $stage ($(date -u +%H:%M:%S))" >&2
  start=$SECONDS
  if [[ $stage == vs-* ]]; then
    stage_vs "${stage#vs-}" 2> "$out/$stage.log"; status=$?
  else
    "stage_$stage" 2> "$out/$stage.log"; status=$?
  fi
  echo "== $stage: exit $status after $((SECONDS - start)) s" >&2
  if [[ $status -ne 0 ]]; then
    failed+=("$stage")
    find "$out" -maxdepth 1 -type f -empty -delete  # no empty result files from a stage that failed
    tail -n 5 "$out/$stage.log" >&2
  fi
done
[[ ${#failed[@]} -eq 0 ]] || { echo "failed: ${failed[*]} (logs in $out)" >&2; exit 1; }
