"""F1 and exact match from LoadGen's mlperf_log_accuracy.json, as the inference reference's
language/bert/accuracy-squad.py (+ evaluate-v1.1.py).

    python -m tf_mlperf.inference.accuracy_squad --mlperf_accuracy_file out/mlperf_log_accuracy.json \
        --squad_json dev-v1.1.json [--model /models/bert] [--vocab_file vocab.txt] [--out_file predictions.json]

Each entry's `qsl_idx` is a feature of the SQuAD JSON (tf_mlperf/bert/squad.py with the parameters of --model's
export, else 384 / 128 / 64) and its `data` the feature's logits [S, 2] (float32, start and end interleaved);
an answer per question as accuracy-squad.py (n-best 20, max answer length 30, original-text recovery with the
WordPiece tokenizer), scored with evaluate-v1.1.py's normalisation over every question of the file. Prints
evaluate-v1.1.py's line, e.g. {"exact_match": 83.6, "f1": 90.874}. The MLPerf targets: F1 >= 89.965 (bert-99,
99 % of the reference's 90.874) or >= 90.783 (bert-99.9).
"""
from __future__ import annotations

import argparse
import json
import sys

from tf_mlperf.base.errors import run_cli
from tf_mlperf.bert import squad

from tf_mlperf.bert import squad_predictions
from tf_mlperf.inference import accuracy as accuracy_lib
from tf_mlperf.inference.squad_dataset import SquadFeatures, export_parameters


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf_mlperf.inference.accuracy_squad", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlperf_accuracy_file", required=True, help="LoadGen's mlperf_log_accuracy.json")
    parser.add_argument("--squad_json", required=True, help="the SQuAD v1.1 JSON of the run (dev-v1.1.json)")
    parser.add_argument("--model", default="", help="the run's SavedModel folder (for its feature parameters)")
    parser.add_argument("--vocab_file", help="the BERT uncased vocab.txt (default: the packaged MLPerf vocab)")
    parser.add_argument("--out_file", help="also write the answers (qas_id -> text) here, as the reference")
    parser.add_argument("--output_dtype", default="float32", choices=("float16", "float32", "float64"),
                        help="type of the logged logits")
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    args = parser.parse_args(argv)

    def work():
        from tf_mlperf.base import samples
        entries = accuracy_lib.read_accuracy_log(args.mlperf_accuracy_file)
        params = export_parameters(args.model) if args.model else {}
        data = SquadFeatures(args.squad_json, args.vocab_file or str(samples.bert_vocab()),
                             **{"max_seq_length": squad.MAX_SEQ_LENGTH, "doc_stride": squad.DOC_STRIDE,
                                "max_query_length": squad.MAX_QUERY_LENGTH, **params})
        results = squad_predictions.results_from_accuracy_log(entries, data.features, args.output_dtype,
                                                              data.max_seq_length, args.mlperf_accuracy_file)
        answers = data.answers(results)
        if args.out_file:
            with open(args.out_file, "w", encoding="utf-8") as f:
                f.write(json.dumps(answers, indent=4, ensure_ascii=False) + "\n")
        print(squad_predictions.format_result(squad_predictions.evaluate(data.examples, answers, args.squad_json)))
    return run_cli("tf_mlperf.inference.accuracy_squad", work, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
