"""Export the XLA HLO of our real train step (model, loss, LARS/LAMB update, precision) for a GPU run.

    python benchmarks/export_step.py resnet OUT.pb --flagfile=flags/resnet50/bs2048.cfg \\
        --use_synthetic_data --precision=bf16 --batch_size=256
    python benchmarks/export_step.py bert OUT.pb --flagfile=flags/bert/<preset>.cfg \\
        --use_synthetic_data --precision=bf16 --train_batch_size=32

The trainer's own flags and `build_task` make the task; `core.loop.build_model_and_optimizer` and
`core.train_step.make_replica_step` (distribution `none`) make the step, compiled whole with jit_compile:
the same code training runs, with the allreduce an identity. Writes the serialized HloModuleProto
(`stage="hlo_serialized"`) and, beside it, OUT.pb.txt with the HLO text. Convert and run it with
../shared/gpu/run_stablehlo.py (see docs/PERFORMANCE.md).

`--lever=NAME` exports a variant for the lever log in docs/PERFORMANCE.md. Some are diagnostics that
closed division does not allow (no_dropout, sgd); none of them is used by training.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from absl import app as absl_app  # noqa: E402
from absl import flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tf_mlperf.core import distribution  # noqa: E402
from tf_mlperf.core.loop import build_model_and_optimizer  # noqa: E402
from tf_mlperf.core.task import InputContext  # noqa: E402
from tf_mlperf.core.train_step import make_replica_step  # noqa: E402

TRAINERS = {"resnet": "tf_mlperf.resnet.train", "bert": "tf_mlperf.bert.train"}


class _ChannelPaddedConv2D(tf_keras.layers.Conv2D):
    """Conv2D that zero-pads input channels and kernel to `pad_to`: the same math, a wider contraction."""

    pad_to = 4

    def convolution_op(self, inputs, kernel):
        extra = self.pad_to - inputs.shape[-1]
        inputs = tf.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, extra]])
        kernel = tf.pad(kernel, [[0, 0], [0, 0], [0, extra], [0, 0]])
        return super().convolution_op(inputs, kernel)


def _pad_stem(channels: int):
    def apply(task):
        from tf_mlperf.resnet import model as model_lib
        plain_conv = model_lib._conv

        def conv(*args, **kwargs):
            layer = plain_conv(*args, **kwargs)
            if layer.name != "conv1":
                return layer
            padded = _ChannelPaddedConv2D.from_config(layer.get_config())    # the model's own settings
            padded.pad_to = channels
            return padded
        model_lib._conv = conv      # this process only exports; training never sees it
        return task
    return apply


def _garden_resnet(task):
    from bench_resnet import official_resnet50
    if (task.cfg.image_size, task.cfg.num_classes) != (224, 1000):
        raise absl_app.UsageError("--lever=garden_model is the full-size model: image_size 224, 1000 classes")
    task.build_model = official_resnet50
    return task


def _sgd(task):
    task.build_optimizer = lambda model: tf_keras.optimizers.SGD(0.1, momentum=0.9)
    return task


def _no_dropout(task):
    bert = dataclasses.replace(task.cfg.bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    task.cfg = dataclasses.replace(task.cfg, bert=bert)
    return task


def _tf_random_generator(task):
    tf_keras.backend.experimental.enable_tf_random_generator()   # dropout masks from Philox, not legacy rng
    return task


# name -> (benchmarks it applies to, task -> task)
LEVERS = {
    "none": (("resnet", "bert"), lambda task: task),
    "sgd": (("resnet", "bert"), _sgd),
    "garden_model": (("resnet",), _garden_resnet),
    "stem_pad4": (("resnet",), _pad_stem(4)),
    "stem_pad8": (("resnet",), _pad_stem(8)),
    "no_dropout": (("bert",), _no_dropout),
    "tf_random_generator": (("bert",), _tf_random_generator),
}
flags.DEFINE_enum("lever", "none", list(LEVERS), "Export a measurement variant (see docs/PERFORMANCE.md).")


def export(build_task, fvalues, out_path: str) -> str:
    """Builds the task from flags, compiles one whole replica step and writes its HLO; returns HLO text."""
    task = build_task(fvalues)
    dist = distribution.NoDistribution()
    model, optimizer = build_model_and_optimizer(task, dist, fvalues.precision)
    batch = next(iter(task.train_dataset(InputContext(1, 0, task.global_batch_size))))
    step = tf.function(make_replica_step(task, model, optimizer, dist, xla=False), jit_compile=True)
    hlo_proto = step.experimental_get_compiler_ir(batch)(stage="hlo_serialized")
    hlo_text = step.experimental_get_compiler_ir(batch)(stage="hlo")
    with open(out_path, "wb") as f:
        f.write(hlo_proto)
    with open(out_path + ".txt", "w") as f:
        f.write(hlo_text)
    return hlo_text


def entry_parameter_shapes(hlo_text: str) -> list[str]:
    """Shapes of the ENTRY computation's parameters, e.g. ['bf16[2,3]', 'f32[10]'], in order."""
    entry = re.search(r"^ENTRY [^\n]*\{\n(.*?)^\}", hlo_text, re.M | re.S).group(1)
    params = re.findall(r"= (\w+\[[\d,]*\])(?:\{[^}]*\})? parameter\((\d+)\)", entry)
    return [shape for shape, _ in sorted(params, key=lambda p: int(p[1]))]


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in TRAINERS:
        sys.exit(__doc__)
    benchmark, out_path = sys.argv[1], sys.argv[2]
    trainer = importlib.import_module(TRAINERS[benchmark])

    def run(_):
        benchmarks, lever = LEVERS[flags.FLAGS.lever]
        if benchmark not in benchmarks:
            raise absl_app.UsageError(f"--lever={flags.FLAGS.lever} applies to {' and '.join(benchmarks)} only")
        text = export(lambda f: lever(trainer.build_task(f)), flags.FLAGS, out_path)
        shapes = entry_parameter_shapes(text)
        print(f"wrote {out_path}: {os.path.getsize(out_path)} bytes, {len(shapes)} parameters")

    absl_app.run(run, argv=[sys.argv[0], *sys.argv[3:]])


if __name__ == "__main__":
    main()
