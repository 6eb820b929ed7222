"""BERT-large MLPerf pretraining to 0.720 masked-LM accuracy.

    python -m tf_mlperf.bert.train --flagfile=flags/bert/gbs256.cfg --train_file_pattern=... \
        --eval_file_pattern=... --init_checkpoint=.../model.ckpt-28252
    horovodrun -np 8 tf-mlperf-bert-train --flagfile=...

Common flags (distribution, precision, XLA, model_dir, mllog, seed, accumulation, ...) come from
tf_mlperf.core.app; this module defines only the BERT ones (names follow the reference run_pretraining.py).
"""
from __future__ import annotations

import sys

from absl import app as absl_app
from absl import flags

from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import input_pipeline
from tf_mlperf.bert.optimizer import LambConfig
from tf_mlperf.bert.task import BertTask, BertTaskConfig
from tf_mlperf.core import app

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None, "The reference bert_config.json (default: --bert_preset).")
flags.DEFINE_enum("bert_preset", "large", sorted(config_lib.PRESETS),
                  "Built-in model config when --bert_config_file is not given (large = the MLPerf config).")
flags.DEFINE_string("init_checkpoint", None,
                    "Reference TF1 checkpoint (model.ckpt-28252) or TF2 converted checkpoint to start from.")
flags.DEFINE_bool("init_checkpoint_allow_missing_heads", False,
                  "TF2 encoder-only checkpoints: keep the MLM/NSP heads freshly initialised instead of failing.")
flags.DEFINE_bool("eval_before_run", None,
                  "Evaluate the initial weights during init (default: when --init_checkpoint is given; the real "
                  "checkpoint gives about 0.34085).")
flags.DEFINE_string("train_file_pattern", None, "Training TFRecords: comma-separated globs.")
flags.DEFINE_string("eval_file_pattern", None, "Eval TFRecords (the 10,000-example eval set).")
flags.DEFINE_integer("train_batch_size", 256, "Global batch size (all ranks, accumulation included).")
flags.DEFINE_integer("max_seq_length", input_pipeline.MAX_SEQ_LENGTH, "Sequence length of the records.")
flags.DEFINE_integer("max_predictions_per_seq", input_pipeline.MAX_PREDICTIONS_PER_SEQ,
                     "Masked positions per record.")
flags.DEFINE_float("learning_rate", 0.00035, "LAMB base learning rate (opt_base_learning_rate).")
flags.DEFINE_integer("num_train_steps", 13700, "Steps of the polynomial decay (opt_learning_rate_training_steps).")
flags.DEFINE_integer("num_warmup_steps", 0, "Linear warmup steps.")
flags.DEFINE_integer("start_warmup_step", 0, "Step at which warmup starts (may be negative).")
flags.DEFINE_float("poly_power", 1.0, "Power of the polynomial decay.")
flags.DEFINE_float("lamb_beta_1", 0.9, "LAMB beta1.")
flags.DEFINE_float("lamb_beta_2", 0.999, "LAMB beta2.")
flags.DEFINE_float("lamb_epsilon", 1e-6, "LAMB epsilon (the reference's 10**log_epsilon).")
flags.DEFINE_float("lamb_weight_decay_rate", 0.01, "LAMB weight decay (not on LayerNorm/bias).")
flags.DEFINE_bool("clip_by_global_norm_after_gradient_allreduce", False,
                  "Clip to global norm 1.0 after the allreduce (in the optimizer) instead of on every replica "
                  "and micro-batch before it (the reference's default, how the checkpoint was pre-trained).")
flags.DEFINE_integer("max_samples", 0, "Sample budget before giving up (0: train_batch_size * num_train_steps).")
flags.DEFINE_integer("eval_interval_samples", 0,
                     "Samples between evaluations (0: the rules' floor(0.05*(230.23*GBS+3e6)/25e3)*25e3). "
                     "Closed runs must leave it at 0.")
flags.DEFINE_integer("num_eval_examples", 10_000, "Eval examples (closed: 10,000).")
flags.DEFINE_bool("packed", False, "Pack up to 3 training sequences per row (same sequences per step, block-"
                  "diagonal attention; eval unchanged): docs/bert.md#sequence-packing---packed.")
flags.DEFINE_integer("packed_rows", 0, "--packed: rows per micro-batch (0: sized from the first training file).")


def build_task(flag_values: flags.FlagValues) -> BertTask:
    f = flag_values
    for name in ("train_file_pattern", "eval_file_pattern"):
        if not f[name].value and not f.use_synthetic_data:
            raise absl_app.UsageError(f"--{name} is required")
    lamb = LambConfig(learning_rate=f.learning_rate, num_train_steps=f.num_train_steps,
                      num_warmup_steps=f.num_warmup_steps, start_warmup_step=f.start_warmup_step,
                      poly_power=f.poly_power, beta_1=f.lamb_beta_1, beta_2=f.lamb_beta_2,
                      epsilon=f.lamb_epsilon, weight_decay_rate=f.lamb_weight_decay_rate,
                      clip_after_allreduce=f.clip_by_global_norm_after_gradient_allreduce)
    return BertTask(BertTaskConfig(
        bert=config_lib.load(f.bert_config_file, f.bert_preset), lamb=lamb,
        global_batch_size=f.train_batch_size, num_accumulation_steps=f.num_accumulation_steps,
        train_files=f.train_file_pattern, eval_files=f.eval_file_pattern,
        init_checkpoint=f.init_checkpoint, allow_missing_heads=f.init_checkpoint_allow_missing_heads,
        max_seq_length=f.max_seq_length, max_predictions_per_seq=f.max_predictions_per_seq,
        max_samples=f.max_samples, eval_interval_samples=f.eval_interval_samples,
        num_eval_examples=f.num_eval_examples, seed=f.seed, use_synthetic_data=f.use_synthetic_data,
        packed=f.packed, packed_rows=f.packed_rows))


def _run(argv) -> None:
    if len(argv) > 1:
        raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
    eval_before_run = FLAGS.eval_before_run
    if eval_before_run is None:
        eval_before_run = bool(FLAGS.init_checkpoint)
    sys.exit(app.exit_code(lambda: app.train(build_task, eval_before_run=eval_before_run)))


def main() -> None:
    """Console script `tf-mlperf-bert-train`: exit 0 when the target was reached, 1 when the budget ran out,
    2 on an error (one line naming the file or flag and the fix)."""
    app.run(_run)


if __name__ == "__main__":
    main()
