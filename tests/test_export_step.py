"""benchmarks/export_step.py exports the real train steps as XLA HLO; the shape signature of the exported
ENTRY computation is the batch, then every model and optimizer variable (what run_stablehlo.py feeds)."""
import collections
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tf_keras

from support.launch import REPO, env

sys.path.insert(0, str(REPO / "benchmarks"))
from export_step import _ChannelPaddedConv2D, entry_parameter_shapes  # noqa: E402

SMALL_RESNET = ["--use_synthetic_data", "--batch_size=4", "--image_size=32", "--model_width=0.25",
                "--model_blocks=1,1,1,1", "--num_classes=10", "--precision=bf16"]
SMALL_BERT = ["--use_synthetic_data", "--bert_preset=tiny", "--train_batch_size=2", "--max_seq_length=16",
              "--max_predictions_per_seq=3", "--precision=bf16", "--num_eval_examples=4"]


def export(tmp_path, benchmark, flags, name=None):
    out = tmp_path / f"{name or benchmark}.pb"
    proc = subprocess.run([sys.executable, REPO / "benchmarks" / "export_step.py", benchmark, out, *flags],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert out.stat().st_size > 10_000
    return entry_parameter_shapes((tmp_path / f"{name or benchmark}.pb.txt").read_text())


def _variable_shapes(build_task_module, flags):
    """Shapes of the model's and optimizer's variables, built the way the loop builds them."""
    code = f"""
import sys, json
from absl import flags
import {build_task_module} as trainer
from tf_mlperf.core import distribution
from tf_mlperf.core.loop import build_model_and_optimizer
from tf_mlperf.core.train_step import optimizer_variables
flags.FLAGS(["x", *{flags!r}])
task = trainer.build_task(flags.FLAGS)
model, opt = build_model_and_optimizer(task, distribution.NoDistribution(), flags.FLAGS.precision)
print(json.dumps([v.shape.as_list() for v in model.variables + optimizer_variables(opt)]))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_parameters_are_the_variables(parameter_shapes, variables):
    """Every model and optimizer variable is a parameter (counted with multiplicity: the step reads them all),
    and nothing else is, except scalars (step counters, seeds)."""
    params = collections.Counter(str(_dims(s)) for s in parameter_shapes)
    expected = collections.Counter(map(str, variables))
    assert expected - params == collections.Counter(), f"variables missing from the step: {expected - params}"
    extra = params - expected
    assert set(extra) <= {"[]"} and sum(extra.values()) <= 4, f"parameters that are no variable: {extra}"


def _dims(shape):
    return [int(d) for d in shape.split("[")[1].rstrip("]").split(",") if d]


@pytest.fixture(scope="module")
def resnet_plain(tmp_path_factory):
    """The small ResNet step exported without a lever: (folder, its entry parameter shapes)."""
    folder = tmp_path_factory.mktemp("resnet_plain")
    return folder, export(folder, "resnet", SMALL_RESNET, name="plain")


@pytest.mark.slow
def test_resnet_step_exports_with_batch_then_variables(resnet_plain):
    shapes = resnet_plain[1]
    assert shapes[0] == "f32[4,32,32,3]" and shapes[1].endswith("[4]")    # images, labels
    variables = _variable_shapes("tf_mlperf.resnet.train", SMALL_RESNET)
    assert_parameters_are_the_variables(shapes[2:], variables)
    assert "f32[7,7,3,16]" in shapes                                       # the stem conv, fp32 master copy


@pytest.mark.slow
def test_bert_step_exports_with_batch_then_variables(tmp_path):
    shapes = export(tmp_path, "bert", SMALL_BERT)
    batch = shapes[:7]
    assert sorted(batch) == sorted(["s32[2,16]"] * 3 + ["s32[2,3]"] * 2 + ["f32[2,3]", "s32[2,1]"])
    variables = _variable_shapes("tf_mlperf.bert.train", SMALL_BERT)
    assert_parameters_are_the_variables(shapes[7:], variables)
    assert any(s.startswith("f32[30522,") for s in shapes[7:])             # the word embeddings


# ---- levers (measurement variants for the lever log in docs/PERFORMANCE.md) ----

def test_channel_padded_stem_conv_is_the_same_math():
    images = np.random.default_rng(0).normal(size=(2, 17, 17, 3)).astype("float32")
    plain = tf_keras.layers.Conv2D(8, 7, strides=2, padding="valid", use_bias=False)
    padded = _ChannelPaddedConv2D(8, 7, strides=2, padding="valid", use_bias=False)
    plain.build(images.shape), padded.build(images.shape)
    padded.set_weights(plain.get_weights())
    assert padded.kernel.shape == (7, 7, 3, 8)                             # the variable is unchanged
    np.testing.assert_allclose(padded(images), plain(images), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_stem_pad_lever_pads_the_stem_conv_only(resnet_plain, tmp_path):
    shapes = export(tmp_path, "resnet", [*SMALL_RESNET, "--lever=stem_pad4"])
    assert "f32[7,7,3,16]" in shapes                                       # same variables as the model
    plain = _convolution_operands((resnet_plain[0] / "plain.pb.txt").read_text())
    padded = _convolution_operands((tmp_path / "resnet.pb.txt").read_text())
    assert sum(plain.values()) == sum(padded.values())
    changed = list((plain - padded) + (padded - plain))
    # only the stem's convolutions (forward, kernel gradient) changed: 3 -> 4 channels on its 38x38 input
    assert any("[7,7,4,16]" in ops for ops in changed)
    assert changed and all(re.search(r"\[4,38,38,[34]\]", ops) for ops in changed), changed


def _convolution_operands(hlo_text):
    """Multiset of the operand shapes of every convolution in an HLO module (instruction names dropped)."""
    operands = re.findall(r" convolution\(([^)]*)\)", hlo_text)
    return collections.Counter(re.sub(r"\{[^}]*\} %\S+", "", ops) for ops in operands)


@pytest.mark.slow
def test_bert_dropout_levers_change_the_random_ops(tmp_path):
    config = tmp_path / "small_with_dropout.json"
    config.write_text(json.dumps({"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
                                  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                                  "max_position_embeddings": 512, "type_vocab_size": 2,
                                  "initializer_range": 0.02}))
    flags = [f"--bert_config_file={config}", *[f for f in SMALL_BERT if not f.startswith("--bert_preset")]]
    ops = {}
    for lever in ("none", "tf_random_generator", "no_dropout"):
        export(tmp_path, "bert", [*flags, f"--lever={lever}"], name=lever)
        text = (tmp_path / f"{lever}.pb.txt").read_text()
        ops[lever] = collections.Counter(re.findall(r" (rng|rng-bit-generator)\(", text))
    # 2 layers x (attention probs, attention output, FFN output) + the embedding dropout
    assert ops["none"] == {"rng": 7}
    assert ops["tf_random_generator"] == {"rng-bit-generator": 7}
    assert ops["no_dropout"] == {}


def test_a_lever_for_the_other_benchmark_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, REPO / "benchmarks" / "export_step.py", "resnet", tmp_path / "x.pb",
                           "--lever=no_dropout", *SMALL_RESNET], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "--lever=no_dropout applies to bert only" in proc.stderr
