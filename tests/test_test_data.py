"""The test data itself: the checked-in copies and the packaged files are the bytes the goldens were made
from, and a missing data file fails its test instead of skipping it."""
import hashlib
import re

import pytest

import conftest

MLPERF_VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"     # the MLPerf BERT vocab.txt
GENSIM_DUMP_MD5 = "55899abfb7caa0e50d2665787fa4afca"      # gensim 4.4.0's shortened enwiki dump


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_every_checked_in_file_is_listed_with_its_md5_and_matches():
    listed = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{32})` \|", (conftest.TEST_DATA / "README.md").read_text(),
                             flags=re.M))
    present = {str(p.relative_to(conftest.TEST_DATA)) for p in conftest.TEST_DATA.rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc", ".md") and not p.name.startswith("LICENSE")}
    assert present == set(listed), "tests/data/README.md must list every data file with its md5"
    for name, digest in listed.items():
        assert md5(conftest.TEST_DATA / name) == digest, name


def test_packaged_inputs_are_the_golden_bytes(mlperf_vocab, wiki_dump_sample):
    assert md5(mlperf_vocab) == MLPERF_VOCAB_MD5
    assert md5(wiki_dump_sample) == GENSIM_DUMP_MD5


def test_photo_set_is_packaged_plus_checked_in(photo_paths):
    names = [p.name for p in photo_paths]
    assert len(names) == len(set(names)) == conftest.PACKAGED_PHOTOS + len(conftest.EXTRA_PHOTOS)
    assert {"china.jpg", "astronaut.png", "pil_sample_cmyk.jpg"} <= set(names)


def test_missing_data_fails_never_skips(tmp_path):
    try:
        conftest.require(tmp_path / "absent")
    except pytest.fail.Exception as failure:
        assert "absent" in str(failure)
    except pytest.skip.Exception:
        pytest.fail("a missing data file skipped its test")
    else:
        pytest.fail("a missing data file went unnoticed")
    assert conftest.require(tmp_path) == tmp_path


def test_sample_generator_adds_the_checked_in_photos(extra_photos_dir, tmp_path):
    from data_prep.imagenet import sample
    info = sample.generate(tmp_path, num_classes=6, train_per_class=3, num_val=6, image_size=32,
                           photos_dir=extra_photos_dir)
    assert str(extra_photos_dir) in info["sources"]
    assert "hopper.jpg" in {c["photo"] for c in info["classes"]}   # 6th of the photos sorted by name
