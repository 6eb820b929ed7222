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

Beside it, resnet50_v1.pb: the same function as a frozen GraphDef (variables folded into constants), which is
what the reference harness's `tf` backend loads (backend_tf.py: GraphDef, optimize_for_inference, Session) for
its resnet50-tf profile, fed "input_tensor:0" and fetching "ArgMax:0": run it with
`main.py --profile resnet50-tf --model <export_dir>/resnet50_v1.pb`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

from absl import app as absl_app
from absl import flags

# The trainer's flags (--flagfile of the training run works here), defined once, in its module.
from tf_mlperf.resnet import train as _resnet_train  # noqa: F401
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask
from tf_mlperf.base.errors import UserError, run_cli

BACKGROUND_OFFSET = 1            # reference class id = our class + 1 (class 0 of its 1001 is background)
INPUT_NAME, CLASSES_NAME, PROBABILITIES_NAME = "input_tensor", "ArgMax", "softmax_tensor"
METADATA = os.path.join("assets.extra", "tf_mlperf_export.json")
FROZEN_GRAPH = "resnet50_v1.pb"   # the reference's file name for resnet50-tf (run_common.sh)

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
            raise UserError(checkpoint, "no such checkpoint (expected <prefix>.index and data files)")
        return checkpoint
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if not latest:
        raise UserError(ckpt_dir, "no checkpoint here: pass the --model_dir of a training run, or "
                        "--checkpoint=<prefix>")
    return latest


def load_model(cfg: ResNetConfig, checkpoint: str, precision: str = "fp32"):
    """The training model (same builder as the trainer) under `precision`, with the checkpoint's weights.

    Every model variable must be restored from the checkpoint with its shape, so a checkpoint of another
    model (BERT, another width/depth/class count) is an UserError naming the checkpoint."""
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
        raise UserError(checkpoint, f"not a checkpoint of this ResNet ({describe(cfg)}): {first[:300]}; "
                        "pass the --flagfile the model was trained with") from e
    return model


def serving_function(model, image_size: int):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                                name=INPUT_NAME)])
    def serve(input_tensor):
        logits = tf.cast(model(input_tensor, training=False), tf.float32)
        probabilities = tf.pad(tf.nn.softmax(logits), [[0, 0], [BACKGROUND_OFFSET, 0]])
        classes = tf.argmax(logits, axis=-1, output_type=tf.int64, name="top1") + BACKGROUND_OFFSET
        # the graph's node names are the reference model's: the frozen graph is fetched by "ArgMax:0"
        return {CLASSES_NAME: tf.identity(classes, name=CLASSES_NAME),
                PROBABILITIES_NAME: tf.identity(probabilities, name=PROBABILITIES_NAME)}

    return serve


def frozen_graph_def(serve):
    """The serving function as a frozen GraphDef with the reference model's node names (input_tensor, ArgMax,
    softmax_tensor)."""
    from tensorflow.python.framework import convert_to_constants
    graph_def = convert_to_constants.convert_variables_to_constants_v2(serve.get_concrete_function()).graph \
        .as_graph_def()
    nodes = {node.name: node.op for node in graph_def.node}
    if nodes.get(INPUT_NAME) != "Placeholder" or CLASSES_NAME not in nodes or PROBABILITIES_NAME not in nodes:
        raise AssertionError(f"frozen graph without the nodes {INPUT_NAME}/{CLASSES_NAME}/{PROBABILITIES_NAME}")
    return graph_def


def export(cfg: ResNetConfig, checkpoint: str, export_dir: str, precision: str = "fp32",
           overwrite: bool = False) -> str:
    """Writes the SavedModel of `checkpoint` to export_dir (atomically: temp folder, then rename)."""
    import tensorflow as tf
    import tf_keras
    if os.path.exists(export_dir) and not overwrite:
        raise UserError(export_dir, "already exists: choose another --export_dir or pass --overwrite")
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
        with open(os.path.join(partial, FROZEN_GRAPH), "wb") as f:
            f.write(frozen_graph_def(module.serve).SerializeToString())
        os.makedirs(os.path.join(partial, os.path.dirname(METADATA)), exist_ok=True)
        with open(os.path.join(partial, METADATA), "w") as f:
            json.dump({"checkpoint": os.path.abspath(checkpoint), "precision": precision,
                       "num_classes": cfg.num_classes, "image_size": cfg.image_size,
                       "model_width": cfg.model_width, "model_blocks": list(cfg.model_blocks),
                       "input": INPUT_NAME, "outputs": [CLASSES_NAME, PROBABILITIES_NAME],
                       "frozen_graph": FROZEN_GRAPH,
                       "class_offset": BACKGROUND_OFFSET}, f, indent=1)
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.rename(partial, export_dir)
    finally:
        tf_keras.mixed_precision.set_global_policy(previous_policy)
    return export_dir


def check_input_spec(path: str, spec) -> int:
    """The image size S of a serving input spec that must be float32 [N, S, S, 3] (NHWC, as the reference's
    resnet50-tf and the harness's preprocessing); anything else is an UserError naming the model."""
    import tensorflow as tf
    shape = spec.shape.as_list() if spec.shape.rank is not None else None
    shown = "unknown rank" if shape is None else "[" + ", ".join("N" if i == 0 and d is None else str(d)
                                                                 for i, d in enumerate(shape)) + "]"
    problem = None
    if shape is None or len(shape) != 4:
        problem = f"has shape {shown}, not the images [N, S, S, 3]"
    elif shape[1] == 3 and shape[3] != 3:
        problem = f"is channels-first {shown}: the reference's resnet50-tf and this harness feed NHWC [N, S, S, 3]"
    elif shape[3] != 3:
        problem = f"has shape {shown}, not the images [N, S, S, 3] (NHWC, 3 channels)"
    elif shape[1] is None or shape[2] is None:
        problem = f"has no fixed image size ({shown}): the preprocessing needs S"
    elif shape[1] != shape[2]:
        problem = f"is not square ({shown}): the reference's central crop is S x S"
    elif spec.dtype != tf.float32:
        problem = f"is {spec.dtype.name}, not float32 (the reference feeds mean-subtracted float32)"
    if problem:
        raise UserError(path, f"serving input {INPUT_NAME!r} {problem}; export the model with tf-mlperf-export "
                        "(--image_size S gives float32 [N, S, S, 3])")
    return int(shape[1])


def load_saved_model(path: str):
    """(predict: images -> ArgMax classes, image size) of a tf-mlperf-export SavedModel."""
    import tensorflow as tf
    try:
        serve = tf.saved_model.load(path).signatures.get("serving_default")
    except Exception as e:   # pylint: disable=broad-except  (TF raises several kinds for a damaged model)
        raise UserError(path, f"cannot load the SavedModel ({str(e).strip().splitlines()[0][:300]}): "
                        "export it again with tf-mlperf-export") from e
    spec = serve.structured_input_signature[1].get(INPUT_NAME) if serve is not None else None
    if spec is None or CLASSES_NAME not in serve.structured_outputs:
        raise UserError(path, f"not a tf-mlperf-export SavedModel (serving_default with "
                        f"{INPUT_NAME!r} -> {CLASSES_NAME!r})")
    image_size = check_input_spec(path, spec)

    def predict(images: np.ndarray) -> np.ndarray:
        return serve(**{INPUT_NAME: tf.constant(images)})[CLASSES_NAME].numpy()
    return predict, image_size


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
