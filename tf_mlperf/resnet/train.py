"""tf-mlperf-resnet-train: ResNet-50 v1.5 on ImageNet to 75.90% top-1 (MLPerf Training, closed division).

    python -m tf_mlperf.resnet.train --flagfile=flags/resnet50/bs3264.cfg --data_dir=/data/imagenet
    horovodrun -np 8 -H localhost:8 tf-mlperf-resnet-train --flagfile=flags/resnet50/bs3264.cfg ...

The common flags (--distribution, --precision, --xla, --model_dir, --mllog_path, --seed,
--num_accumulation_steps, --target_accuracy, --checkpoint_every_steps, --submission_*) come from
tf_mlperf.core.app; the ResNet-specific ones are the fields of ResNetConfig (resnet/task.py), where each one's
default and help are written. Names follow the reference where it has one.
"""
from __future__ import annotations

from absl import flags

from tf_mlperf.core import cli, settings
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask
from tf_mlperf.base.errors import UserError

FLAGS = flags.FLAGS

# One flag per ResNetConfig field (its default and help are written there, once); the common ones
# (--seed, --num_accumulation_steps, --target_accuracy, --use_synthetic_data) come from core/app.py.
settings.define_flags(ResNetConfig)


def config_from_flags(f: flags.FlagValues) -> ResNetConfig:
    if not f.use_synthetic_data and not f.data_dir:
        raise UserError("--data_dir", "required: pass the folder tf-mlperf-prep-imagenet convert wrote (or "
                        "--use_synthetic_data for a throughput run)")
    return settings.from_flags(ResNetConfig, f)


def build_task(f: flags.FlagValues) -> ResNetTask:
    return ResNetTask(config_from_flags(f))


def main() -> None:
    cli.main(build_task)


if __name__ == "__main__":
    main()
