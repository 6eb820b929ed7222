"""Write MLPerf result logs through `mlperf_logging.mllog` itself, for tests.

The logs carry the key set that the official compliance checker demands for
closed-division ResNet (ruleset 4.0.0, which enqueues training_3.1.0 LARS rules)
and BERT (ruleset 5.0.0), with caller-chosen timestamps, so a test knows each
run's run_start -> run_stop time to the millisecond.

    write_result_log(path, "resnet", minutes=11.0)                  # compliant, converged
    write_result_log(path, "bert", minutes=20.0, converge=False)    # aborted, never reaches target
    write_result_log(path, "resnet", minutes=9.0, omit=("cache_clear",))  # non-compliant
"""
from __future__ import annotations

import logging
import pathlib

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog import mllog

# Quality targets, as the checker's closed_<benchmark>.yaml ATLEAST_ONE_CHECK has them.
TARGETS = {"resnet": 0.759, "bert": 0.720}

RUN_START_MS = 1_700_000_000_000  # any fixed epoch time; only differences matter
INIT_MS = 60_000  # init_start -> init_stop; closed division allows 30 minutes

# Hyperparameter keys (value chosen to satisfy the checker's CHECK expressions).
_RESNET_HPARAMS = {
    C.SUBMISSION_ORG: "tf_mlperf",
    C.SUBMISSION_PLATFORM: "test-system",
    C.SUBMISSION_STATUS: "onprem",
    C.GLOBAL_BATCH_SIZE: 3264,
    C.GRADIENT_ACCUMULATION_STEPS: 1,
    C.OPT_NAME: "lars",
    C.LARS_OPT_BASE_LEARNING_RATE: 10.5,
    C.LARS_OPT_END_LR: 0.0001,
    C.LARS_OPT_LR_DECAY_POLY_POWER: 2,
    C.LARS_OPT_LR_DECAY_STEPS: 14523,
    C.LARS_EPSILON: 0.0,
    C.LARS_OPT_LEARNING_RATE_WARMUP_EPOCHS: 2,
    C.LARS_OPT_MOMENTUM: 0.9,
    C.LARS_OPT_WEIGHT_DECAY: 0.00005,  # log2(v / 1e-4) must be an integer
    C.TRAIN_SAMPLES: 1_281_167,
    C.EVAL_SAMPLES: 50_000,
}
_BERT_HPARAMS = {
    C.SUBMISSION_ORG: "tf_mlperf",
    C.SUBMISSION_PLATFORM: "test-system",
    C.SUBMISSION_STATUS: "onprem",
    C.GLOBAL_BATCH_SIZE: 256,
    C.GRADIENT_ACCUMULATION_STEPS: 1,
    C.OPT_BASE_LR: 0.00035,
    C.OPT_LAMB_EPSILON: 1e-6,
    C.OPT_LR_TRAINING_STEPS: 13700,
    C.OPT_LR_WARMUP_STEPS: 0,
    C.NUM_WARMUP_STEPS: 0,
    C.START_WARMUP_STEP: 0,
    C.OPT_LAMB_BETA_1: 0.9,
    C.OPT_LAMB_BETA_2: 0.999,
    C.OPT_LAMB_WEIGHT_DECAY: 0.01,
    C.TRAIN_SAMPLES: 3_000_000,
    C.EVAL_SAMPLES: 10_000,
}
HPARAMS = {"resnet": _RESNET_HPARAMS, "bert": _BERT_HPARAMS}

# Default eval points: ResNet counts epochs; BERT's epoch_num is a sample count.
DEFAULT_EVAL_POINTS = {"resnet": [4, 8, 12, 16, 20, 24, 28, 32, 36, 40],
                       "bert": [500_000 * k for k in range(1, 7)]}


def accuracy_curve(benchmark: str, n_evals: int, converge: bool) -> list[float]:
    """Rising accuracies whose last value reaches the target iff `converge`."""
    final = TARGETS[benchmark] + (0.002 if converge else -0.05)
    start = final - 0.3
    return [round(start + (final - start) * (k + 1) / n_evals, 4) for k in range(n_evals)]


def _file_logger(path: pathlib.Path) -> logging.Logger:
    """A private logging.Logger writing only to `path` (the shared mllogger is left alone)."""
    logger = logging.getLogger(f"tf_mlperf.tests.mllog.{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, mode="w")
    logger.addHandler(handler)
    return logger


def write_result_log(path, benchmark: str, minutes: float, *, converge: bool = True,
                     eval_points: list[int] | None = None, accuracies: list[float] | None = None,
                     run_start_ms: int = RUN_START_MS, omit: tuple[str, ...] = (),
                     hparams: dict | None = None, seed: int | None = None,
                     cache_clear: bool = True) -> pathlib.Path:
    """Write one result_N.txt whose run_start -> run_stop lasts exactly `minutes`.

    converge=False logs accuracies below target and run_stop status "aborted".
    `omit` drops keys (e.g. "cache_clear") to make a non-compliant log.
    `seed` (optional) is logged as the `seed` event, from one fixed source line, as trainers do.
    `cache_clear` is the logged value (our trainer logs False when it could not drop the page cache).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    points = eval_points or DEFAULT_EVAL_POINTS[benchmark]
    accs = accuracies or accuracy_curve(benchmark, len(points), converge)
    run_stop_ms = run_start_ms + round(minutes * 60_000)
    logger = _file_logger(path)
    ml = mllog.MLLogger(logger=logger, default_stack_offset=1)

    def emit(kind: str, key: str, value=None, metadata=None, time_ms=None):
        if key not in omit:
            getattr(ml, kind)(key=key, value=value, metadata=metadata, time_ms=time_ms)

    t0 = run_start_ms - INIT_MS
    emit("event", C.CACHE_CLEAR, cache_clear, time_ms=t0)
    emit("start", C.INIT_START, time_ms=t0)
    emit("event", C.SUBMISSION_BENCHMARK, benchmark, time_ms=t0)
    emit("event", C.SUBMISSION_DIVISION, "closed", time_ms=t0)
    for key, value in {**HPARAMS[benchmark], **(hparams or {})}.items():
        emit("event", key, value, time_ms=t0)
    if seed is not None:
        emit("event", C.SEED, seed, time_ms=t0)
    emit("end", C.INIT_STOP, time_ms=run_start_ms - 1)
    emit("start", C.RUN_START, time_ms=run_start_ms)

    # Spread the blocks evenly over the run; the last eval lands just before run_stop.
    step_ms = (run_stop_ms - run_start_ms - 2) / len(points)
    previous = 0
    for k, (point, acc) in enumerate(zip(points, accs)):
        begin = run_start_ms + 1 + round(k * step_ms)
        end = run_start_ms + 1 + round((k + 1) * step_ms)
        block = {"first_epoch_num": previous, "epoch_count": point - previous}
        emit("start", C.BLOCK_START, metadata=block, time_ms=begin)
        emit("end", C.BLOCK_STOP, metadata={"first_epoch_num": previous}, time_ms=end - 1)
        emit("start", C.EVAL_START, metadata={"epoch_num": point}, time_ms=end - 1)
        emit("event", C.EVAL_ACCURACY, acc, metadata={"epoch_num": point}, time_ms=end)
        emit("end", C.EVAL_STOP, metadata={"epoch_num": point}, time_ms=end)
        previous = point
    status = C.SUCCESS if converge else C.ABORTED
    emit("end", C.RUN_STOP, metadata={"status": status}, time_ms=run_stop_ms)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    return path
