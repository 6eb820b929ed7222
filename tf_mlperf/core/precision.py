"""Mixed precision by flag: fp32, fp16 (dynamic loss scaling) or bf16. Master weights stay fp32."""
from __future__ import annotations

import tf_keras

POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}
PRECISIONS = tuple(POLICIES)


def set_policy(precision: str) -> None:
    if precision not in POLICIES:
        raise ValueError(f"--precision={precision!r}: expected one of {sorted(POLICIES)}")
    tf_keras.mixed_precision.set_global_policy(POLICIES[precision])


def wrap_optimizer(optimizer, precision: str):
    """fp16 needs loss scaling to keep small gradients representable; bf16 has fp32's range and does not."""
    if precision == "fp16":
        return tf_keras.mixed_precision.LossScaleOptimizer(optimizer, dynamic=True)
    return optimizer


def uses_loss_scale(optimizer) -> bool:
    return isinstance(optimizer, (tf_keras.mixed_precision.LossScaleOptimizer,))
