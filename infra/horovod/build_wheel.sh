#!/usr/bin/env bash
# Build (or reuse) a Horovod 0.28.1 wheel for the torch installed next to PYTHON.
#
# Usage: infra/horovod/build_wheel.sh PYTHON OUT_DIR
#
#   PYTHON   interpreter of the target environment (e.g. .venv/bin/python); torch
#            must already be installed there (the wheel links against its libtorch).
#   OUT_DIR  wheel cache root. Wheels live in
#              OUT_DIR/torch-<torch.__version__>/horovod-0.28.1-cp<XY>-*.whl
#            (e.g. OUT_DIR/torch-2.12.1+cu130/horovod-0.28.1-cp311-cp311-linux_x86_64.whl),
#            so a torch upgrade or a different Python automatically triggers a rebuild.
#
# Last line on stdout is the absolute path of the wheel (cache hit or fresh build).
# Install it with:  PYTHON -m pip install --no-deps WHEEL
#
# Why a source build: PyPI has no horovod wheels, and the 0.28.1 sdist hard-codes
# C++14 (top-level CMakeLists.txt and horovod/torch/CMakeLists.txt) while torch >= 2.1
# headers require C++17 (torch/all.h: "#error C++17 or later ..."). We patch both to 17.
#
# CPU build: PyTorch + Gloo only (no MPI/TF/MXNet). CUDA_HOME/CUDA_PATH are unset
# because with a CUDA build of torch, horovod's FindPytorch/CMake would otherwise go
# looking for nvcc and fail on a machine without the CUDA toolkit.
# On a GPU node run the same build with HOROVOD_GPU_OPERATIONS=NCCL in the environment
# (and CUDA_HOME pointing at a toolkit matching torch.version.cuda; set
# HOROVOD_KEEP_CUDA_ENV=1 so this script does not unset it).
#
# Optional env:
#   HOROVOD_SDIST=/path/horovod-0.28.1.tar.gz  use a local sdist instead of `pip download`
#   BUILD_JOBS=N                               parallel make jobs (default 2)
# Expected build time: ~2-4 min on 2 cores.
set -euo pipefail

HVD_VERSION=0.28.1

die() { echo "build_wheel.sh: ERROR: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || die "usage: $0 PYTHON OUT_DIR"
PYTHON=$1
OUT_DIR=$2

# Absolute path (we cd later) without resolving symlinks (a venv's python is a symlink).
if [[ $PYTHON != */* ]]; then
    PYTHON=$(command -v "$PYTHON") || die "python not found on PATH: $PYTHON"
fi
[[ -x $PYTHON ]] || die "python not executable: $PYTHON"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"

# torch version + python tag of the target env (stderr of torch import silenced: the
# CUDA build of torch may warn about a missing driver).
read -r TORCH_VERSION PY_TAG < <(
    "$PYTHON" -c 'import sys, torch; print(torch.__version__, "cp%d%d" % sys.version_info[:2])' 2>/dev/null
) || die "cannot import torch with $PYTHON (install the torch requirements first)"
[[ -n ${TORCH_VERSION:-} && -n ${PY_TAG:-} ]] || die "could not determine torch/python version via $PYTHON"

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
CACHE_DIR="$OUT_DIR/torch-$TORCH_VERSION"

find_cached() {
    local w
    for w in "$CACHE_DIR"/horovod-"$HVD_VERSION"-"$PY_TAG"-*.whl; do
        [[ -f $w ]] && { echo "$w"; return 0; }
    done
    return 1
}

if WHEEL=$(find_cached); then
    echo "horovod $HVD_VERSION wheel for torch $TORCH_VERSION ($PY_TAG) already built" >&2
    echo "$WHEEL"
    exit 0
fi

mkdir -p "$CACHE_DIR"

# Serialise concurrent builds into the same cache (e.g. parallel `make venv`).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/.build.lock"
    flock 9
    if WHEEL=$(find_cached); then   # someone else built it while we waited
        echo "$WHEEL"
        exit 0
    fi
fi

LOG="$CACHE_DIR/build-$PY_TAG.log"
# Temp dir inside OUT_DIR so the final `mv` is a same-filesystem, atomic rename.
WORK=$(mktemp -d "$OUT_DIR/.horovod-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: >"$LOG"

fail() {
    echo "build_wheel.sh: ERROR: $* (full log: $LOG); last 60 lines:" >&2
    tail -n 60 "$LOG" >&2 || true
    exit 1
}

START=$(date +%s)
echo "building horovod $HVD_VERSION for torch $TORCH_VERSION ($PY_TAG); log: $LOG" >&2

# 1. Fetch the sdist.
if [[ -n ${HOROVOD_SDIST:-} ]]; then
    [[ -f $HOROVOD_SDIST ]] || die "HOROVOD_SDIST=$HOROVOD_SDIST does not exist"
    cp "$HOROVOD_SDIST" "$WORK/"
else
    "$PYTHON" -m pip download --no-deps --no-binary :all: "horovod==$HVD_VERSION" -d "$WORK" \
        >>"$LOG" 2>&1 || fail "pip download horovod==$HVD_VERSION failed"
fi
SDIST=$(ls "$WORK"/horovod-"$HVD_VERSION".tar.gz 2>/dev/null) || fail "sdist horovod-$HVD_VERSION.tar.gz not found"
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/horovod-$HVD_VERSION"
[[ -f $SRC/setup.py ]] || fail "unexpected sdist layout (no $SRC/setup.py)"

# 2. Patch the C++ standard 14 -> 17 (fail loudly if the pattern moved).
for f in "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"; do
    grep -Eq 'set\(CMAKE_CXX_STANDARD[[:space:]]+14\)' "$f" \
        || fail "pattern 'set(CMAKE_CXX_STANDARD 14)' not found in $f - sdist changed, review the patch"
    sed -E -i 's/set\(CMAKE_CXX_STANDARD[[:space:]]+14\)/set(CMAKE_CXX_STANDARD 17)/' "$f"
    grep -Eq 'set\(CMAKE_CXX_STANDARD 17\)' "$f" || fail "patching $f failed"
    if grep -Eq 'CMAKE_CXX_STANDARD[[:space:]]+1[14]\b|CMAKE_CXX_FLAGS.*-std=(c|gnu)\+\+1[14]' "$f"; then
        fail "C++11/14 still requested for C++ sources in $f after patch"
    fi
    echo "patched C++ standard to 17 in ${f#"$SRC/"}" >>"$LOG"
done
# Note: the top-level CMakeLists also has `-std=c++11` in CMAKE_CUDA_FLAGS; it only
# affects nvcc-compiled kernels of a GPU build and is deliberately left alone.

# 3. Build the wheel.
mkdir -p "$WORK/dist"
(
    if [[ ${HOROVOD_KEEP_CUDA_ENV:-0} != 1 ]]; then
        unset CUDA_HOME CUDA_PATH
    fi
    export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1
    export HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
    export MAKEFLAGS="-j${BUILD_JOBS:-2}"
    cd "$WORK"
    "$PYTHON" -m pip wheel --no-build-isolation --no-deps -v -w "$WORK/dist" "$SRC"
) >>"$LOG" 2>&1 || fail "pip wheel failed"

BUILT=$(ls "$WORK"/dist/horovod-"$HVD_VERSION"-*.whl 2>/dev/null | head -n 1)
[[ -n $BUILT ]] || fail "pip wheel produced no horovod wheel"
# Sanity check: the torch extension must be inside the wheel.
"$PYTHON" - "$BUILT" >>"$LOG" 2>&1 <<'EOF' || fail "wheel lacks horovod/torch/mpi_lib_v2*.so"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.startswith("horovod/torch/mpi_lib_v2") and n.endswith(".so") for n in names), names
EOF

# 4. Publish atomically: WORK is on the same filesystem as CACHE_DIR, so this is a rename
#    and readers never see a half-written wheel.
DEST="$CACHE_DIR/$(basename "$BUILT")"
mv -f "$BUILT" "$DEST"
echo "built in $(( $(date +%s) - START ))s" | tee -a "$LOG" >&2
echo "$DEST"
