"""BERT-large MLPerf pretraining to 0.720 masked-LM accuracy.

    python -m tf_mlperf.bert.train --flagfile=flags/bert/gbs256.cfg --train_file_pattern=... \
        --eval_file_pattern=... --init_checkpoint=.../model.ckpt-28252
    horovodrun -np 8 tf-mlperf-bert-train --flagfile=...

Common flags (distribution, precision, XLA, model_dir, mllog, seed, accumulation, ...) come from
tf_mlperf.core.app; the BERT ones are the setting fields of BertTaskConfig (bert/task.py) and LambConfig
(bert/optimizer.py), where each one's default and help are written (names follow the reference run_pretraining.py).
"""
from __future__ import annotations

from absl import app as absl_app
from absl import flags

from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert.optimizer import LambConfig
from tf_mlperf.bert.task import BertTask, BertTaskConfig
from tf_mlperf.core import cli, settings

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None, "The reference bert_config.json (default: --bert_preset).")
flags.DEFINE_enum("bert_preset", "large", sorted(config_lib.PRESETS),
                  "Built-in model config when --bert_config_file is not given (large = the MLPerf config).")
flags.DEFINE_bool("eval_before_run", None,
                  "Evaluate the initial weights during init (default: when --init_checkpoint is given; the real "
                  "checkpoint gives about 0.34085).")
# One flag per setting field of BertTaskConfig and LambConfig (their defaults and help are written there,
# once); the common ones (--seed, --num_accumulation_steps, --target_accuracy, ...) come from core/app.py.
settings.define_flags(BertTaskConfig)
settings.define_flags(LambConfig)


def build_task(flag_values: flags.FlagValues) -> BertTask:
    f = flag_values
    for name in ("train_file_pattern", "eval_file_pattern"):
        if not f[name].value and not f.use_synthetic_data:
            raise absl_app.UsageError(f"--{name} is required")
    bert = config_lib.load(f.bert_config_file, f.bert_preset)
    return BertTask(settings.from_flags(BertTaskConfig, f, bert=bert, lamb=settings.from_flags(LambConfig, f)))


def eval_before_run(f: flags.FlagValues) -> bool:
    """--eval_before_run, or by default whether --init_checkpoint is given."""
    return bool(f.init_checkpoint) if f.eval_before_run is None else f.eval_before_run


def main() -> None:
    """Console script `tf-mlperf-bert-train`: exit 0 when the target was reached, 1 when the budget ran out,
    2 on an error (one line naming the file or flag and the fix)."""
    cli.main(build_task, eval_before_run)


if __name__ == "__main__":
    main()
