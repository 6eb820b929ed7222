"""tf-mlperf-export: a ResNet-50 training checkpoint -> a SavedModel for MLPerf Inference (resnet50-v1.5).

    tf-mlperf-export --flagfile=flags/resnet50/bs3264.cfg --model_dir=/runs/r1 --export_dir=/models/r50 \
        [--precision=bf16] [--checkpoint=/runs/r1/checkpoints/ckpt-1234]

The model flags (--num_classes, --image_size, --model_width, --model_blocks) are the trainer's own: pass the
flagfile the model was trained with. The checkpoint is the latest in <model_dir>/checkpoints unless
--checkpoint names one; a checkpoint of another model is refused, naming the file.

Signature `serving_default`, as the reference's resnet50_v1 TensorFlow model (inputs "input_tensor:0",
outputs "ArgMax:0"; main.py profile resnet50-tf):
  input_tensor    float32 [N, S, S, 3], NHWC, after the reference preprocessing (pre_process_vgg: RGB,
                  mean-subtracted, 0..255 scale; S = --image_size, 224 for the benchmark)
  ArgMax          int64 [N]: top-1 class in the reference model's 1001-class numbering (0 = background,
                  ImageNet classes 1..1000). The reference harness subtracts 1 (PostProcessCommon(offset=-1))
                  to get the 0..999 of val_map.txt. Our model has 1000 outputs (our records' labels 1..1000
                  minus 1), so ArgMax = argmax(logits) + 1.
  softmax_tensor  float32 [N, 1001]: class probabilities in the same numbering (background column 0).
--precision=bf16 (or fp16) computes under the Keras mixed policy; weights stay the checkpoint's fp32 and the
logits are float32. The SavedModel is written to a temporary folder and renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

from absl import app as absl_app
from absl import flags

from tf_mlperf.inference.errors import InferenceError, run_cli
# The trainer's flags (--flagfile of the training run works here), defined once, in its module.
from tf_mlperf.resnet import train as _resnet_train  # noqa: F401
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask

BACKGROUND_OFFSET = 1            # reference class id = our class + 1 (class 0 of its 1001 is background)
INPUT_NAME, CLASSES_NAME, PROBABILITIES_NAME = "input_tensor", "ArgMax", "softmax_tensor"
METADATA = os.path.join("assets.extra", "tf_mlperf_export.json")

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "Folder to write the SavedModel to (must not exist unless --overwrite).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export (default: the latest in "
                    "<model_dir>/checkpoints).")
if "overwrite" not in flags.FLAGS:   # the trainers' common --overwrite (core/app.py) when both are imported
    flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir.")
if "verbose" not in FLAGS:   # the trainers may define it too (core/app.py): one flag, whoever defines it
    flags.DEFINE_bool("verbose", False, "On an error, print the full traceback too.")


def model_config(f: flags.FlagValues) -> ResNetConfig:
    """The network's shape from the trainer's flags (the rest of a ResNetConfig does not matter here)."""
    return ResNetConfig(num_classes=f.num_classes, image_size=f.image_size, model_width=f.model_width,
                        model_blocks=tuple(int(b) for b in f.model_blocks))


def describe(cfg: ResNetConfig) -> str:
    return (f"--num_classes={cfg.num_classes} --image_size={cfg.image_size} --model_width={cfg.model_width} "
            f"--model_blocks={','.join(map(str, cfg.model_blocks))}")


def resolve_checkpoint(model_dir: str, checkpoint: str | None) -> str:
    import tensorflow as tf
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise InferenceError(checkpoint, "no such checkpoint (expected <prefix>.index and data files)")
        return checkpoint
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if not latest:
        raise InferenceError(ckpt_dir, "no checkpoint here: pass the --model_dir of a training run, or "
                                       "--checkpoint=<prefix>")
    return latest


def load_model(cfg: ResNetConfig, checkpoint: str, precision: str = "fp32"):
    """The training model (same builder as the trainer) under `precision`, with the checkpoint's weights.

    Every model variable must be restored from the checkpoint with its shape, so a checkpoint of another
    model (BERT, another width/depth/class count) is an InferenceError naming the checkpoint."""
    import tensorflow as tf
    from tf_mlperf.core import precision as precision_lib
    precision_lib.set_policy(precision)
    model = ResNetTask(cfg).build_model()
    try:
        status = tf.train.Checkpoint(model=model).restore(checkpoint)
        status.expect_partial()                     # the optimizer's slots are not needed
        status.assert_existing_objects_matched()   # every model variable found, with its shape
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InferenceError(checkpoint, f"not a checkpoint of this ResNet ({describe(cfg)}): {first[:300]}; "
                                         "pass the --flagfile the model was trained with") from e
    return model


def serving_function(model, image_size: int):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                                name=INPUT_NAME)])
    def serve(input_tensor):
        logits = tf.cast(model(input_tensor, training=False), tf.float32)
        probabilities = tf.pad(tf.nn.softmax(logits), [[0, 0], [BACKGROUND_OFFSET, 0]])
        classes = tf.argmax(logits, axis=-1, output_type=tf.int64) + BACKGROUND_OFFSET
        return {CLASSES_NAME: classes, PROBABILITIES_NAME: probabilities}

    return serve


def export(cfg: ResNetConfig, checkpoint: str, export_dir: str, precision: str = "fp32",
           overwrite: bool = False) -> str:
    """Writes the SavedModel of `checkpoint` to export_dir (atomically: temp folder, then rename)."""
    import tensorflow as tf
    import tf_keras
    if os.path.exists(export_dir) and not overwrite:
        raise InferenceError(export_dir, "already exists: choose another --export_dir or pass --overwrite")
    previous_policy = tf_keras.mixed_precision.global_policy()
    try:
        model = load_model(cfg, checkpoint, precision)
        module = tf.Module()
        module.model = model
        module.serve = serving_function(model, cfg.image_size)
        parent = os.path.dirname(os.path.abspath(export_dir))
        os.makedirs(parent, exist_ok=True)
        partial = os.path.join(parent, f".{os.path.basename(export_dir)}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        tf.saved_model.save(module, partial, signatures={"serving_default": module.serve})
        os.makedirs(os.path.join(partial, os.path.dirname(METADATA)), exist_ok=True)
        with open(os.path.join(partial, METADATA), "w") as f:
            json.dump({"checkpoint": os.path.abspath(checkpoint), "precision": precision,
                       "num_classes": cfg.num_classes, "image_size": cfg.image_size,
                       "model_width": cfg.model_width, "model_blocks": list(cfg.model_blocks),
                       "input": INPUT_NAME, "outputs": [CLASSES_NAME, PROBABILITIES_NAME],
                       "class_offset": BACKGROUND_OFFSET}, f, indent=1)
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.rename(partial, export_dir)
    finally:
        tf_keras.mixed_precision.set_global_policy(previous_policy)
    return export_dir


def main() -> None:
    def _run(argv):
        if len(argv) > 1:
            raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not FLAGS.export_dir:
            raise absl_app.UsageError("--export_dir is required")

        def work():
            checkpoint = resolve_checkpoint(FLAGS.model_dir, FLAGS.checkpoint)
            out = export(model_config(FLAGS), checkpoint, FLAGS.export_dir, FLAGS.precision, FLAGS.overwrite)
            print(f"exported {checkpoint} ({FLAGS.precision}) to {out}")
        sys.exit(run_cli("tf-mlperf-export", work, FLAGS.verbose))
    absl_app.run(_run)


if __name__ == "__main__":
    main()
