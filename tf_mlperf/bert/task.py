"""BERT-large pretraining as a `Task` of the shared run-to-target loop. The loop's unit is the sample."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import tensorflow as tf
from mlperf_logging.mllog import constants as C

from tf_mlperf.bert import attention as attention_lib
from tf_mlperf.bert import checkpoint as checkpoint_lib
from tf_mlperf.bert import dropout as dropout_lib
from tf_mlperf.bert import input_pipeline
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert import optimizer as optimizer_lib
from tf_mlperf.bert.config import BertConfig, eval_interval_samples
from tf_mlperf.core import input as core_input
from tf_mlperf.base import facts
from tf_mlperf.core.mlperf_log import draw_seed
from tf_mlperf.core.settings import common, setting
from tf_mlperf.core.task import InputContext, Schedule, Task
from tf_mlperf.base.errors import UserError

TARGET_MLM_ACCURACY = facts.BERT_TARGET_MLM_ACCURACY
EVAL_SAMPLES = facts.BERT_EVAL_EXAMPLES
MAX_SEQUENCES_PER_PACK = 3     # as NVIDIA's packed MLPerf submissions


@dataclasses.dataclass(frozen=True)
class BertTaskConfig:
    """Every BERT task setting, defined here once (the optimizer's in optimizer.LambConfig, the model's in
    config.py): bert/train.py turns each `setting` field into its flag (core/settings.py)."""
    bert: BertConfig
    lamb: optimizer_lib.LambConfig
    global_batch_size: int = setting(256, "Global batch size (all ranks, accumulation included).",
                                     flag="train_batch_size")
    train_files: str = setting("", "Training TFRecords: comma-separated globs.", flag="train_file_pattern")
    eval_files: str = setting("", "Eval TFRecords (the 10,000-example eval set).", flag="eval_file_pattern")
    num_accumulation_steps: int = common("num_accumulation_steps")
    init_checkpoint: str | None = setting(None, "Reference TF1 checkpoint (model.ckpt-28252) or TF2 converted "
                                          "checkpoint to start from.")
    allow_missing_heads: bool = setting(False, "TF2 encoder-only checkpoints: keep the MLM/NSP heads freshly "
                                        "initialised instead of failing.", flag="init_checkpoint_allow_missing_heads")
    max_seq_length: int = setting(input_pipeline.MAX_SEQ_LENGTH, "Sequence length of the records.")
    max_predictions_per_seq: int = setting(input_pipeline.MAX_PREDICTIONS_PER_SEQ, "Masked positions per record.")
    max_samples: int = setting(0, "Sample budget before giving up (0: train_batch_size * num_train_steps).")
    eval_interval_samples: int = setting(0, "Samples between evaluations (0: the rules' "
                                         "floor(0.05*(230.23*GBS+3e6)/25e3)*25e3). Closed runs must leave it at 0.")
    num_eval_examples: int = setting(EVAL_SAMPLES, "Eval examples (closed: 10,000).")
    target_accuracy: float = common("target_accuracy", TARGET_MLM_ACCURACY)
    seed: int | None = common("seed")            # None: a fresh os.urandom draw (__post_init__)
    use_synthetic_data: bool = common("use_synthetic_data")
    packed: bool = setting(False, "Pack up to 3 training sequences per row (same sequences per step, block-"
                           "diagonal attention; eval unchanged): docs/bert.md#sequence-packing---packed.")
    packed_rows: int = setting(0, "--packed: rows per micro-batch (0: sized from the first training file).")
    attention: str = setting("default", "Self-attention: default (Keras' einsum/softmax/dropout ops) or fused "
                             "(one cuDNN flash-attention call per layer, forward and backward, in XLA-compiled "
                             "bf16/fp16 steps on an NVIDIA GPU; elsewhere the default with one log line): "
                             "docs/PERFORMANCE.md#lever-log.", choices=attention_lib.IMPLEMENTATIONS)
    dropout_rng: str = setting("default", "Dropout masks: default (Keras, one float uniform per element) or "
                               "philox16 (two 16-bit decisions per stateless Philox word, same expectation): "
                               "docs/PERFORMANCE.md#lever-log.", choices=dropout_lib.IMPLEMENTATIONS)

    def __post_init__(self):
        if self.seed is None:   # as the trainer without --seed: a fresh seed, never a fixed default
            object.__setattr__(self, "seed", draw_seed())


def _check_checkpoint_exists(path: str) -> None:
    """UserError unless `path` is a checkpoint prefix (<path>.index) or a folder holding one."""
    if os.path.isdir(path) and tf.train.latest_checkpoint(path):
        return
    if tf.io.gfile.exists(path + ".index"):
        return
    raise UserError(f"--init_checkpoint={path}", "no such checkpoint (neither <path>.index nor a folder with a "
                    "checkpoint state file): pass the prefix, e.g. .../model.ckpt-28252 for model.ckpt-28252.index")


class BertTask(Task):
    benchmark = "bert"

    def __init__(self, cfg: BertTaskConfig):
        self.cfg = cfg
        self.target = cfg.target_accuracy
        self.global_batch_size = cfg.global_batch_size
        self.num_accumulation_steps = cfg.num_accumulation_steps

    # ---- checks before anything is built ----
    def check_inputs(self) -> None:
        """--init_checkpoint exists; both patterns match files whose records have the flags' lengths; the eval
        files hold at least --num_eval_examples records (else eval_samples would be logged for records that
        were never evaluated)."""
        cfg = self.cfg
        if cfg.init_checkpoint:
            _check_checkpoint_exists(cfg.init_checkpoint)
        if cfg.use_synthetic_data:
            if cfg.packed:
                raise UserError("--packed", "needs real training records: leave out --use_synthetic_data")
            return
        train = input_pipeline.list_files(cfg.train_files, "--train_file_pattern")
        evals = input_pipeline.list_files(cfg.eval_files, "--eval_file_pattern")
        for path in (train[0], evals[0]):
            input_pipeline.check_record_layout(path, cfg.max_seq_length, cfg.max_predictions_per_seq)
        count = input_pipeline.count_records(evals)
        if count < cfg.num_eval_examples:
            raise UserError(f"--eval_file_pattern={cfg.eval_files}", f"{count} records in {len(evals)} files, "
                            f"--num_eval_examples={cfg.num_eval_examples}: pass the whole eval set (closed: "
                            f"10,000 records), or --num_eval_examples={count}")

    def input_files(self) -> list[str]:
        if self.cfg.use_synthetic_data:
            return []
        return (input_pipeline.list_files(self.cfg.train_files, "--train_file_pattern")
                + input_pipeline.list_files(self.cfg.eval_files, "--eval_file_pattern"))

    # ---- model and optimizer ----
    def build_model(self):
        model = model_lib.build_model(self.cfg.bert, self.cfg.max_seq_length, self.cfg.max_predictions_per_seq)
        attention_lib.install(model, self.cfg.attention)
        dropout_lib.install(model, self.cfg.dropout_rng)
        if self.cfg.init_checkpoint:
            checkpoint_lib.load_init_checkpoint(model, self.cfg.init_checkpoint, self.cfg.allow_missing_heads)
        return model

    def build_optimizer(self, model):
        return optimizer_lib.create_optimizer(self.cfg.lamb)

    # ---- data ----
    def train_dataset(self, ctx: InputContext) -> tf.data.Dataset:
        if self.cfg.use_synthetic_data:
            return input_pipeline.synthetic_dataset(ctx, self.cfg.max_seq_length,
                                                    self.cfg.max_predictions_per_seq, self.cfg.bert.vocab_size)
        if self.cfg.packed:
            # Exactly per_replica_batch_size sequences per step as unpacked, so samples stay sequences.
            return input_pipeline.packed_train_dataset(
                self.cfg.train_files, ctx, self.cfg.max_seq_length, self.cfg.max_predictions_per_seq,
                self.cfg.seed, micro_batches=self.cfg.num_accumulation_steps, rows=self.cfg.packed_rows,
                max_per_row=MAX_SEQUENCES_PER_PACK)
        return input_pipeline.train_dataset(self.cfg.train_files, ctx, self.cfg.max_seq_length,
                                            self.cfg.max_predictions_per_seq, self.cfg.seed)

    def eval_dataset(self, ctx: InputContext) -> tf.data.Dataset:
        if self.cfg.use_synthetic_data:
            per_pipeline = self.cfg.num_eval_examples // ctx.num_input_pipelines
            return input_pipeline.synthetic_dataset(
                ctx, self.cfg.max_seq_length, self.cfg.max_predictions_per_seq, self.cfg.bert.vocab_size,
                num_batches=max(1, -(-per_pipeline // ctx.per_replica_batch_size)))
        return input_pipeline.eval_dataset(self.cfg.eval_files, ctx, self.cfg.max_seq_length,
                                           self.cfg.max_predictions_per_seq, self.cfg.num_eval_examples)

    def replica_gradients(self, grads):
        return optimizer_lib.clip_replica_gradients(grads, self.cfg.lamb)

    # ---- steps and metric ----
    def train_loss(self, model, batch) -> tf.Tensor:
        return model_lib.pretraining_loss(model(batch, training=True), batch)

    def eval_sums(self, model, batch) -> Mapping[str, tf.Tensor]:
        outputs = model(batch, training=False)
        return model_lib.masked_lm_accuracy_sums(outputs["mlm_logits"], batch["masked_lm_ids"],
                                                 batch["masked_lm_weights"])

    def metric(self, sums: Mapping[str, float]) -> float:
        return core_input.fraction(sums)

    # ---- cadence and logging ----
    @property
    def max_samples(self) -> int:
        return self.cfg.max_samples or self.cfg.global_batch_size * self.cfg.lamb.num_train_steps

    @property
    def eval_every_samples(self) -> int:
        return self.cfg.eval_interval_samples or eval_interval_samples(self.cfg.global_batch_size)

    def schedule(self) -> Schedule:
        return Schedule(steps_per_unit=1.0 / self.cfg.global_batch_size,
                        units_per_block=self.eval_every_samples, max_units=self.max_samples)

    def mllog_epoch_num(self, units: float) -> int:
        return int(round(units))      # BERT's epoch_num is a sample count

    def mllog_hyperparameters(self, num_replicas: int = 1) -> Mapping[str, Any]:
        lamb = self.cfg.lamb
        return {
            C.OPT_NAME: C.LAMB,
            C.OPT_BASE_LR: lamb.learning_rate,
            C.OPT_LAMB_EPSILON: lamb.epsilon,
            C.OPT_LAMB_BETA_1: lamb.beta_1,
            C.OPT_LAMB_BETA_2: lamb.beta_2,
            C.OPT_LAMB_WEIGHT_DECAY: lamb.weight_decay_rate,
            C.OPT_LAMB_LR_DECAY_POLY_POWER: lamb.poly_power,
            C.OPT_LR_TRAINING_STEPS: lamb.num_train_steps,
            C.OPT_LR_WARMUP_STEPS: lamb.num_warmup_steps,
            C.NUM_WARMUP_STEPS: lamb.num_warmup_steps,
            C.START_WARMUP_STEP: lamb.start_warmup_step,
            C.MAX_SEQUENCE_LENGTH: self.cfg.max_seq_length,
            "max_predictions_per_seq": self.cfg.max_predictions_per_seq,
            C.EVAL_SAMPLES: self.cfg.num_eval_examples,
        }

    def mllog_run_end(self, units: float) -> Mapping[str, Any]:
        # As the reference: train_samples is the samples actually trained, logged once just before run_stop
        # (what the RCP checker's --rcp-bert-train-samples reads), not the budget.
        return {C.TRAIN_SAMPLES: int(round(units))}
