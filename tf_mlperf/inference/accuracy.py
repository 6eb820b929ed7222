"""Top-1 from LoadGen's mlperf_log_accuracy.json, as the inference reference's tools/accuracy-imagenet.py.

    python -m tf_mlperf.inference.accuracy --mlperf_accuracy_file out/mlperf_log_accuracy.json \
        --data_dir /data/imagenet [--count N] [--dtype float32] [--verbose]

Each entry's `qsl_idx` is a sample index of the QSL (the validation records in order, see dataset.py) and
its `data` the hex bytes the SUT returned: one number of --dtype (float32, as the reference runner writes
it), the predicted class 0..999. Duplicates of a sample count once. The expected labels are read from the
same validation records (the reference reads val_map.txt, which lists the same images in the same order).
Prints the reference's line: `accuracy=75.600%, good=37800, total=50000`.

    python -m tf_mlperf.inference.accuracy --data_dir /data/imagenet --write_val_map val_map.txt

writes the reference's val_map.txt for the same records (`ILSVRC2012_val_00000001.JPEG 65`: one line per QSL
sample, in QSL order, the class 0..999), so that the official tools/accuracy-imagenet.py reads our runs'
accuracy logs: `accuracy-imagenet.py --mlperf-accuracy-file mlperf_log_accuracy.json --imagenet-val-file
val_map.txt` prints the line above.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from tf_mlperf.base.errors import UserError, run_cli


DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64}


def read_accuracy_log(path: str) -> list[dict]:
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(path, f"not a complete LoadGen accuracy log ({e}): was the run interrupted? "
                        "Rerun it in accuracy mode") from None
    if not isinstance(entries, list) or any("qsl_idx" not in e or "data" not in e for e in entries):
        raise UserError(path, "not a LoadGen accuracy log (a list of {seq_id, qsl_idx, data})")
    return entries


def top1(entries: list[dict], labels: np.ndarray, dtype: str = "float32", source: str = "accuracy log",
         verbose: bool = False) -> tuple[int, int]:
    """(good, total) over the distinct samples of the log."""
    seen, good = set(), 0
    for entry in entries:
        index = entry["qsl_idx"]
        if index in seen:
            continue
        seen.add(index)
        if not 0 <= index < len(labels):
            raise UserError(source, f"qsl_idx {index} is outside the {len(labels)} validation images: "
                            "is --data_dir (and --count) the one of the run?")
        found = int(np.frombuffer(bytes.fromhex(entry["data"]), DTYPES[dtype])[0])
        if found == labels[index]:
            good += 1
        elif verbose:
            print(f"sample {index}: expected {labels[index]}, found {found}")
    return good, len(seen)


def format_result(good: int, total: int) -> str:
    return f"accuracy={100.0 * good / max(total, 1):.3f}%, good={good}, total={total}"


def write_val_map(records, path: str) -> None:
    """The reference's val_map.txt of `records` (a dataset.ValidationRecords): `file label` per QSL sample."""
    with open(path, "w") as f:
        for i in range(len(records)):
            f.write(f"{records.filename(i)} {records.jpeg_and_label(i)[1]}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf_mlperf.inference.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlperf_accuracy_file", help="LoadGen's mlperf_log_accuracy.json")
    parser.add_argument("--data_dir", required=True, help="the ImageNet TFRecords folder of the run")
    parser.add_argument("--count", type=int, default=0, help="the run's --count (0: all validation images)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="type of the logged class")
    parser.add_argument("--write_val_map", metavar="PATH", help="write the reference's val_map.txt of the records "
                        "to PATH (instead of computing top-1)")
    parser.add_argument("--verbose", action="store_true", help="list the misses; tracebacks on errors")
    args = parser.parse_args(argv)
    if not args.mlperf_accuracy_file and not args.write_val_map:
        parser.error("--mlperf_accuracy_file or --write_val_map is required")

    def work():
        from tf_mlperf.inference.dataset import ValidationRecords
        entries = None if args.write_val_map else read_accuracy_log(args.mlperf_accuracy_file)
        records = ValidationRecords(args.data_dir, args.count)
        try:
            if args.write_val_map:
                return write_val_map(records, args.write_val_map)
            labels = records.labels()
        finally:
            records.close()
        print(format_result(*top1(entries, labels, args.dtype, args.mlperf_accuracy_file, args.verbose)))
    return run_cli("tf_mlperf.inference.accuracy", work, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
