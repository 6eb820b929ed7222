#!/usr/bin/env bash
# Sourced by scripts/setup.sh --gpu: the CUDA toolkit Horovod's NCCL build compiles against.
#   cuda_toolchain <venv>   sets HOROVOD_CUDA_HOME, HOROVOD_NCCL_INCLUDE/LIB/LINK and HOROVOD_CMAKE.
#
# One NCCL per process: TensorFlow 2.20's libtensorflow_framework.so.2 has NCCL built in (2.25.1, its ~800 nccl*
# symbols exported) and ships that version's nccl.h. Horovod is compiled against that header and links the
# nccl* symbols of libtensorflow_framework.so.2 itself (a libnccl.so link to it: the linker records only the
# SONAME libtensorflow_framework.so.2, which Horovod needs anyway), so no second NCCL (the nvidia-nccl-cu12
# wheel's libnccl.so.2) is loaded. cudart likewise: Horovod's kernels call the cudart entry points TF exports
# (its stub, which loads the wheel's libcudart.so.12). Headers: the CUDA 12 wheels tensorflow[and-cuda] installed.
# The compiler: a site's own CUDA 12 toolkit when there is one ($CUDA_HOME/bin/nvcc or nvcc on PATH, e.g.
# after `module load cuda`, or a CUDA devel container); else nvcc from PyPI. The CUDA 12 nvcc wheel
# (nvidia-cuda-nvcc-cu12) ships ptxas but no nvcc, so then nvcc/cicc come from the CUDA 13.5 wheels
# (nvidia-cuda-nvcc, nvidia-nvvm), compiling against the CUDA 12 headers above. That compiler is used for
# one file only, Horovod's cuda_kernels.cu (fusion-buffer copy and scale kernels); its device code needs a
# driver that supports CUDA 13 (>= 580). With an older driver, build with a site CUDA 12 toolkit instead.
CUDA13_COMPILER_VERSION=13.5.37

cuda_toolchain() {
  local venv=$1 site root nvcc=""
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  local tf_nccl=$site/tensorflow/include/external/nccl_archive/src
  [ -f "$site/nvidia/cuda_runtime/include/cuda_runtime.h" ] && [ -f "$tf_nccl/nccl.h" ] || {
    echo "[setup] CUDA 12 wheels or TF's nccl.h missing under $site: is tensorflow[and-cuda] installed?" >&2; return 1; }
  # libcu++'s <nv/target> (included by cuda_fp16.h) is in CCCL, which tensorflow[and-cuda] does not pull in:
  # the CCCL headers of the same CUDA release as the runtime wheel.
  local cuda_release; cuda_release=$("$venv/bin/python" -c "import importlib.metadata as m; print('.'.join(m.version('nvidia-cuda-runtime-cu12').split('.')[:2]))")
  "$venv/bin/python" -m pip install -q "nvidia-cuda-cccl-cu12==$cuda_release.*"
  root=$venv/cuda-build
  rm -rf "$root" && mkdir -p "$root/include" "$root/lib64"
  # Headers and libraries: the wheels TensorFlow loads (links, so nothing is copied twice).
  for pkg in cuda_runtime cuda_cccl cuda_nvcc; do
    [ -d "$site/nvidia/$pkg/include" ] && cp -rs "$site/nvidia/$pkg/include/." "$root/include/"
  done
  ln -s "$site"/nvidia/cuda_runtime/lib/* "$root/lib64/"   # libcudart.so.12, libcudart_static.a, libcudadevrt.a
  ln -s libcudart.so.12 "$root/lib64/libcudart.so"
  ln -s "$site/tensorflow/libtensorflow_framework.so.2" "$root/lib64/libnccl.so"   # TF's built-in NCCL
  ln -s lib64 "$root/lib"
  # The compiler: TF_MLPERF_CUDA_COMPILER=auto (default: the site's, else PyPI's), site, or pypi.
  local choice=${TF_MLPERF_CUDA_COMPILER:-auto}
  if [ "$choice" != pypi ]; then
    if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then nvcc=$CUDA_HOME/bin/nvcc
    elif command -v nvcc >/dev/null; then nvcc=$(command -v nvcc); fi
    [ -n "$nvcc" ] || [ "$choice" = auto ] || { echo "[setup] TF_MLPERF_CUDA_COMPILER=site but no nvcc (CUDA_HOME, PATH)" >&2; return 1; }
    [ -z "$nvcc" ] || nvcc=$(readlink -f "$(command -v "$nvcc")")
    # a wrapper script (e.g. /usr/local/bin/nvcc -> exec .../cuda/bin/nvcc) is followed to the toolkit
    [ -z "$nvcc" ] || ! head -c 2 "$nvcc" | grep -q '#!' || nvcc=$(sed -n 's/^exec \([^ ]*nvcc\).*/\1/p' "$nvcc")
  fi
  if [ -n "$nvcc" ]; then
    echo "[setup] nvcc: the site's $nvcc ($("$nvcc" --version | tail -1))"
    local top; top=$(cd "$(dirname "$nvcc")/.." && pwd)
    ln -s "$top/bin" "$root/bin"; ln -s "$top/nvvm" "$root/nvvm"
  else
    echo "[setup] nvcc $CUDA13_COMPILER_VERSION from PyPI (no site toolkit, or TF_MLPERF_CUDA_COMPILER=pypi; device code needs driver >= 580)"
    local dl; dl=$(mktemp -d)
    "$venv/bin/python" -m pip download -q --no-deps -d "$dl" \
      "nvidia-cuda-nvcc==$CUDA13_COMPILER_VERSION" "nvidia-nvvm==$CUDA13_COMPILER_VERSION"
    for whl in "$dl"/*.whl; do "$venv/bin/python" -m zipfile -e "$whl" "$dl/x"; done
    mv "$dl/x/nvidia/cu13/bin" "$root/bin"; mv "$dl/x/nvidia/cu13/nvvm" "$root/nvvm"
    chmod +x "$root"/bin/* "$root"/nvvm/bin/*
    rm -rf "$dl"
  fi
  export HOROVOD_CUDA_HOME=$root HOROVOD_NCCL_INCLUDE=$tf_nccl HOROVOD_NCCL_LIB=$root/lib64
  export HOROVOD_NCCL_LINK=SHARED HOROVOD_GPU_OPERATIONS=NCCL
  export HOROVOD_BUILD_CUDA_CC_LIST=${HOROVOD_BUILD_CUDA_CC_LIST:-80,86,89,90}   # A100, A10/A40, L4/L40, H100/H200
  # No static cudart copy in Horovod: its cudart calls resolve to the entry points TF exports.
  cat > "$root/cmake" <<EOF
#!/bin/sh
case "\$1" in --*) exec $(command -v cmake) "\$@";; esac   # --version, --build: as they are
exec $(command -v cmake) "\$@" -DCMAKE_CUDA_RUNTIME_LIBRARY=Shared
EOF
  chmod +x "$root/cmake"
  export HOROVOD_CMAKE=$root/cmake
}
