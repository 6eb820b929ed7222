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

`--lever=NAME[,NAME...]` exports a variant for the lever log in docs/PERFORMANCE.md. Some are diagnostics that
closed division does not allow (no_dropout, sgd); none of them is used by training. The BERT levers of issue 29
are the trainer's own flags: fused_attention (--attention=fused, its cuDNN custom calls emitted although this
machine has no GPU), dropout_philox16 (--dropout_rng=philox16), all (both), and packed (a synthetic packed batch
of the same sequences, 2 per row on average, as --packed would feed). Beside OUT.pb, OUT.pb.batch.npz holds the
exported batch (what benchmarks/gpu/run_steps.py feeds the step).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys

import numpy as np

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


def _bert_setting(**changes):
    def apply(task):
        if changes.get("attention") == "fused":
            from tf_mlperf.bert import attention
            attention.force_fused()           # the step is exported here (no GPU) to run on a GPU
        task.cfg = dataclasses.replace(task.cfg, **changes)
        return task
    return apply


def synthetic_packed_batch(seqs: int, rows: int, seq_length: int, predictions: int, vocab_size: int,
                           seed: int = 0) -> dict:
    """`seqs` random well-formed sequences (37.5-50 % of a row long: rows = seqs / 2 are ~88 % real tokens, as
    packed MLPerf data) packed into `rows` rows by the trainer's packer (tf_mlperf/bert/packing.py), as --packed
    lays them out."""
    from tf_mlperf.bert import packing
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(4 * seqs):
        length = int(rng.integers(max(2, seq_length * 3 // 8), seq_length // 2 + 1))
        mask = (np.arange(seq_length) < length).astype(np.int32)
        ids = np.where(mask > 0, rng.integers(min(1000, vocab_size - 1), vocab_size, seq_length), 0).astype(np.int32)
        segment = ((np.arange(seq_length) >= length // 2) & (mask > 0)).astype(np.int32)
        count = min(predictions, length - 1)
        positions = np.zeros(predictions, np.int32)
        positions[:count] = np.sort(rng.choice(np.arange(1, length), size=count, replace=False))
        examples.append({"input_ids": ids, "input_mask": mask, "segment_ids": segment,
                         "masked_lm_positions": positions,
                         "masked_lm_ids": rng.integers(0, vocab_size, predictions).astype(np.int32),
                         "masked_lm_weights": (np.arange(predictions) < count).astype(np.float32),
                         "next_sentence_labels": np.array([i % 2], np.int32)})
    return next(packing.packed_batches(examples, seqs, rows, seq_length))


def _packed(task):
    cfg = task.cfg
    if cfg.num_accumulation_steps != 1:
        raise absl_app.UsageError("--lever=packed exports one micro-batch: leave --num_accumulation_steps at 1")

    def dataset(ctx):
        seqs = ctx.per_replica_batch_size
        batch = synthetic_packed_batch(seqs, seqs // 2, cfg.max_seq_length, cfg.max_predictions_per_seq,
                                       cfg.bert.vocab_size)
        return tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in batch.items()}).repeat()
    task.train_dataset = dataset
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
    "fused_attention": (("bert",), _bert_setting(attention="fused")),
    "dropout_philox16": (("bert",), _bert_setting(dropout_rng="philox16")),
    "all": (("bert",), _bert_setting(attention="fused", dropout_rng="philox16")),
    "packed": (("bert",), _packed),
}
flags.DEFINE_list("lever", ["none"], "Export a measurement variant, or several applied in order, e.g. "
                  "packed,all (see docs/PERFORMANCE.md).")
flags.register_validator("lever", lambda names: all(n in LEVERS for n in names),
                         f"--lever: each name one of {', '.join(LEVERS)}")


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
    flat = tf.nest.flatten(batch)                       # the step's first parameters, in this order
    names = sorted(batch) if isinstance(batch, dict) else [str(i) for i in range(len(flat))]   # (tf.nest's order)
    np.savez(out_path + ".batch.npz",
             **{f"{i:03d}_{name}": t.numpy() for i, (name, t) in enumerate(zip(names, flat))})
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
        levers = []
        for name in flags.FLAGS.lever:
            benchmarks, lever = LEVERS[name]
            if benchmark not in benchmarks:
                raise absl_app.UsageError(f"--lever={name} applies to {' and '.join(benchmarks)} only")
            levers.append(lever)

        def build(f):
            task = trainer.build_task(f)
            for lever in levers:
                task = lever(task)
            return task
        text = export(build, flags.FLAGS, out_path)
        shapes = entry_parameter_shapes(text)
        print(f"wrote {out_path}: {os.path.getsize(out_path)} bytes, {len(shapes)} parameters")

    absl_app.run(run, argv=[sys.argv[0], *sys.argv[3:]])


if __name__ == "__main__":
    main()
