"""`horovodrun --check-build`, Horovod's own report of what it was built with, and the reader of its table."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess


def check_build(bin_dir: pathlib.Path) -> str:
    """The report of the horovodrun in `bin_dir` (~30 s: it imports TensorFlow afresh for each of its checks)."""
    return subprocess.run([str(bin_dir / "horovodrun"), "--check-build"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, check=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}).stdout


def tensor_operations(check_build_output: str) -> dict[str, bool]:
    """{'NCCL': True, 'MPI': True, ...} from the "Available Tensor Operations" block of horovodrun --check-build."""
    block = check_build_output.split("Available Tensor Operations:", 1)
    if len(block) != 2:
        raise AssertionError(f"no 'Available Tensor Operations' in:\n{check_build_output}")
    return {name: mark == "X" for mark, name in re.findall(r"\[( |X)\]\s+(\w+)", block[1])}
