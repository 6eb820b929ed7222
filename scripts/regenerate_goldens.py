"""Regenerate (or check) every sha256 in tests/test_prep_wiki_text.py's REFERENCE_SHA256 from the MLPerf
reference scripts, run as the reference's process_wiki.sh runs them, on tests/data/wikipedia_extracted/wiki_00..03:

    python scripts/regenerate_goldens.py --reference_dir <mlcommons/training>/retired_benchmarks/bert/cleanup_scripts [--write]

  cleaned/wiki_NN    cleanup_file.py --output_suffix=.1, then clean.sh wiki_NN.1 wiki_NN.2    -> wiki_NN.2
  sentences/wiki_NN  do_sentence_segmentation.py --input_suffix=.2 --output_suffix=.3          -> wiki_NN.3
  train/wiki_NN      seperate_test_set.py --input_suffix=.3 --output_suffix=.4
                     --num_test_articles=20 --test_output=results/eval                         -> wiki_NN.4
  results/eval.txt, results/eval.md5   the same seperate_test_set.py call
  results/part-*     do_gather.py --input_suffix=.4 --block_size=1.5 --out_dir=results

The one deviation from process_wiki.sh: it pins nltk 3.4.5 and calls nltk.download('punkt'). Nothing is
downloaded here: nltk.download is a no-op and NLTK_DATA points at the punkt_tab English parameters that
data_prep/wiki/sentences.py builds offline (the parameters our `sentences` stage uses), so sent_tokenize
of the installed nltk runs the reference's segmentation loop with them.
Without --write it compares with the values in the test and exits 1 on any difference; with --write it
rewrites those values in place. tests/data/bert_golden has its own script (tests/data/regenerate_bert_golden.py).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
TEST_FILE = REPO / "tests" / "test_prep_wiki_text.py"
SAMPLE = REPO / "tests" / "data" / "wikipedia_extracted"
FILES = ["wiki_00", "wiki_01", "wiki_02", "wiki_03"]
SCRIPTS = ("cleanup_file.py", "clean.sh", "do_sentence_segmentation.py", "seperate_test_set.py", "do_gather.py")
# Runs a reference script as __main__ with nltk.download disabled (offline).
OFFLINE = "import nltk, runpy, sys; nltk.download = lambda *a, **k: True; sys.argv = sys.argv[1:]; " \
          "runpy.run_path(sys.argv[0], run_name='__main__')"


def run(cmd, **kwargs) -> None:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")


def reference_outputs(ref: pathlib.Path, work: pathlib.Path) -> dict[str, dict[str, str]]:
    from data_prep.wiki import sentences

    for name in FILES:
        shutil.copy(SAMPLE / name, work / name)
    data = str(work / "wiki_??")
    results = work / "results"
    results.mkdir()
    env = dict(os.environ, NLTK_DATA=sentences.punkt_data_root(work / "nltk_cache"))
    py = [sys.executable, "-c", OFFLINE]
    run(py + [ref / "cleanup_file.py", f"--data={data}", "--output_suffix=.1"], cwd=ref, env=env)
    for name in FILES:
        run(["bash", ref / "clean.sh", work / f"{name}.1", work / f"{name}.2"], cwd=ref, env=env)
    run(py + [ref / "do_sentence_segmentation.py", f"--data={data}", "--input_suffix=.2", "--output_suffix=.3",
              "--nworker=2"], cwd=ref, env=env)
    run(py + [ref / "seperate_test_set.py", f"--data={data}", "--input_suffix=.3", "--output_suffix=.4",
              "--num_test_articles=20", f"--test_output={results / 'eval'}"], cwd=ref, env=env)
    run(py + [ref / "do_gather.py", f"--data={data}", "--input_suffix=.4", "--block_size=1.5",
              f"--out_dir={results}"], cwd=ref, env=env)

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    out = {stage: {name: digest(work / f"{name}{suffix}") for name in FILES}
           for stage, suffix in (("cleaned", ".2"), ("sentences", ".3"), ("train", ".4"))}
    out["results"] = {p.name: digest(p) for p in sorted(results.iterdir())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference_dir", type=pathlib.Path, required=True,
                        help="mlcommons/training's retired_benchmarks/bert/cleanup_scripts")
    parser.add_argument("--write", action="store_true", help="rewrite the values in the test instead of comparing")
    args = parser.parse_args()
    ref = args.reference_dir.resolve()
    missing = [s for s in SCRIPTS if not (ref / s).is_file()]
    if missing:
        print(f"{ref}: no {', '.join(missing)} there; give --reference_dir "
              "<mlcommons/training>/retired_benchmarks/bert/cleanup_scripts", file=sys.stderr)
        return 2
    import test_prep_wiki_text as test   # the current values (importing runs no test)

    with tempfile.TemporaryDirectory(prefix="wiki_goldens_") as tmp:
        new = reference_outputs(ref, pathlib.Path(tmp))
    text, differ = TEST_FILE.read_text(), 0
    for stage, files in test.REFERENCE_SHA256.items():
        for name, old in files.items():
            got = new[stage].get(name)
            state = "same" if got == old else "DIFFERENT"
            differ += got != old
            print(f"{stage}/{name}: {got} {state}")
            if args.write and got and got != old:
                text = re.sub(old, got, text, count=1)
    extra = sorted(f"results/{n}" for n in new["results"].keys() - test.REFERENCE_SHA256["results"].keys())
    if extra:
        print("written by the reference but not pinned in the test:", ", ".join(extra))
    if args.write:
        TEST_FILE.write_text(text)
        return 0
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
