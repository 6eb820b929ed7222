"""The SQuAD v1.1 features as the MLPerf Inference QSL sees them (bert), and the exported model's answers.

As the reference (language/bert/squad_QSL.py + tf_SUT.py): sample i is the i-th feature of the SQuAD JSON
(dev-v1.1.json: 10,833 features of 10,570 questions) built by tf_mlperf/bert/squad.py with the parameters the
SavedModel was exported for (384 / 128 / 64 unless its assets.extra/tf_mlperf_export.json says otherwise); all
features stay in memory (LoadGen's load and unload have nothing to do) and the performance sample count is the
feature count (mlperf.conf sets 10,833 for bert). The SUT answers each sample with the model's logits [S, 2]
as float32 (start, end interleaved), as tf_SUT.py; the accuracy is accuracy-squad.py's (accuracy_squad.py).
"""
from __future__ import annotations

import json
import os

import numpy as np

from tf_mlperf.base.errors import UserError
from tf_mlperf.bert import squad
from tf_mlperf.bert import squad_predictions

MODEL_NAME = "bert"                      # the model's name in mlperf.conf / user.conf
SCENARIOS = ("SingleStream", "Server", "Offline")     # the inference rules' scenarios for bert
EXPORT_METADATA = os.path.join("assets.extra", "tf_mlperf_export.json")
OUTPUT_NAME = "logits"


def export_parameters(model_dir: str) -> dict:
    """max_seq_length, doc_stride, max_query_length recorded by tf-mlperf-export-bert (defaults: the reference's)."""
    params = {"max_seq_length": squad.MAX_SEQ_LENGTH, "doc_stride": squad.DOC_STRIDE,
              "max_query_length": squad.MAX_QUERY_LENGTH}
    path = os.path.join(model_dir, EXPORT_METADATA)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(path, f"cannot be read ({e}): export the model again with tf-mlperf-export-bert") \
                from None
        if recorded.get("benchmark", "bert") != "bert":
            raise UserError(model_dir, f"a {recorded.get('benchmark', 'resnet50')} SavedModel, not bert: pass "
                            "--benchmark for the model, or a model from tf-mlperf-export-bert")
        params.update({k: int(recorded[k]) for k in params if k in recorded})
    return params


class SquadFeatures:
    """The QSL's data: the features of a SQuAD JSON, all in memory."""

    def __init__(self, squad_json: str, vocab_file: str, max_seq_length: int, doc_stride: int,
                 max_query_length: int):
        self.squad_json, self.max_seq_length = squad_json, max_seq_length
        self.tokenizer = squad.Tokenizer(vocab_file)
        self.examples = squad.read_examples(squad_json, is_training=False)
        for example in self.examples:
            if not example.answers:       # checked now: the accuracy needs them after the run
                raise UserError(f"{squad_json}: question {example.qas_id!r}", "has no answers to score against: "
                                "pass the dev set with its answers (dev-v1.1.json)")
        self.features = squad.convert_examples_to_features(self.examples, self.tokenizer, max_seq_length, doc_stride,
                                                           max_query_length, is_training=False, source=squad_json)
        self.arrays = {name: np.array([getattr(f, name) for f in self.features], np.int32)
                       for name in ("input_ids", "input_mask", "segment_ids")}

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices) -> dict[str, np.ndarray]:
        return {name: array[list(indices)] for name, array in self.arrays.items()}

    def answers(self, results) -> dict[str, str]:
        return squad_predictions.predictions(self.examples, self.features, results, self.tokenizer)

    def scores(self, results) -> dict:
        return squad_predictions.evaluate(self.examples, self.answers(results), self.squad_json)


def load_saved_model(path: str, max_seq_length: int):
    """predict: {input_ids, input_mask, segment_ids} int32 [n, S] -> logits float32 [n, S, 2], of a bert
    SavedModel (tf-mlperf-export-bert) whose S is the features' length."""
    import tensorflow as tf
    try:
        serve = tf.saved_model.load(path).signatures.get("serving_default")
    except Exception as e:   # pylint: disable=broad-except  (TF raises several kinds for a damaged model)
        raise UserError(path, f"cannot load the SavedModel ({str(e).strip().splitlines()[0][:300]}): "
                        "export it again with tf-mlperf-export-bert") from e
    inputs = serve.structured_input_signature[1] if serve is not None else {}
    if serve is None or set(inputs) != {"input_ids", "input_mask", "segment_ids"} \
            or OUTPUT_NAME not in serve.structured_outputs:
        raise UserError(path, "not a bert SavedModel (serving_default with input_ids, input_mask, segment_ids "
                        f"-> {OUTPUT_NAME!r}): export it with tf-mlperf-export-bert")
    length = inputs["input_ids"].shape[1]
    if length is not None and length != max_seq_length:
        raise UserError(path, f"takes sequences of {length} tokens but the features have {max_seq_length}: "
                        "export the model with --max_seq_length matching its assets.extra record")

    def predict(batch: dict[str, np.ndarray]) -> np.ndarray:
        return serve(**{k: tf.constant(v) for k, v in batch.items()})[OUTPUT_NAME].numpy()
    return predict


class SquadWorkload:
    """What tf-mlperf-infer --benchmark=bert runs: the QSL's features, the SUT's answer per sample, the accuracy."""
    model_name = MODEL_NAME

    def __init__(self, model: str, squad_json: str, vocab_file: str | None):
        from tf_mlperf.base import samples
        self.params = export_parameters(model)
        self.data = SquadFeatures(squad_json, vocab_file or str(samples.bert_vocab()), **self.params)
        self.count = self.performance_sample_count = len(self.data)
        self.predict = None

    def load_model(self, path: str) -> None:
        self.predict = load_saved_model(path, self.params["max_seq_length"])

    def load(self, indices) -> None:       # every feature is in memory already (as the reference)
        pass

    def unload(self, indices) -> None:
        pass

    def warm_up(self, max_batchsize: int) -> None:
        for size in {1, min(max_batchsize, self.count)}:
            self.predict(self.data.batch([0] * size))

    def respond(self, indices) -> np.ndarray:
        """One row per sample: its logits [S, 2] as float32, start and end interleaved (tf_SUT.py's bytes)."""
        logits = np.asarray(self.predict(self.data.batch(indices)), np.float32)
        return np.ascontiguousarray(logits.reshape(len(indices), -1))

    def accuracy(self, entries) -> str:
        results = squad_predictions.results_from_accuracy_log(entries, self.data.features, "float32",
                                                              self.params["max_seq_length"])
        return squad_predictions.format_result(self.data.scores(results))

    def close(self) -> None:
        pass
