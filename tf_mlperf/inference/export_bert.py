"""tf-mlperf-export-bert: a BERT SQuAD checkpoint -> a SavedModel for MLPerf Inference (bert).

    tf-mlperf-export-bert --checkpoint=/runs/squad1/checkpoints/ckpt-7300 --export_dir=/models/bert
    tf-mlperf-export-bert --checkpoint=.../bert_tf_v1_1_large_fp32_384_v2/model.ckpt-5474 --export_dir=/models/ref

The checkpoint is one of our fine-tuning runs (tf-mlperf-squad) or the inference reference's TF1 checkpoint
(run_squad.py's names, read through the reference name map); it must hold the SQuAD head (cls/squad), else it is
refused in one line naming it. --bert_config_file (default: --bert_preset large, the reference's BERT-large)
gives the model's shape.

Signature `serving_default`, as the reference TF model (language/bert/tf_freeze_bert.py, fed by tf_SUT.py):
  input_ids, input_mask, segment_ids   int32 [N, S]  (S = --max_seq_length, 384 for the benchmark)
  logits                               float32 [N, S, 2]: start logits [..., 0], end logits [..., 1]
assets.extra/tf_mlperf_export.json records the checkpoint and the feature parameters (max_seq_length,
doc_stride, max_query_length) that tf-mlperf-infer --benchmark=bert uses to build the SQuAD features.
The SavedModel is written to a temporary folder and renamed into place when complete.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import squad
from tf_mlperf.base.errors import UserError, run_cli

OUTPUT_NAME = "logits"
BENCHMARK = "bert"
METADATA = os.path.join("assets.extra", "tf_mlperf_export.json")


def load_model(config, checkpoint: str, max_seq_length: int):
    from tf_mlperf.bert import squad_model
    model = squad_model.build_squad_model(config, max_seq_length)
    try:
        squad_model.load_checkpoint(model, checkpoint, require_head=True, flag="--checkpoint")
    except UserError as e:
        raise UserError(e.where, e.problem) from e
    return model


def serving_function(model, max_seq_length: int):
    import tensorflow as tf
    from tf_mlperf.bert.squad_model import INPUT_NAMES

    @tf.function(input_signature=[tf.TensorSpec([None, max_seq_length], tf.int32, name=name) for name in INPUT_NAMES])
    def serve(input_ids, input_mask, segment_ids):
        logits = model({"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}, training=False)
        return {OUTPUT_NAME: tf.cast(logits, tf.float32)}

    return serve


def export(config, checkpoint: str, export_dir: str, max_seq_length: int = squad.MAX_SEQ_LENGTH,
           doc_stride: int = squad.DOC_STRIDE, max_query_length: int = squad.MAX_QUERY_LENGTH,
           overwrite: bool = False) -> str:
    import tensorflow as tf
    if os.path.exists(export_dir) and not overwrite:
        raise UserError(export_dir, "already exists: choose another --export_dir or pass --overwrite")
    if not 0 < max_seq_length <= config.max_position_embeddings:
        raise UserError(f"--max_seq_length={max_seq_length}", f"must be 1..{config.max_position_embeddings} "
                        "(the model's max_position_embeddings)")
    model = load_model(config, checkpoint, max_seq_length)
    module = tf.Module()
    module.model = model
    module.serve = serving_function(model, max_seq_length)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f".{os.path.basename(export_dir)}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tf.saved_model.save(module, partial, signatures={"serving_default": module.serve})
        os.makedirs(os.path.join(partial, os.path.dirname(METADATA)), exist_ok=True)
        with open(os.path.join(partial, METADATA), "w") as f:
            json.dump({"benchmark": BENCHMARK, "checkpoint": os.path.abspath(checkpoint),
                       "bert_config": config.to_dict(), "max_seq_length": max_seq_length, "doc_stride": doc_stride,
                       "max_query_length": max_query_length, "inputs": ["input_ids", "input_mask", "segment_ids"],
                       "output": OUTPUT_NAME}, f, indent=1)
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.rename(partial, export_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return export_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tf-mlperf-export-bert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint prefix (ours or the reference's TF1)")
    parser.add_argument("--export_dir", required=True, help="folder to write the SavedModel to")
    parser.add_argument("--bert_config_file", help="the model's bert_config.json (default: --bert_preset)")
    parser.add_argument("--bert_preset", default="large", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--max_seq_length", type=int, default=squad.MAX_SEQ_LENGTH, help="feature length (384)")
    parser.add_argument("--doc_stride", type=int, default=squad.DOC_STRIDE, help="recorded for the harness (128)")
    parser.add_argument("--max_query_length", type=int, default=squad.MAX_QUERY_LENGTH,
                        help="recorded for the harness (64)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --export_dir")
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    args = parser.parse_args(argv)

    def work():
        try:
            config = config_lib.load(args.bert_config_file, args.bert_preset)
        except (OSError, ValueError) as e:
            raise UserError(f"--bert_config_file={args.bert_config_file}", f"cannot be read ({e})") from None
        out = export(config, args.checkpoint, args.export_dir, args.max_seq_length, args.doc_stride,
                     args.max_query_length, args.overwrite)
        print(f"exported {args.checkpoint} to {out}")
    return run_cli("tf-mlperf-export-bert", work, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
