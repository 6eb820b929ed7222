"""The private tf_keras APIs tf_mlperf depends on, in one place.

Two optimizer families are in use: tf_keras's current `Optimizer` (ResNet's LARS) and the legacy
`OptimizerV2` (tf-models-official's LAMB for BERT, and LossScaleOptimizer over it). Two things have no public
API on the legacy family:
* creating the slot variables before the first step (so a checkpoint restore and the rank-0 broadcast cover
  them): `OptimizerV2._create_all_weights(var_list)`; the current family has the public `build(var_list)`;
* applying gradients that are already allreduced without the optimizer reducing them again under
  tf.distribute: legacy `apply_gradients(..., experimental_aggregate_gradients=False)`, recognised by the
  class attribute `_HAS_AGGREGATE_GRAD`; current `apply_gradients(..., skip_gradients_aggregation=True)`.

tests/test_keras_compat.py checks each of these against the installed tf_keras, so an upgrade that renames or
drops one fails there, by name, instead of silently skipping slot creation or reducing gradients twice.
"""
from __future__ import annotations

import inspect

LEGACY_CREATE_SLOTS = "_create_all_weights"      # OptimizerV2: creates slots (and iterations) for var_list
LEGACY_MARK = "_HAS_AGGREGATE_GRAD"              # OptimizerV2 (and its LossScaleOptimizer): class attribute
LEGACY_NO_AGGREGATION = "experimental_aggregate_gradients"
NO_AGGREGATION = "skip_gradients_aggregation"


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def is_legacy(optimizer) -> bool:
    """Whether `optimizer` (or the one a LossScaleOptimizer wraps) is a legacy OptimizerV2."""
    return hasattr(optimizer, LEGACY_MARK)


def create_slots(optimizer, variables) -> None:
    """Creates the optimizer's slot variables for `variables` now, before the first step."""
    inner = _inner(optimizer)
    if is_legacy(inner):
        getattr(inner, LEGACY_CREATE_SLOTS)(variables)
    else:
        inner.build(variables)


def apply_reduced_gradients(optimizer, grads_and_vars) -> None:
    """apply_gradients for gradients already averaged over replicas: no second aggregation."""
    if is_legacy(optimizer):
        optimizer.apply_gradients(grads_and_vars, **{LEGACY_NO_AGGREGATION: False})
    else:
        optimizer.apply_gradients(grads_and_vars, **{NO_AGGREGATION: True})


def check(optimizer) -> list[str]:
    """What this module expects of `optimizer`'s class and the installed tf_keras does not provide (empty
    when all is there)."""
    inner, missing = _inner(optimizer), []
    params = inspect.signature(optimizer.apply_gradients).parameters
    if is_legacy(optimizer):
        if not callable(getattr(inner, LEGACY_CREATE_SLOTS, None)):
            missing.append(f"{type(inner).__name__}.{LEGACY_CREATE_SLOTS}")
        if LEGACY_NO_AGGREGATION not in params:
            missing.append(f"{type(optimizer).__name__}.apply_gradients({LEGACY_NO_AGGREGATION}=)")
    else:
        if not callable(getattr(inner, "build", None)):
            missing.append(f"{type(inner).__name__}.build")
        if NO_AGGREGATION not in params:
            missing.append(f"{type(optimizer).__name__}.apply_gradients({NO_AGGREGATION}=)")
    return missing
