"""tf-mlperf-resnet-train: ResNet-50 v1.5 on ImageNet to 75.90% top-1 (MLPerf Training, closed division).

    python -m tf_mlperf.resnet.train --flagfile=flags/resnet50/bs3264.cfg --data_dir=/data/imagenet
    horovodrun -np 8 -H localhost:8 tf-mlperf-resnet-train --flagfile=flags/resnet50/bs3264.cfg ...

The common flags (--distribution, --precision, --xla, --model_dir, --mllog_path, --seed,
--num_accumulation_steps, --target_accuracy, --checkpoint_every_steps, --submission_*) come from
tf_mlperf.core.app; the ResNet-specific ones are below. Names follow the reference where it has one.
"""
from __future__ import annotations


from absl import flags

from tf_mlperf.core import app
from tf_mlperf.core.task import RunError
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask

FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "Folder of ImageNet TFRecords (train-*-of-*, validation-*-of-*) as "
                    "written by tf-mlperf-prep-imagenet.")
flags.DEFINE_integer("batch_size", 3264, "Global batch size: samples per optimizer step over all replicas, "
                     "accumulation included (the reference's --batch_size).")
flags.DEFINE_float("train_epochs", 37, "Epoch budget (rounded up to whole eval blocks after the offset, as the "
                   "reference); also the length of the learning-rate decay.")
flags.DEFINE_float("epochs_between_evals", 4, "Epochs between evaluations (the rules: 4).")
flags.DEFINE_float("eval_offset_epochs", 0, "Epochs before the first evaluation (the rules allow 1..4; "
                   "0 = epochs_between_evals).")
flags.DEFINE_float("base_learning_rate", 10.5, "LARS peak learning rate (reached at the end of warmup).")
flags.DEFINE_float("end_learning_rate", 1e-4, "Learning rate at the end of the polynomial decay (rules: 1e-4).")
flags.DEFINE_float("warmup_epochs", 2, "Linear learning-rate warmup, in epochs.")
flags.DEFINE_integer("lr_decay_steps", 0, "Steps of the polynomial decay after warmup (0: the reference's "
                     "train steps - warmup steps + 1).")
flags.DEFINE_float("weight_decay", 5e-5, "LARS weight decay (rules: 1e-4 * 2^k).")
flags.DEFINE_float("momentum", 0.9, "LARS momentum.")
flags.DEFINE_float("lars_eeta", 0.001, "LARS trust coefficient eta.")
flags.DEFINE_float("lars_epsilon", 0.0, "LARS epsilon, used and logged as given (see docs/resnet.md on the "
                   "reference's 0 -> 1e-7 quirk).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy (rules: 0.1).")
flags.DEFINE_integer("num_classes", 1000, "Classifier outputs; labels in the records are 1..num_classes.")
flags.DEFINE_integer("image_size", 224, "Train/eval crop size (closed division: 224; smaller for CPU smoke).")
flags.DEFINE_float("model_width", 1.0, "Channel multiplier (closed division: 1.0; smaller for CPU smoke).")
flags.DEFINE_list("model_blocks", ["3", "4", "6", "3"], "Bottlenecks per stage (closed division: 3,4,6,3).")
flags.DEFINE_bool("zero_init_last_gamma", False, "Initialise the last BN gamma of every bottleneck to 0.")
flags.DEFINE_integer("num_train_images", 0, "Train-set size (0: read <data_dir>/train-manifest.json, else "
                     "count the records; 1,281,167 with synthetic data).")
flags.DEFINE_integer("num_eval_images", 0, "Validation-set size (0: as num_train_images; 50,000 synthetic).")
flags.DEFINE_bool("verify_data_checksums", False, "Before training, check every shard's sha256 against "
                  "<data_dir>/<split>-manifest.json (reads the whole data set once; names, sizes and counts are "
                  "always checked).")
flags.DEFINE_integer("shuffle_buffer", 10_000, "Record shuffle buffer per input pipeline.")
flags.DEFINE_integer("datasets_num_private_threads", 0, "tf.data private thread-pool size per process "
                     "(0: TF's shared pool).")


def config_from_flags(f: flags.FlagValues) -> ResNetConfig:
    if not f.use_synthetic_data and not f.data_dir:
        raise RunError("--data_dir", "required: pass the folder tf-mlperf-prep-imagenet convert wrote (or "
                       "--use_synthetic_data for a throughput run)")
    return ResNetConfig(
        data_dir=f.data_dir or "", global_batch_size=f.batch_size,
        num_accumulation_steps=f.num_accumulation_steps,
        train_epochs=f.train_epochs,
        epochs_between_evals=f.epochs_between_evals, eval_offset_epochs=f.eval_offset_epochs,
        base_learning_rate=f.base_learning_rate, end_learning_rate=f.end_learning_rate,
        warmup_epochs=f.warmup_epochs, lr_decay_steps=f.lr_decay_steps,
        weight_decay=f.weight_decay, momentum=f.momentum,
        lars_eeta=f.lars_eeta, lars_epsilon=f.lars_epsilon, label_smoothing=f.label_smoothing,
        num_classes=f.num_classes, image_size=f.image_size, model_width=f.model_width,
        model_blocks=tuple(int(b) for b in f.model_blocks), zero_init_last_gamma=f.zero_init_last_gamma,
        use_synthetic_data=f.use_synthetic_data, num_train_images=f.num_train_images,
        num_eval_images=f.num_eval_images, verify_checksums=f.verify_data_checksums, seed=f.seed, shuffle_buffer=f.shuffle_buffer,
        datasets_num_private_threads=f.datasets_num_private_threads)


def build_task(f: flags.FlagValues) -> ResNetTask:
    return ResNetTask(config_from_flags(f))


def main() -> None:
    app.main(build_task)


if __name__ == "__main__":
    main()
