"""Real (non-pad) tokens per second of the BERT train step, packed vs unpacked, on our own records, in one run.

BERT-large width (hidden 1024, 16 heads, intermediate 4096, the 30,522 vocab), few layers, seq 512, fp32.
The same sequences go through both layouts: every packed micro-batch (exactly --batch sequences in the
rows `--packed` would use) and the --batch unpacked rows holding the same sequences. Steps alternate
(unpacked, packed, unpacked, ...) so a loaded machine slows both alike; the ratio is what counts.

    python benchmarks/bench_bert_packing.py --records /tmp/wiki/tfrecords/sentences_wiki_00.txt \
        --batch 32 --layers 1 --steps 3
Without --records it writes them first from tests/data/bert_golden/sentences_wiki_00.txt with
tf-mlperf-prep-wiki (MLPerf parameters, the packaged vocab).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from tf_mlperf.base import samples
from tf_mlperf.bert import packing
from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import input_pipeline
from tf_mlperf.bert import model as model_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SEQ, PRED = 512, 76


def make_records(out: pathlib.Path) -> pathlib.Path:
    text = REPO / "tests" / "data" / "bert_golden" / "sentences_wiki_00.txt"
    subprocess.run([sys.executable, "-m", "data_prep.wiki.cli", "records", "--output_dir", str(out),
                    "--text_files", str(text), "--vocab_file", str(samples.bert_vocab())], check=True, cwd=REPO)
    return out / "tfrecords" / text.name


def read_examples(path: pathlib.Path) -> list[dict]:
    ds = tf.data.TFRecordDataset(str(path)).batch(256).map(input_pipeline._decoder(SEQ, PRED))  # pylint: disable=protected-access
    return [{k: v[i] for k, v in chunk.items()} for chunk in ds.as_numpy_iterator()
            for i in range(len(chunk["input_ids"]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", help="BERT TFRecords at seq 512 (default: written from the wiki_00 sample)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (both layouts)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per layout (after one warm-up each)")
    parser.add_argument("--max_per_row", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    path = pathlib.Path(args.records) if args.records else make_records(pathlib.Path(tempfile.mkdtemp()))
    examples = read_examples(path)
    lengths = np.array([int(ex["input_mask"].sum()) for ex in examples])
    rows = input_pipeline.packing.rows_needed(lengths, args.batch, SEQ, args.max_per_row,
                                              input_pipeline.AUTO_ROWS_SLACK)
    ceiling = len(lengths) / len(packing.first_fit_decreasing(lengths, SEQ, args.max_per_row))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(examples))            # the training stream is shuffled
    packed = list(packing.packed_batches((examples[i] for i in order), args.batch, rows, SEQ, args.max_per_row))
    need = args.steps + 1
    packed = packed[:need]
    # The unpacked batch of the same sequences, read back out of the packed rows.
    unpacked = []
    for batch in packed:
        seqs = []
        for start in batch["sequence_starts"]:
            row, offset = divmod(int(start), SEQ)
            n = int(np.count_nonzero(batch["sequence_ids"][row] == batch["sequence_ids"][row, offset]))
            seqs.append(batch["input_ids"][row, offset:offset + n])
        unpacked.append(_unpacked_like(batch, seqs))

    config = config_lib.BertConfig(num_hidden_layers=args.layers)
    model = model_lib.build_model(config, SEQ, PRED)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = model_lib.pretraining_loss(model(batch, training=True), batch)
        grads = tape.gradient(loss, model.trainable_variables)
        return loss, tf.add_n([tf.reduce_sum(tf.convert_to_tensor(g)) for g in grads])

    to_tf = lambda b: {k: tf.constant(v) for k, v in b.items()}
    times = {"unpacked": [], "packed": []}
    tokens = [int(b["input_mask"].sum()) for b in packed]
    for i in range(need):
        for name, batch in (("unpacked", unpacked[i]), ("packed", packed[i])):
            feed = to_tf(batch)
            start = time.perf_counter()
            float(step(feed)[0])
            if i:                                        # step 0 traces
                times[name].append(time.perf_counter() - start)
    rate = {k: sum(tokens[1:]) / sum(v) for k, v in times.items()}
    result = {"batch": args.batch, "rows": rows, "layers": args.layers, "hidden": config.hidden_size,
              "seq": SEQ, "steps": args.steps, "records": len(examples),
              "real_token_fraction": float(lengths.mean() / SEQ),
              "packing_factor_rows": args.batch / rows, "packing_factor_offline_ffd": ceiling,
              "real_tokens_per_s": rate, "speedup": rate["packed"] / rate["unpacked"],
              "step_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
              "cpu": tf.config.threading.get_intra_op_parallelism_threads()}
    print(json.dumps(result, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1))


def _unpacked_like(packed: dict, seqs: list[np.ndarray]) -> dict:
    """The unpacked batch of the packed batch's sequences, in its order (features as the records hold them)."""
    b = len(seqs)
    out = {k: np.zeros([b, SEQ], np.int32) for k in ("input_ids", "input_mask", "segment_ids")}
    positions = packed["masked_lm_positions"].copy()
    for j, (ids, start) in enumerate(zip(seqs, packed["sequence_starts"])):
        row, offset = divmod(int(start), SEQ)
        n = len(ids)
        out["input_ids"][j, :n] = ids
        out["input_mask"][j, :n] = 1
        out["segment_ids"][j, :n] = packed["segment_ids"][row, offset:offset + n]
        positions[j] -= start
    out["masked_lm_positions"] = np.where(packed["masked_lm_weights"] > 0, positions, 0).astype(np.int32)
    for k in ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels"):
        out[k] = packed[k]
    return out


if __name__ == "__main__":
    main()
