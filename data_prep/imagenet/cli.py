"""tf-mlperf-prep-imagenet: raw ILSVRC2012 download -> TFRecord shards (`convert`), and `verify`."""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter would bury our messages

from data_prep.imagenet import convert as convert_lib
from data_prep.imagenet import synsets as synsets_lib
from data_prep.imagenet import verify as verify_lib
from data_prep.imagenet import writer
from data_prep.imagenet.images import CHECKS
from tf_mlperf.base.errors import UserError, run_cli, warn

PROG = "tf-mlperf-prep-imagenet"


def _splits(text):
    splits = [s.strip() for s in text.split(",") if s.strip()]
    unknown = set(splits) - set(convert_lib.SPLITS)
    if not splits or unknown:
        raise argparse.ArgumentTypeError(f"splits are train and/or validation, got {text!r}")
    return splits


def _add_convert_parser(subparsers):
    p = subparsers.add_parser("convert", help="convert raw ImageNet to TFRecord shards (resumable)",
                              description="Convert the ILSVRC2012 download to TFRecord shards plus a "
                              "manifest per split. Rerunning the same command resumes.")
    p.add_argument("--output_dir", required=True, help="folder for the shards and <split>-manifest.json")
    p.add_argument("--raw_dir", help="folder holding the download; the inputs below are looked up there by "
                   "their usual names (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, "
                   "ILSVRC2012_devkit_t12.tar.gz / LOC_val_solution.csv / synset_labels.txt, "
                   "Kaggle ILSVRC/Data/CLS-LOC/{train,val}, train/, val/; with --with_bboxes also "
                   "ILSVRC2012_bbox_train_v2.tar.gz or Kaggle ILSVRC/Annotations/CLS-LOC/train)")
    p.add_argument("--train", help="ILSVRC2012_img_train.tar, or an extracted train folder "
                   "(nXXXXXXXX/*.JPEG or nXXXXXXXX.tar inside); overrides --raw_dir")
    p.add_argument("--validation", help="ILSVRC2012_img_val.tar, or an extracted val folder (flat, or "
                   "nXXXXXXXX/ class folders); overrides --raw_dir")
    p.add_argument("--val_labels", help="validation labels: devkit ILSVRC2012_devkit_t12.tar.gz, "
                   "synset_labels.txt or Kaggle LOC_val_solution.csv (recognised by content)")
    p.add_argument("--with_bboxes", action="store_true", help="add training bounding boxes "
                   "(image/object/bbox/*) from --bboxes or the ones found under --raw_dir; the train pipeline "
                   "then samples crops against them. Default: none, as the MLPerf reference's records")
    p.add_argument("--bboxes", action="append", help="bounding boxes, PASCAL VOC xml: "
                   "ILSVRC2012_bbox_train_v2.tar.gz or a folder of .xml; repeatable; implies --with_bboxes")
    p.add_argument("--expect", choices=convert_lib.EXPECT, default="subset",
                   help="full = refuse to convert unless every split is the full ImageNet (1000 classes, "
                   "1,281,167 train / 50,000 validation images); subset = convert what is there, with a "
                   "warning per empty class folder and for missing classes (default)")
    p.add_argument("--splits", type=_splits, default=list(convert_lib.SPLITS),
                   help="comma-separated splits to write (default: train,validation)")
    p.add_argument("--train_shards", type=int, default=1024, help="number of train shards (default 1024)")
    p.add_argument("--validation_shards", type=int, default=128,
                   help="number of validation shards (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train shuffle (default 0)")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes writing shards in parallel (default: number of CPUs)")
    p.add_argument("--check", choices=CHECKS, default="header",
                   help="check of each RGB JPEG kept as is: header = parse the headers and require the "
                   "end-of-image marker (catches truncated downloads; default), draft = also decode at 1/8 scale, "
                   "full = full decode")
    p.add_argument("--skip_corrupt", action="store_true", help="skip undecodable images and list them in "
                   "the manifest instead of stopping with an error")
    p.add_argument("--overwrite", action="store_true", help="replace a split converted earlier from other "
                   "inputs or flags, and delete shard files of the split this conversion does not write "
                   "(default: refuse both)")
    p.add_argument("--synsets", help="sorted 1000-wnid list (default: the copy shipped with this package)")
    p.add_argument("--synset_names", help="'wnid<TAB>names' file for image/class/text (default: shipped copy)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _add_verify_parser(subparsers):
    p = subparsers.add_parser("verify", help="check converted shards against their manifest",
                              description="Check manifests, shard sha256, record counts, labels in "
                              "1..1000, and that sampled records decode with tf.io.decode_and_crop_jpeg.")
    p.add_argument("--output_dir", required=True, help="folder written by convert")
    p.add_argument("--splits", type=_splits, default=list(convert_lib.SPLITS),
                   help="comma-separated splits to check (default: train,validation)")
    p.add_argument("--sample", type=int, default=10,
                   help="records decoded per shard, chosen at random (0 = all; default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed choosing the sampled records")
    p.add_argument("--expect", choices=("full", "manifest"), default="full",
                   help="full = require the full ImageNet counts (1,281,167 / 50,000); manifest = accept "
                   "the counts the manifest lists (a subset such as the embedded sample)")


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_convert_parser(subparsers)
    _add_verify_parser(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--verbose", action="store_true",
                               help="print the full traceback of an error (default: one line)")
    return parser


def run_convert(args):
    if args.raw_dir and not os.path.isdir(args.raw_dir):
        raise UserError(args.raw_dir, "--raw_dir is not a folder")
    inputs = convert_lib.discover(args.raw_dir) if args.raw_dir else {}
    inputs = {k: v for k, v in inputs.items() if v}
    for key in ("train", "validation", "val_labels"):
        if getattr(args, key):
            inputs[key] = getattr(args, key)
    found_bboxes = inputs.pop("bboxes", None)
    if args.bboxes:
        inputs["bboxes"] = args.bboxes
    elif args.with_bboxes:
        if not found_bboxes:
            raise UserError(args.raw_dir or "--with_bboxes", "no bounding boxes given or found: pass --bboxes "
                                                             "ILSVRC2012_bbox_train_v2.tar.gz (or a folder of .xml)")
        inputs["bboxes"] = [found_bboxes]
    else:
        inputs["bboxes"] = []
        if found_bboxes and "train" in args.splits:
            warn(f"{found_bboxes}: bounding boxes not added (the MLPerf reference's records have none); "
                 "pass --with_bboxes to add them")
    synsets = synsets_lib.load_synsets(args.synsets, args.synset_names)
    convert_lib.check_output_dir(args.output_dir, inputs)
    shards = {"train": args.train_shards, "validation": args.validation_shards}
    plans = convert_lib.plan_all(inputs, synsets, args.output_dir, args.splits, shards, args.seed,
                                 args.check, args.skip_corrupt, args.expect)
    for plan in plans:
        manifest = writer.convert_split(plan, args.num_workers, args.overwrite, not args.no_progress)
        print(f"{plan.split}: {manifest['num_records']} records in {manifest['num_shards']} shards, "
              f"{len(manifest['skipped_corrupt'])} skipped -> {writer.manifest_path(args.output_dir, plan.split)}")


def run_verify(args):
    failed = []
    for split in args.splits:
        total, problems = verify_lib.verify_split(args.output_dir, split, args.sample, args.expect, args.seed)
        print(f"{split}: {total} records, {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems[:20]:
            print(f"  {problem}")
        failed += problems
    if failed:
        raise UserError(args.output_dir, f"verify found {len(failed)} problem(s), first: {failed[0]}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    work = {"convert": run_convert, "verify": run_verify}[args.command]
    return run_cli(PROG, lambda: work(args), args.verbose,
                   interrupted=f"{PROG}: interrupted; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
