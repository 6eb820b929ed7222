"""Issue 15 (nothing silently wrong) for tf-mlperf-prep-wiki: wrong vocab, incomplete dumps, missing or
unreadable inputs give one line naming the file, exit non-zero, and write nothing that looks complete."""
import bz2
import random
import re

import pytest

from tf_mlperf.base.errors import EXIT_ERROR
from data_prep.wiki import cli, extract
from tf_mlperf.base import tokenization

TEXT = """The quick brown fox jumps over the lazy dog near the river bank in the early morning.
It was the first time anyone had seen such a thing in the small village of Oakwood.
The villagers gathered to talk about it for many hours, and the children ran home to tell their parents.

A second document begins here, with a sentence about the history of the region and its people.
Many people came to the market on Saturday to buy bread, fruit and vegetables from local farmers.
"""


@pytest.fixture(scope="module")
def vocab_lines(mlperf_vocab):
    return tokenization.read_text_lines(mlperf_vocab)


def write_vocab(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def records(capsys, tmp_path, vocab, *extra):
    text = tmp_path / "text.txt"
    tmp_path.mkdir(exist_ok=True)
    text.write_text(TEXT)
    code = cli.main(["records", "--output_dir", str(tmp_path / "out"), "--vocab_file", str(vocab),
                     "--text_files", str(text), "--num_workers", "1", *extra])
    return code, capsys.readouterr().err


def is_special(token):
    return token.startswith("[") and token.endswith("]")


def test_shuffled_vocab_is_refused(capsys, tmp_path, vocab_lines):
    lines = list(vocab_lines)
    random.Random(0).shuffle(lines)
    vocab = write_vocab(tmp_path / "shuffled.txt", lines)
    code, err = records(capsys, tmp_path, vocab)
    assert code == EXIT_ERROR and f"{vocab}: not the BERT vocab's order" in err and "[PAD]=0" in err
    assert not (tmp_path / "out" / "tfrecords").exists()


def test_cased_vocab_is_refused_when_lower_casing(capsys, tmp_path, vocab_lines):
    vocab = write_vocab(tmp_path / "cased.txt", [t if is_special(t) else t.capitalize() for t in vocab_lines])
    code, err = records(capsys, tmp_path, vocab)
    assert code == EXIT_ERROR and f"{vocab}: a cased vocab" in err and "--do_lower_case" in err


def test_high_unk_rate_of_the_first_part_stops(capsys, tmp_path, vocab_lines):
    """Specials in place, lower case, right size: only the [UNK] rate shows it cannot tokenize English."""
    lines = [t if is_special(t) else f"zz{i}" for i, t in enumerate(vocab_lines)]
    vocab = write_vocab(tmp_path / "foreign.txt", lines)
    code, err = records(capsys, tmp_path, vocab)
    assert code == EXIT_ERROR and "100.0% of the first" in err and "[UNK]" in err and str(vocab) in err
    assert "not the MLPerf BERT vocab.txt" in err   # the md5 warning came first
    assert not (tmp_path / "out" / "tfrecords" / "text.txt").exists()


def test_mlperf_vocab_is_silent_and_another_vocab_is_warned(capsys, tmp_path, mlperf_vocab, vocab_lines):
    code, err = records(capsys, tmp_path, mlperf_vocab)
    assert code == 0 and "warning" not in err
    lines = list(vocab_lines)
    lines[2000], lines[2001] = lines[2001], lines[2000]   # same layout, other ids: only the md5 tells
    other = write_vocab(tmp_path / "swapped.txt", lines)
    code, err = records(capsys, tmp_path / "b", other)
    assert code == 0 and f"warning: {other}: not the MLPerf BERT vocab.txt" in err
    assert tokenization.MLPERF_VOCAB_MD5 in err


def test_missing_vocab_is_one_line(capsys, tmp_path):
    code, err = records(capsys, tmp_path, tmp_path / "no_such_vocab.txt")
    assert code == EXIT_ERROR and err.count("error:") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'no_such_vocab.txt'}: vocab file not found" in err and "--vocab_file" in err
    code = cli.main(["records", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and err.count("error:") == 1 and "Traceback" not in err and "--vocab_file is required" in err
    code = cli.main(["records", "--output_dir", str(tmp_path / "out"), "--vocab_file", str(tmp_path / "nope"),
                     "--verbose"])
    assert code == EXIT_ERROR and "Traceback" in capsys.readouterr().err


def multistream(xml: str, pages_per_stream: int = 10):
    """The dump as Wikimedia's multistream layout: a siteinfo stream, streams of N pages, a closing stream;
    with its index (offset:page_id:title per page). Returns (bytes, index text, stream offsets)."""
    head, rest = xml.split("  <page>", 1)
    pages = ["  <page>" + p for p in rest.split("  <page>")]
    pages[-1], tail = pages[-1].split("</mediawiki>")
    chunks = [head] + ["".join(pages[i:i + pages_per_stream]) for i in range(0, len(pages), pages_per_stream)]
    chunks.append("</mediawiki>" + tail)
    data, offsets, index = b"", [], []
    for n, chunk in enumerate(chunks):
        offsets.append(len(data))
        if 0 < n < len(chunks) - 1:
            for page in re.findall(r"<page>.*?</page>", chunk, re.S):
                page_id = re.search(r"<id>(\d+)</id>", page).group(1)
                index.append(f"{len(data)}:{page_id}:{re.search(r'<title>(.*?)</title>', page).group(1)}")
        data += bz2.compress(chunk.encode())
    return data, "\n".join(index) + "\n", offsets


@pytest.fixture(scope="module")
def cut_dump(wiki_dump_sample, tmp_path_factory):
    """The real sample as a multistream dump, cut at a stream boundary half way (every bz2 stream whole)."""
    folder = tmp_path_factory.mktemp("dump")
    data, index, offsets = multistream(bz2.decompress(wiki_dump_sample.read_bytes()).decode())
    assert len(offsets) > 6
    cut = folder / "enwiki-cut-pages-articles-multistream.xml.bz2"
    cut.write_bytes(data[:offsets[len(offsets) // 2]])
    (folder / "index.txt.bz2").write_bytes(bz2.compress(index.encode()))
    return cut, folder / "index.txt.bz2"


def extract_cli(capsys, dump, out, *extra):
    code = cli.main(["extract", "--input", str(dump), "--output_dir", str(out), "--num_workers", "1", *extra])
    return code, capsys.readouterr().err


def test_dump_cut_at_a_stream_boundary_is_refused(capsys, tmp_path, cut_dump):
    cut, _ = cut_dump
    extract.check_bz2(cut)   # whole bz2 streams: the old end-marker check alone passes it
    code, err = extract_cli(capsys, cut, tmp_path)
    assert code == EXIT_ERROR and f"{cut}: incomplete dump (the XML ends with '</page>', not </mediawiki>)" in err
    assert "download it again" in err and err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "extracted").exists()


def test_dump_cut_is_found_by_the_extraction_child_too(capsys, tmp_path, cut_dump, monkeypatch):
    """Where the tail holds no stream start (a single-stream dump), the child reading the XML stops."""
    cut, _ = cut_dump
    monkeypatch.setattr(extract, "TAIL_BYTES", 0)
    code, err = extract_cli(capsys, cut, tmp_path)
    assert code == EXIT_ERROR and f"{cut}: incomplete dump (the XML does not end with </mediawiki>)" in err
    assert not (tmp_path / "extracted").exists()


def test_dump_cut_is_found_by_its_multistream_index(capsys, tmp_path, cut_dump, monkeypatch):
    cut, index = cut_dump
    monkeypatch.setattr(extract, "check_dump_end", lambda path: None)   # the index alone must catch it
    code, err = extract_cli(capsys, cut, tmp_path, "--multistream_index", str(index))
    assert code == EXIT_ERROR and f"{cut}: incomplete dump" in err and f"its index {index} lists" in err
    assert not (tmp_path / "extracted").exists()


def test_whole_multistream_dump_passes_the_checks(tmp_path, wiki_dump_sample):
    data, index, _ = multistream(bz2.decompress(wiki_dump_sample.read_bytes()).decode())
    dump, index_file = tmp_path / "whole.xml.bz2", tmp_path / "index.txt.bz2"
    dump.write_bytes(data)
    index_file.write_bytes(bz2.compress(index.encode()))
    extract.check_bz2(dump)
    extract.check_multistream_index(dump, index_file)
    extract.check_dump_end(dump)
    extract.check_dump_end(wiki_dump_sample)   # the real single-stream sample


def test_read_only_output_folder_is_one_line(capsys, tmp_path, wiki_extracted_dir):
    from test_prep_imagenet_faults import read_only_folder
    folder = tmp_path / "readonly"
    with read_only_folder(folder) as reason:
        code = cli.main(["clean", "--extracted_dir", str(wiki_extracted_dir), "--output_dir", str(folder / "out"),
                         "--num_workers", "1"])
        err = capsys.readouterr().err
        assert code == EXIT_ERROR and err.count("error:") == 1 and "Traceback" not in err
        assert f"{folder / 'out'}" in err and reason in err and "--output_dir" in err


def test_full_disk_is_one_line_and_a_rerun_completes(tmp_path, wiki_extracted_dir):
    import resource
    import subprocess
    import sys
    from test_prep_imagenet_faults import REPO, tmpfs

    def clean(out, preexec_fn=None):
        command = [sys.executable, "-m", "data_prep.wiki.cli", "clean", "--extracted_dir", str(wiki_extracted_dir),
                   "--output_dir", str(out), "--num_workers", "2"]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, preexec_fn=preexec_fn, timeout=300)

    assert clean(tmp_path / "reference").returncode == 0
    reference = {p.name: p.read_bytes() for p in (tmp_path / "reference" / "cleaned").iterdir()}
    disk = tmp_path / "disk"
    with tmpfs(disk, f"size={sum(map(len, reference.values())) // 2}") as mounted:
        limit = min(map(len, reference.values())) // 2

        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        done = clean(disk / "out", None if mounted else small_files)
        reason = "No space left on device" if mounted else "File too large"
        assert done.returncode == EXIT_ERROR and "Traceback" not in done.stderr, done.stderr
        assert re.search(rf"error: {disk / 'out' / 'cleaned'}/wiki_0\d: cannot write \({reason}\).*rerun", done.stderr)
        assert not [p for p in disk.rglob("*") if ".tmp-" in p.name]
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={sum(map(len, reference.values())) * 4}", str(disk)],
                           check=True)
        assert clean(disk / "out").returncode == 0
        assert {p.name: p.read_bytes() for p in (disk / "out" / "cleaned").iterdir()} == reference
