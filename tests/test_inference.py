"""MLPerf Inference from our own training run: a few real training steps on the embedded ImageNet sample,
tf-mlperf-export to a SavedModel, tf-mlperf-infer under the real LoadGen (mlcommons-loadgen) in every scenario,
and the accuracy script. The runs under LoadGen are real processes started together (they are independent)."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from support.launch import REPO, env
from support.model_fixtures import resnet_smoke_config as smoke_config
from tf_mlperf.inference import accuracy as accuracy_lib
from tf_mlperf.inference import dataset as dataset_lib
from tf_mlperf.inference import export as export_lib
from tf_mlperf.inference import harness
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask
from tf_mlperf.base.errors import UserError

pytestmark = pytest.mark.slow          # real trainer, exporter and LoadGen processes

IMAGE_SIZE = smoke_config().image_size
EVAL_IMAGES = 50
# Short LoadGen runs. Offline issues target_qps x min_duration x 1.1 samples and SingleStream pre-generates
# min_duration / target_latency queries: both set so that LoadGen runs past min_duration here. Early stopping
# needs >= 64 queries at SingleStream's 90th percentile and >= 662 at the 99th (MultiStream, Server).
SHORT_RUNS = """\
*.*.min_duration = 50
*.Offline.target_qps = 10000
*.Offline.min_query_count = 100
*.SingleStream.target_latency = 0.1
*.SingleStream.min_query_count = 64
*.MultiStream.min_query_count = 50
*.Server.target_qps = 50
*.Server.min_query_count = 50
"""


@pytest.fixture(scope="module")
def trained(resnet_smoke_model):
    """The smoke configuration trained 1 epoch (5 steps) by the real trainer (support/model_fixtures.py, once per
    test run): its run folder, checkpoint and eval top-1."""
    return resnet_smoke_model.model_dir, resnet_smoke_model.checkpoint, resnet_smoke_model.eval_top1


@pytest.fixture(scope="module")
def exported(resnet_smoke_model):
    """fp32 through the real console entry point (flagfile of the run), bf16 through the library."""
    return resnet_smoke_model.export_dir


def eval_batch(data_dir):
    """The training eval's input: every validation image of the sample, preprocessed by the trainer's pipeline."""
    from tf_mlperf.core.task import InputContext
    task = ResNetTask(smoke_config(data_dir))
    images, labels, weights = next(iter(task.eval_dataset(InputContext(1, 0, EVAL_IMAGES))))
    assert float(tf.reduce_sum(weights)) == EVAL_IMAGES
    return images, labels.numpy()


def training_model_logits(checkpoint, images):
    model = ResNetTask(smoke_config()).build_model()           # the trainer's model and its checkpoint
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return model(images, training=False).numpy()


@pytest.mark.parametrize("pad", [False, True], ids=["server", "offline"])
def test_the_sut_runs_full_batches_however_slowly_a_query_is_issued(pad):
    """An Offline query's samples arriving one by one (a slow issuer, a loaded machine) must not make smaller
    batches, and Offline fills its last batch up: a sample answered from a batch of another shape can differ in its
    last bits (BERT's logits on this CPU: 3 of 550 TEST01 samples), and TEST01 compares the accuracy and
    performance runs' answers bit for bit. (LoadGen's completion call is recorded, not made: this is the SUT's
    batching alone; the LoadGen runs below, and TEST01 in test_inference_submission.py, make the real calls.)"""
    import ctypes
    import threading
    import types
    batches, answered, done = [], {}, threading.Event()

    def respond(indices):
        batches.append(list(indices))
        return np.asarray(indices, np.float32).reshape(-1, 1)      # each sample's answer: its index

    def complete(responses):
        answered.update(responses)
        if len(answered) == 10:
            done.set()

    def response(sample_id, address, size):             # the bytes LoadGen would copy for that sample
        return sample_id, np.frombuffer(ctypes.string_at(address, size), np.float32).tolist()

    sut = harness.BatchingSUT(respond, max_batchsize=4, pad_to_full=pad)
    sut.lg = types.SimpleNamespace(QuerySamplesComplete=complete, QuerySampleResponse=response)

    def slowly():
        for i in range(10):
            time.sleep(0.01)
            yield types.SimpleNamespace(id=100 + i, index=i)

    sut.issue_queries(slowly())
    assert done.wait(30)
    sut.stop()
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9] if pad else [8, 9]]
    assert answered == {100 + i: [float(i)] for i in range(10)}     # each sample its own row, the fill's dropped


def test_savedmodel_outputs_equal_the_training_models_eval_outputs(sample_tfrecords, trained, exported):  # noqa: F811
    _, checkpoint, eval_top1 = trained
    images, labels = eval_batch(sample_tfrecords)
    logits = training_model_logits(checkpoint, images)
    assert len(set(logits.argmax(-1))) > 1                     # not one class for all: the test can tell
    served = tf.saved_model.load(str(exported / "fp32")).signatures["serving_default"](input_tensor=images)
    classes = served["ArgMax"].numpy()
    np.testing.assert_array_equal(classes, logits.argmax(-1) + 1)          # 1001-class numbering
    probabilities = served["softmax_tensor"].numpy()
    assert probabilities.shape == (EVAL_IMAGES, 1001) and not probabilities[:, 0].any()
    np.testing.assert_allclose(probabilities[:, 1:], tf.nn.softmax(logits).numpy(), atol=1e-6)
    assert np.mean(classes - 1 == labels) == pytest.approx(eval_top1)       # the trainer's logged eval


def test_bf16_export_computes_in_bf16_and_agrees_with_fp32(sample_tfrecords, exported):  # noqa: F811
    images, _ = eval_batch(sample_tfrecords)
    serve = {p: tf.saved_model.load(str(exported / p)).signatures["serving_default"] for p in ("fp32", "bf16")}
    assert _convolution_dtypes(exported / "bf16") == {tf.bfloat16}
    assert _convolution_dtypes(exported / "fp32") == {tf.float32}
    agree = np.mean(serve["fp32"](input_tensor=images)["ArgMax"].numpy()
                    == serve["bf16"](input_tensor=images)["ArgMax"].numpy())
    assert agree >= 0.9
    meta = json.loads((exported / "bf16" / export_lib.METADATA).read_text())
    assert meta["precision"] == "bf16" and meta["image_size"] == IMAGE_SIZE


def _convolution_dtypes(saved_model_dir):
    """dtypes of the Conv2D ops in a SavedModel's functions."""
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel.FromString((saved_model_dir / "saved_model.pb").read_bytes())
    dtypes = set()
    for function in proto.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == "Conv2D":
                dtypes.add(tf.dtypes.as_dtype(node.attr["T"].type))
    return dtypes


def test_export_refuses_a_checkpoint_of_another_model(trained, tmp_path):
    _, checkpoint, _ = trained
    wider = ResNetConfig(image_size=64, model_width=0.5, model_blocks=(1, 1, 1, 1))
    with pytest.raises(UserError, match=r"ckpt-\d+: not a checkpoint of this ResNet \(--num_classes=1000 "
                       r"--image_size=64 --model_width=0.5"):
        export_lib.export(wider, checkpoint, str(tmp_path / "wider"))
    dense = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])   # not a ResNet at all
    other = tf.train.Checkpoint(model=dense).save(str(tmp_path / "other" / "ckpt"))
    with pytest.raises(UserError, match=f"^{other}: not a checkpoint of this ResNet"):
        export_lib.export(smoke_config(), other, str(tmp_path / "dense"))
    assert not (tmp_path / "wider").exists() and not (tmp_path / "dense").exists()


def reference_backend_predict(model_path, images):
    """The reference harness's tensorflow backend (mlcommons/inference vision/classification_and_detection/python/
    backend_tf.py, load() and predict()) with profile resnet50-tf's inputs and outputs, in a graph of its own:
    (the dtype optimize_for_inference succeeded with, the ArgMax:0 it fetches)."""
    from tensorflow.python.tools.optimize_for_inference_lib import optimize_for_inference
    inputs, outputs = ["input_tensor:0"], ["ArgMax:0"]
    with tf.Graph().as_default():
        graph_def = tf.compat.v1.GraphDef()
        with tf.compat.v1.gfile.FastGFile(str(model_path), "rb") as f:
            graph_def.ParseFromString(f.read())
        optimized_with = None
        for as_datatype_enum in [tf.float32.as_datatype_enum, tf.uint8.as_datatype_enum]:
            try:
                graph_def = optimize_for_inference(graph_def, [item.split(":")[0] for item in inputs],
                                                   [item.split(":")[0] for item in outputs], as_datatype_enum, False)
                optimized_with = as_datatype_enum
                break
            except ValueError:
                pass
        g = tf.compat.v1.import_graph_def(graph_def, name="")
        sess = tf.compat.v1.Session(graph=g)
        return optimized_with, sess.run(outputs, feed_dict={inputs[0]: images})[0]


def test_frozen_graph_answers_as_the_savedmodel_under_the_reference_backend(sample_tfrecords, exported):  # noqa: F811
    records = dataset_lib.ValidationRecords(str(sample_tfrecords))
    size = IMAGE_SIZE
    images = np.stack([dataset_lib.preprocess_inference(records.jpeg_and_label(i)[0], size)   # pre_process_vgg
                       for i in range(len(records))])
    records.close()
    optimized_with, classes = reference_backend_predict(exported / "fp32" / export_lib.FROZEN_GRAPH, images)
    assert optimized_with == tf.float32.as_datatype_enum        # its optimize_for_inference took the graph
    served = tf.saved_model.load(str(exported / "fp32")).signatures["serving_default"]
    expected = served(input_tensor=tf.constant(images))["ArgMax"].numpy()
    assert len(set(expected)) > 1 and classes.dtype == np.int64
    np.testing.assert_array_equal(classes, expected)            # 1001-class numbering: the reference subtracts 1
    meta = json.loads((exported / "fp32" / export_lib.METADATA).read_text())
    assert meta["frozen_graph"] == "resnet50_v1.pb"


# ---------------------------------------------------------------- under LoadGen

def infer_args(model, data_dir, out, *extra):
    return [sys.executable, "-m", "tf_mlperf.inference.harness", f"--model={model}", f"--data_dir={data_dir}",
            f"--output={out}", *extra]


@pytest.fixture(scope="module")
def loadgen_runs(sample_tfrecords, exported, tmp_path_factory):  # noqa: F811
    """Accuracy mode (Offline, the training eval's preprocessing), performance mode in each scenario, and a
    10-minute SingleStream run interrupted with Ctrl-C once LoadGen has started issuing (its --output holds an
    earlier run's summary and it is given --overwrite)."""
    root = tmp_path_factory.mktemp("loadgen")
    (root / "user.conf").write_text(SHORT_RUNS)
    (root / "long.conf").write_text("*.SingleStream.min_duration = 600000\n")
    interrupts = {"interrupted": signal.SIGINT, "terminated": signal.SIGTERM}      # Ctrl-C, kill
    for name in interrupts:
        (root / name).mkdir()
        (root / name / "mlperf_log_summary.txt").write_text("Result is : VALID\n")
    runs = {"accuracy": ["--scenario=Offline", "--accuracy", "--preprocessing=training"]}
    runs.update({name: ["--scenario=SingleStream", f"--user_conf={root / 'long.conf'}", "--overwrite"]
                 for name in interrupts})
    runs.update({s: [f"--scenario={s}", f"--user_conf={root / 'user.conf'}"] for s in harness.SCENARIOS})
    procs = {name: subprocess.Popen(infer_args(exported / "fp32", sample_tfrecords, root / name, *args),
                                    cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, args in runs.items()}
    results, deadline = {}, time.time() + 600
    for name, number in interrupts.items():
        detail, proc = root / name / ".partial" / "mlperf_log_detail.txt", procs.pop(name)
        while time.time() < deadline and proc.poll() is None and "generated_query_count" not in _text(detail):
            time.sleep(0.1)
        running = proc.poll() is None
        proc.send_signal(number)
        results[name] = (root / name, proc.communicate(timeout=120)[0], running, proc.returncode)
    for name, proc in procs.items():
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{out[-5000:]}"
        results[name] = (root / name, out)
    return results


def _text(path):
    return path.read_text(errors="replace") if path.exists() else ""


def test_accuracy_mode_top1_equals_the_training_eval_top1(sample_tfrecords, trained, loadgen_runs, capsys):  # noqa: F811
    out, stdout = loadgen_runs["accuracy"]
    good = round(trained[2] * EVAL_IMAGES)
    expected = accuracy_lib.format_result(good, EVAL_IMAGES)
    assert (out / "accuracy.txt").read_text().strip() == expected and expected in stdout
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(EVAL_IMAGES))   # every sample once
    # each sample's answer is the training model's class for that image in the training eval; the eval pipeline
    # interleaves the files, so its images are matched to QSL samples by content
    images, _ = eval_batch(sample_tfrecords)
    eval_classes = training_model_logits(trained[1], images).argmax(-1)
    records = dataset_lib.ValidationRecords(str(sample_tfrecords))
    qsl_images = [dataset_lib.preprocess_training(records.jpeg_and_label(i)[0], IMAGE_SIZE)
                  for i in range(EVAL_IMAGES)]
    records.close()
    position = [next(j for j in range(EVAL_IMAGES) if np.array_equal(images[j].numpy(), image))
                for image in qsl_images]
    assert sorted(position) == list(range(EVAL_IMAGES))
    answered = [np.frombuffer(bytes.fromhex(e["data"]), np.float32)[0]
                for e in sorted(entries, key=lambda e: e["qsl_idx"])]
    np.testing.assert_array_equal(answered, eval_classes[position])
    assert "No errors encountered" in (out / "mlperf_log_summary.txt").read_text()
    # the accuracy script on its own, as tools/accuracy-imagenet.py is run after a reference run
    assert accuracy_lib.main([f"--mlperf_accuracy_file={out / 'mlperf_log_accuracy.json'}",
                              f"--data_dir={sample_tfrecords}"]) == 0
    assert capsys.readouterr().out.strip() == expected
    assert not (out / ".partial").exists()


@pytest.mark.parametrize("scenario", harness.SCENARIOS)
def test_performance_mode_completes_each_scenario(loadgen_runs, scenario):
    out, stdout = loadgen_runs[scenario]
    summary = (out / "mlperf_log_summary.txt").read_text()
    assert f"Scenario : {scenario}" in summary and "No errors encountered" in summary
    assert (out / "mlperf_log_detail.txt").exists() and json.loads((out / "mlperf_log_accuracy.json").read_text()) == []
    result = harness.summary_result(out / "mlperf_log_summary.txt")
    assert f"LoadGen result {result}" in stdout
    if scenario in ("Offline", "SingleStream"):
        assert result == "VALID", summary
    else:
        # Early stopping at the 99th percentile needs >= 662 queries (MultiStream's mlperf.conf minimum), too
        # many for CI; Server must also keep p99 under resnet50's 15 ms on shared CPU cores (docs/inference.md).
        assert result in ("VALID", "INVALID")


@pytest.mark.parametrize("name, signal_name, code", [("interrupted", "SIGINT", 130), ("terminated", "SIGTERM", 143)])
def test_an_interrupted_run_says_so_in_one_line_and_leaves_nothing(loadgen_runs, name, signal_name, code):
    out, stdout, was_running, returncode = loadgen_runs[name]
    assert was_running, stdout[-3000:]                         # it was interrupted mid-run, not before
    assert returncode == code, stdout[-3000:]                  # as a shell reports Ctrl-C (130) and kill (143)
    errors = [line for line in stdout.splitlines() if line.startswith("tf-mlperf-infer:")]
    assert errors == [f"tf-mlperf-infer: error: interrupted by {signal_name}: no result written "
                      f"({out / '.partial'} removed)"], stdout[-3000:]
    assert "Traceback" not in stdout
    assert not (out / "mlperf_log_summary.txt").exists()       # the earlier run's is gone (--overwrite) ...
    assert list(out.iterdir()) == []                           # ... and no .partial, no log took its place


# ---------------------------------------------------------------- inputs

def test_reference_preprocessing_matches_the_training_eval_geometry_and_channels(sample_tfrecords):  # noqa: F811
    records = dataset_lib.ValidationRecords(str(sample_tfrecords))
    assert len(records) == EVAL_IMAGES
    size = IMAGE_SIZE
    for i in range(0, EVAL_IMAGES, 7):
        jpeg, label = records.jpeg_and_label(i)
        assert 0 <= label < 1000
        inference = dataset_lib.preprocess_inference(jpeg, size)
        training = dataset_lib.preprocess_training(jpeg, size)
        assert inference.shape == training.shape == (size, size, 3) and inference.dtype == np.float32
        # same crop and channel order; only the interpolation differs (OpenCV INTER_AREA vs TF1 bilinear)
        assert np.abs(inference - training).mean() < 8, i
    records.close()


def run_infer_inprocess(args, capsys):
    code = harness.main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_inputs_are_one_line_errors_naming_the_file(sample_tfrecords, tmp_path, capsys):  # noqa: F811
    model = tmp_path / "model"                   # only looked at after the checks below
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")
    conf = tmp_path / "user.conf"
    conf.write_text("# ok\n*.Offline.target_qps = 100\nresnet50.Offline.min_querry_count = 10\n")
    code, err = run_infer_inprocess([f"--model={model}", f"--data_dir={sample_tfrecords}",
                                     f"--user_conf={conf}", f"--output={tmp_path / 'o'}"], capsys)
    assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {conf}:3: unknown LoadGen key 'min_querry_count'")
    assert "\n" not in err
    conf.write_text("resnet50.Offline.target_qps = fast\n")
    code, err = run_infer_inprocess([f"--model={model}", f"--data_dir={sample_tfrecords}",
                                     f"--user_conf={conf}"], capsys)
    assert code == 2 and err == f"tf-mlperf-infer: error: {conf}:1: value 'fast' is not a number"

    no_val = tmp_path / "train_only"
    no_val.mkdir()
    for path in pathlib.Path(sample_tfrecords).glob("train-*"):
        (no_val / path.name).symlink_to(path)
    code, err = run_infer_inprocess([f"--model={model}", f"--data_dir={no_val}"], capsys)
    assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {no_val}: no validation split") and "\n" not in err

    out = tmp_path / "o2"
    out.mkdir()
    (out / "mlperf_log_detail.txt").write_text("earlier\n")
    code, err = run_infer_inprocess([f"--model={model}", f"--data_dir={sample_tfrecords}", f"--output={out}"],
                                    capsys)
    assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {out / 'mlperf_log_detail.txt'}: an earlier run")
    assert (out / "mlperf_log_detail.txt").read_text() == "earlier\n"                  # nothing lost

    code, err = run_infer_inprocess([f"--model={tmp_path / 'none'}", f"--data_dir={sample_tfrecords}",
                                     f"--output={tmp_path / 'o3'}"], capsys)
    assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {tmp_path / 'none'}: no SavedModel here")

    bad_log = tmp_path / "mlperf_log_accuracy.json"
    bad_log.write_text('[\n{ "seq_id" : 0, "qsl_idx" : 1, "data" : "00800944" },\n')    # cut off mid-run
    code = accuracy_lib.main([f"--mlperf_accuracy_file={bad_log}", f"--data_dir={sample_tfrecords}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"tf_mlperf.inference.accuracy: error: {bad_log}: not a complete")


def save_serving_model(path, shape, fail_after_calls=None):
    """A SavedModel with the export's signature names (input_tensor -> ArgMax) and `shape` as its input; with
    fail_after_calls, every call after that many fails (tf.debugging.assert_less on a call counter)."""
    module = tf.Module()
    module.calls = tf.Variable(0, dtype=tf.int64)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input_tensor")])
    def serve(input_tensor):
        if fail_after_calls is not None:
            calls = module.calls.assign_add(1)
            tf.debugging.assert_less(calls, tf.constant(fail_after_calls + 1, tf.int64), message="broken model")
        return {"ArgMax": tf.argmax(tf.reduce_mean(input_tensor, axis=[1, 2]), axis=-1) + 1}
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def test_unusable_models_and_shards_are_one_line_errors_that_write_nothing(sample_tfrecords, tmp_path,  # noqa: F811
                                                                          capsys):
    size = IMAGE_SIZE
    cases = [(save_serving_model(tmp_path / "no_size", [None, None, None, 3]), sample_tfrecords,
              "serving input 'input_tensor' has no fixed image size ([N, None, None, 3])"),
             (save_serving_model(tmp_path / "nchw", [None, 3, size, size]), sample_tfrecords,
              f"serving input 'input_tensor' is channels-first [N, 3, {size}, {size}]: the reference's resnet50-tf "
              "and this harness feed NHWC [N, S, S, 3]")]
    empty_shard = tmp_path / "empty_shard"
    empty_shard.mkdir()
    shards = sorted(pathlib.Path(sample_tfrecords).glob("validation-*-of-*"))
    for path in shards:
        (empty_shard / path.name).symlink_to(path)
    (empty_shard / shards[1].name).unlink()
    (empty_shard / shards[1].name).write_bytes(b"")
    only_shard = tmp_path / "only_shard"                       # the whole split one empty shard
    only_shard.mkdir()
    (only_shard / "validation-00000-of-00001").write_bytes(b"")
    good_model = save_serving_model(tmp_path / "good", [None, size, size, 3])
    cases += [(good_model, empty_shard, "empty validation shard (no records)"),
              (good_model, only_shard, "empty validation shard (no records)")]
    for model, data_dir, message in cases:
        out = tmp_path / f"out_{model.name}_{data_dir.name}"
        code, err = run_infer_inprocess([f"--model={model}", f"--data_dir={data_dir}", f"--output={out}"], capsys)
        where = {empty_shard: empty_shard / shards[1].name,
                 only_shard: only_shard / "validation-00000-of-00001"}.get(data_dir, model)
        assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {where}: {message}"), err
        assert "\n" not in err and ("tf-mlperf-export" in err or "tf-mlperf-prep-imagenet convert" in err), err
        assert not out.exists()                                # nothing written


def test_a_model_failing_mid_run_is_one_line_and_leaves_no_partial_folder(sample_tfrecords, tmp_path,  # noqa: F811
                                                                        capsys):
    size = IMAGE_SIZE
    model = save_serving_model(tmp_path / "breaks", [None, size, size, 3], fail_after_calls=2)   # the warm-up's 2
    (tmp_path / "user.conf").write_text(SHORT_RUNS)
    out = tmp_path / "out"
    code, err = run_infer_inprocess([f"--model={model}", f"--data_dir={sample_tfrecords}", f"--output={out}",
                                     "--scenario=Offline", f"--user_conf={tmp_path / 'user.conf'}"], capsys)
    assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {model}: the model failed during the run "
                                        "(InvalidArgumentError: assertion failed: [broken model]"), err
    assert err.endswith("): no result written") and "\n" not in err, err
    assert list(out.iterdir()) == []                            # no .partial, no log
