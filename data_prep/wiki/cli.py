"""tf-mlperf-prep-wiki: Wikipedia dump -> MLPerf BERT text parts, eval set and TFRecords.

    tf-mlperf-prep-wiki all --input enwiki-20200101-pages-articles-multistream.xml.bz2 \\
        --vocab_file vocab.txt --output_dir /data/bert_wiki --num_workers 32

Stages (each can run alone; `all` runs them in order) and where they write under --output_dir:
  extract    dump .bz2 -> extracted/XX/wiki_NN            (wikiextractor, dates pinned to 2020-01-01)
  clean      -> cleaned/XX/wiki_NN                        (cleanup_file.py + clean.sh)
  sentences  -> sentences/XX/wiki_NN                      (do_sentence_segmentation.py, offline punkt)
  split      -> train/..., heldout/..., results/eval.txt, results/eval.md5   (seperate_test_set.py)
  gather     -> results/part-NNNNN-of-00500               (do_gather.py)
  records    -> tfrecords/part-..., tfrecords/eval_intermediate   (create_pretraining_data.py)
  pick-eval  -> tfrecords/eval_10k                        (pick_eval_samples.py)
Every output is written under a temp name and renamed when complete; a rerun skips finished outputs.
"""
from __future__ import annotations

import argparse
import functools
import glob
import os
import pathlib
import shutil
import sys

from data_prep.fileio import TMP_MARK, run_parallel, write_text_atomic
from data_prep.wiki import clean, extract, gather, pretraining, records, sentences, split
from tf_mlperf.base import tokenization
from data_prep.wiki.fileio import wiki_files
from tf_mlperf.base.errors import UserError, run_cli, warn

STAGES = ["extract", "clean", "sentences", "split", "gather", "records", "pick-eval"]


class Layout:
    """Where each stage reads and writes."""

    def __init__(self, args):
        self.out = pathlib.Path(args.output_dir)
        self.extracted = pathlib.Path(args.extracted_dir) if args.extracted_dir else self.out / "extracted"
        self.cleaned, self.sentences = self.out / "cleaned", self.out / "sentences"
        self.train, self.heldout = self.out / "train", self.out / "heldout"
        self.results, self.tfrecords = self.out / "results", self.out / "tfrecords"
        self.eval_txt, self.eval_md5 = self.results / "eval.txt", self.results / "eval.md5"
        self.eval_intermediate = self.tfrecords / "eval_intermediate"
        self.eval_picked = self.tfrecords / "eval_10k"

    def files(self) -> list[str]:
        return wiki_files(self.extracted)


def remove_stale_temps(folder: pathlib.Path) -> None:
    """Temp files and folders (extract's) of a killed run are never renamed; drop them so the output folder
    is clean."""
    if folder.is_dir():
        for tmp in list(folder.rglob(f".*{TMP_MARK}*")):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def require_inputs(paths, previous_stage: str) -> None:
    missing = [p for p in paths if not pathlib.Path(p).exists()]
    if missing:
        raise UserError(f"{missing[0]}: missing ({len(missing)} inputs); run the {previous_stage} stage first")


def _per_file(fn, src_dir, dst_dir, rel):
    fn(src_dir / rel, dst_dir / rel)


def _clean_one(src: pathlib.Path, dst: pathlib.Path) -> None:
    write_text_atomic(dst, clean.clean_file(src))


def map_files(args, layout, name, fn, src_dir, dst_dir, previous_stage) -> None:
    remove_stale_temps(dst_dir)
    todo = [rel for rel in layout.files() if not (dst_dir / rel).exists()]
    require_inputs([src_dir / rel for rel in todo], previous_stage)
    run_parallel(functools.partial(_per_file, fn, src_dir, dst_dir), todo, args.num_workers, name)


def stage_extract(args, layout):
    remove_stale_temps(layout.out)
    if args.extracted_dir or layout.extracted.exists():
        return
    if not args.input:
        raise UserError("extract needs --input (the pages-articles .xml.bz2 dump)")
    extract.extract_dump(pathlib.Path(args.input), layout.extracted, args.num_workers,
                         index=pathlib.Path(args.multistream_index) if args.multistream_index else None)


def stage_clean(args, layout):
    map_files(args, layout, "clean", _clean_one, layout.extracted, layout.cleaned, "extract")


def stage_sentences(args, layout):
    punkt_root = sentences.punkt_data_root(args.punkt_cache_dir)
    segment = functools.partial(_segment_one, punkt_root)
    map_files(args, layout, "sentences", segment, layout.cleaned, layout.sentences, "clean")


def _segment_one(punkt_root, src, dst):
    sentences.segment_file(src, dst, punkt_root)


def _split_one(layout, num_files, args, job):
    file_id, rel = job
    split.split_file(layout.sentences / rel, layout.train / rel, layout.heldout / rel, file_id, num_files,
                     args.num_test_articles, args.seed)


def stage_split(args, layout):
    for folder in (layout.train, layout.heldout, layout.results):
        remove_stale_temps(folder)
    files = layout.files()
    todo = [(i, rel) for i, rel in enumerate(files) if not (layout.train / rel).exists()]
    require_inputs([layout.sentences / rel for _, rel in todo], "sentences")
    run_parallel(functools.partial(_split_one, layout, len(files), args), todo, args.num_workers, "split")
    if not layout.eval_txt.exists():
        count = split.write_eval_set([layout.heldout / rel for rel in files], layout.eval_txt, layout.eval_md5)
        print(f"eval set: {count} articles -> {layout.eval_txt}", file=sys.stderr)
    if args.eval_md5:
        split.check_eval_md5(layout.eval_md5, pathlib.Path(args.eval_md5))
        print(f"eval set matches {args.eval_md5}", file=sys.stderr)


def _gather_one(job):
    sources, dst = job
    gather.write_part(sources, dst)


def stage_gather(args, layout):
    remove_stale_temps(layout.results)
    files = layout.files()
    sizes = [(layout.extracted / rel).stat().st_size for rel in files]
    plan = gather.plan_parts(sizes, args.block_size)
    jobs = [([layout.train / files[i] for i in members], layout.results / gather.part_name(n, args.num_outputs))
            for n, members in enumerate(plan)]
    todo = [job for job in jobs if not job[1].exists()]
    require_inputs([src for sources, _ in todo for src in sources], "split")
    run_parallel(_gather_one, todo, args.num_workers, "gather")


def pretraining_params(args) -> pretraining.PretrainingParams:
    return pretraining.PretrainingParams(
        max_seq_length=args.max_seq_length, max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob, short_seq_prob=args.short_seq_prob, dupe_factor=args.dupe_factor,
        random_seed=args.random_seed, do_lower_case=args.do_lower_case)


def _records_one(vocab_file, params, job):
    src, dst = job
    return records.make_records(src, dst, vocab_file, params)


def record_jobs(args, layout) -> list[tuple[pathlib.Path, pathlib.Path]]:
    if args.text_files:
        sources = sorted({pathlib.Path(p) for pattern in args.text_files.split(",") for p in glob.glob(pattern)})
        if not sources:
            raise UserError(f"{args.text_files}: no text files match")
        return [(src, layout.tfrecords / src.name) for src in sources]
    parts = sorted(layout.results.glob("part-*-of-*"))
    if not parts:
        raise UserError(f"{layout.results}: no part-* files (run the gather stage first)")
    return [(part, layout.tfrecords / part.name) for part in parts] + [(layout.eval_txt, layout.eval_intermediate)]


def stage_records(args, layout):
    vocab_file = require_vocab(args)
    remove_stale_temps(layout.tfrecords)
    todo = [job for job in record_jobs(args, layout) if not job[1].exists()]
    require_inputs([src for src, _ in todo], "split")
    # Largest first, so one big part does not finish last on its own.
    todo.sort(key=lambda job: -job[0].stat().st_size)
    if todo:
        check_unk_rate(todo[0][0], vocab_file, args)
    run_parallel(functools.partial(_records_one, vocab_file, pretraining_params(args)), todo, args.num_workers,
                 "records")


def stage_pick_eval(args, layout):
    remove_stale_temps(layout.tfrecords)
    if not layout.eval_picked.exists():
        require_inputs([layout.eval_intermediate], "records")
        records.pick_eval(layout.eval_intermediate, layout.eval_picked, args.num_eval_examples)


UNK_SAMPLE_LINES = 5000   # lines of the first part tokenized before the records stage starts
UNK_WARN_RATE = 0.01      # the MLPerf vocab gives 0.001 % [UNK] on the MLPerf wiki sample (tests/data)


def check_unk_rate(text_file: pathlib.Path, vocab_file: str, args) -> None:
    """Tokenize the start of the first part: a wrong vocab or language shows as many [UNK] tokens."""
    tokenizer = tokenization.FullTokenizer(tokenization.load_vocab(vocab_file), args.do_lower_case)
    with open(text_file, encoding="utf-8", errors="replace") as f:
        lines = [line for line, _ in zip(f, range(UNK_SAMPLE_LINES))]
    rate, count = tokenization.unk_rate(tokenizer, lines)
    what = f"{text_file}: {rate:.1%} of the first {count} tokens are [UNK] with the vocab {vocab_file}"
    if rate > args.max_unk_rate:
        raise UserError(f"{what} (over --max_unk_rate {args.max_unk_rate:g}): wrong vocab or "
                        "--do_lower_case? Use the MLPerf uncased vocab.txt")
    if rate > UNK_WARN_RATE:
        warn(f"{what}; expected well under {UNK_WARN_RATE:.0%} with the MLPerf vocab")


def require_vocab(args) -> str:
    if not args.vocab_file:
        raise UserError("--vocab_file is required: pass the MLPerf BERT vocab.txt (30,522 lines, uncased, md5 "
                        f"{tokenization.MLPERF_VOCAB_MD5})")
    tokenization.check_bert_vocab(args.vocab_file, args.do_lower_case)
    message = tokenization.vocab_warning(args.vocab_file, args.do_lower_case)
    if message:
        warn(message)
    return args.vocab_file


STAGE_FUNCTIONS = {"extract": stage_extract, "clean": stage_clean, "sentences": stage_sentences,
                   "split": stage_split, "gather": stage_gather, "records": stage_records,
                   "pick-eval": stage_pick_eval}


def run(args) -> None:
    layout = Layout(args)
    if args.stage == "all":
        require_vocab(args)  # fail before hours of extraction, not after
        stages = STAGES
    else:
        stages = [args.stage]
    for name in stages:
        print(f"== {name}", file=sys.stderr)
        STAGE_FUNCTIONS[name](args, layout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tf-mlperf-prep-wiki", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES + ["all"])
    parser.add_argument("--output_dir", required=True, help="work and output folder (see the stage list)")
    parser.add_argument("--input", help="the pages-articles .xml.bz2 dump (extract, all)")
    parser.add_argument("--multistream_index", help="the dump's ...-multistream-index.txt.bz2 (optional): "
                        "checks before extraction that the dump holds every stream the index lists")
    parser.add_argument("--extracted_dir", help="use this WikiExtractor output instead of extracting")
    parser.add_argument("--vocab_file", help="BERT uncased vocab.txt, 30,522 lines (records, all)")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verbose", action="store_true", help="print the full traceback of an error")
    parser.add_argument("--punkt_cache_dir", type=pathlib.Path,
                        help="where to build punkt_tab if NLTK_DATA lacks it (default ~/.cache/tf_mlperf)")
    group = parser.add_argument_group("split / gather / pick-eval")
    group.add_argument("--num_test_articles", type=int, default=10000, help="held-out articles (eval text)")
    group.add_argument("--seed", type=int, default=split.DEFAULT_SEED, help="split seed (file i: seed + 13*i)")
    group.add_argument("--eval_md5", help="reference eval.md5 to check the held-out eval text against")
    group.add_argument("--block_size", type=float, default=gather.DEFAULT_BLOCK_SIZE_MB,
                       help="MB of extracted text per part (26.92 gives the reference's 500 parts)")
    group.add_argument("--num_outputs", type=int, default=gather.DEFAULT_NUM_OUTPUTS, help="the -of-NNNNN in part names")
    group.add_argument("--num_eval_examples", type=int, default=records.DEFAULT_NUM_EVAL_EXAMPLES)
    group = parser.add_argument_group("records (create_pretraining_data flags, MLPerf values by default)")
    group.add_argument("--text_files", help="records only: comma-separated files/globs instead of the parts")
    group.add_argument("--max_unk_rate", type=float, default=0.05,
                       help="stop if more than this share of the first part's tokens are [UNK] (wrong vocab)")
    mlperf = pretraining.PretrainingParams()   # the defaults are the MLPerf values, defined there once
    group.add_argument("--max_seq_length", type=int, default=mlperf.max_seq_length)
    group.add_argument("--max_predictions_per_seq", type=int, default=mlperf.max_predictions_per_seq)
    group.add_argument("--masked_lm_prob", type=float, default=mlperf.masked_lm_prob)
    group.add_argument("--short_seq_prob", type=float, default=mlperf.short_seq_prob)
    group.add_argument("--dupe_factor", type=int, default=mlperf.dupe_factor)
    group.add_argument("--random_seed", type=int, default=mlperf.random_seed)
    group.add_argument("--do_lower_case", action=argparse.BooleanOptionalAction, default=mlperf.do_lower_case)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("tf-mlperf-prep-wiki", lambda: run(args), args.verbose,
                   interrupted="tf-mlperf-prep-wiki: interrupted; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
