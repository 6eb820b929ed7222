"""tf-mlperf-prep-wiki end to end: the real dump sample, kill + resume, pinned dates, bad inputs."""
import bz2
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from data_prep.wiki import cli
from tf_mlperf.base import samples
from tf_mlperf.base.tfrecord import read_records

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL_FLAGS = ["--num_test_articles", "6", "--block_size", "1", "--num_eval_examples", "100", "--dupe_factor", "2"]


def all_command(dump, vocab, out, cache):
    return [sys.executable, "-m", "data_prep.wiki.cli", "all", "--input", str(dump), "--vocab_file", str(vocab),
            "--output_dir", str(out), "--num_workers", "2", "--punkt_cache_dir", str(cache), *SMALL_FLAGS]


def tree_digest(folder: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(wiki_dump_sample, mlperf_vocab):
    return wiki_dump_sample, mlperf_vocab


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep_wiki_all")
    out = root / "out"
    env = dict(os.environ, NLTK_DATA=str(root / "no_nltk_data"))  # offline: punkt_tab must be built
    subprocess.run(all_command(*inputs, out, root / "cache"), check=True, cwd=REPO, env=env)
    return root, out


@pytest.mark.slow
def test_all_on_the_dump_sample(full_run):
    root, out = full_run
    assert (root / "cache" / "tokenizers" / "punkt_tab" / "english" / "ortho_context.tab").is_file()
    assert sorted(p.name for p in (out / "extracted" / "AA").iterdir()) == ["wiki_00", "wiki_01", "wiki_02"]
    parts = sorted(p.name for p in (out / "results").glob("part-*"))
    assert parts == [f"part-{i:05d}-of-00500" for i in range(3)]
    assert len((out / "results" / "eval.md5").read_text().split()) == 6
    assert sorted(p.name for p in (out / "tfrecords").iterdir()) == ["eval_10k", "eval_intermediate", *parts]
    assert len(list(read_records(out / "tfrecords" / "eval_10k"))) == 100
    assert len(list(read_records(out / "tfrecords" / parts[0]))) > 500
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


@pytest.mark.slow
def test_kill_and_rerun_gives_the_same_outputs(full_run, inputs, tmp_path):
    _, reference_out = full_run
    out = tmp_path / "out"
    cmd = all_command(*inputs, out, tmp_path / "cache")
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "sentences").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and all its worker processes
    proc.wait()
    assert tree_digest(out) != tree_digest(reference_out)
    subprocess.run(cmd, check=True, cwd=REPO, stderr=subprocess.DEVNULL)
    assert tree_digest(out) == tree_digest(reference_out)


MINI_DUMP = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
    </namespaces>
  </siteinfo>
  <page>
    <title>Pinned</title>
    <ns>0</ns>
    <id>1</id>
    <revision>
      <id>2</id>
      <text xml:space="preserve">It is {{CURRENTYEAR}}-{{CURRENTMONTH}}-{{CURRENTDAY}} now. This article has enough words to be kept by the extractor as a real paragraph of text.</text>
    </revision>
  </page>
</mediawiki>
"""


def test_magic_words_are_pinned_to_2020_01_01(tmp_path):
    dump = tmp_path / "mini.xml.bz2"
    dump.write_bytes(bz2.compress(MINI_DUMP.encode()))
    assert cli.main(["extract", "--input", str(dump), "--output_dir", str(tmp_path / "out"), "--num_workers", "1"]) == 0
    text = (tmp_path / "out" / "extracted" / "AA" / "wiki_00").read_text()
    assert "It is 2020-01-01 now." in text


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_wrong_vocab_sizes_and_tokens(capsys, tmp_path, inputs):
    _, vocab = inputs
    lines = vocab.read_text(encoding="utf-8").split("\n")
    short = tmp_path / "short_vocab.txt"
    short.write_text("\n".join(lines[:1000]) + "\n", encoding="utf-8")
    code, err = run_cli(capsys, "records", "--output_dir", str(tmp_path), "--vocab_file", str(short))
    assert code == 2 and str(short) in err and "1000 lines" in err and "30522" in err
    no_mask = tmp_path / "no_mask_vocab.txt"
    no_mask.write_text("\n".join("[MASQ]" if t == "[MASK]" else t for t in lines), encoding="utf-8")
    code, err = run_cli(capsys, "records", "--output_dir", str(tmp_path), "--vocab_file", str(no_mask))
    assert code == 2 and str(no_mask) in err and "[MASK]" in err


def test_empty_inputs(capsys, tmp_path, inputs):
    _, vocab = inputs
    dump = tmp_path / "empty.xml.bz2"
    dump.touch()
    code, err = run_cli(capsys, "extract", "--input", str(dump), "--output_dir", str(tmp_path / "a"))
    assert code == 2 and f"{dump}: dump file is empty" in err
    text = tmp_path / "empty.txt"
    text.write_text("\n\n")
    code, err = run_cli(capsys, "records", "--output_dir", str(tmp_path / "b"), "--vocab_file", str(vocab),
                        "--text_files", str(text))
    assert code == 2 and str(text) in err and "no text" in err
    code, err = run_cli(capsys, "clean", "--output_dir", str(tmp_path / "c"), "--extracted_dir", str(tmp_path))
    assert code == 2 and "no wiki_NN files" in err


def test_non_utf8_line_is_named(capsys, tmp_path, wiki_extracted_dir):
    extracted = tmp_path / "extracted" / "AA"
    extracted.mkdir(parents=True)
    good = (wiki_extracted_dir / "wiki_00").read_bytes()[:5000].rsplit(b"\n", 1)[0]
    (extracted / "wiki_00").write_bytes(good + b"\nbad \xff\xfe byte\n")
    code, err = run_cli(capsys, "clean", "--output_dir", str(tmp_path), "--num_workers", "1")
    bad_line = good.count(b"\n") + 2
    assert code == 2 and str(extracted / "wiki_00") in err and f"line {bad_line} " in err
    assert "not valid UTF-8" in err


def test_truncated_bz2_is_named(capsys, tmp_path, inputs):
    dump, _ = inputs
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    code, err = run_cli(capsys, "extract", "--input", str(cut), "--output_dir", str(tmp_path / "out"))
    assert code == 2 and f"{cut}: truncated .bz2" in err
    assert not (tmp_path / "out" / "extracted").exists()


def test_shipped_samples_for_the_demo():
    dump, vocab = samples.wikipedia_dump_sample(), samples.bert_vocab()   # scripts/setup.sh installs both
    assert hashlib.md5(vocab.read_bytes()).hexdigest() == "64800d5d8528ce344256daf115d4965e"
    assert dump.read_bytes()[:3] == b"BZh"


def test_stale_temp_files_and_folders_of_a_killed_run_are_removed(tmp_path):
    from data_prep.wiki.cli import remove_stale_temps
    stale_dir = tmp_path / ".extracted.tmp-4242"        # extract's output folder before its rename
    (stale_dir / "AA").mkdir(parents=True)
    (stale_dir / "AA" / "wiki_00").write_text("text")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / ".part-00000-of-00500.tmp-4242").write_text("half")
    kept = tmp_path / "results" / "part-00001-of-00500"
    kept.write_text("done")
    remove_stale_temps(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "results", "results/part-00001-of-00500"]
