"""`split`: hold out test articles exactly as the reference's seperate_test_set.py.

File i of n (sorted order) gives int((i+1)*N/n) - int(i*N/n) of the N test articles, picked by
random.Random(seed + 13*i): draw int(random() * num_articles) until that many distinct ids. Articles
are the file's text split on '\\n\\n'; kept ones are written back each followed by '\\n\\n'. The eval text
is every file's held-out articles in file order, each followed by '\\n\\n'; eval.md5 has one line per
article: md5 of the article with trailing whitespace stripped.
"""
from __future__ import annotations

import hashlib
import pathlib
import random

from data_prep.fileio import write_text_atomic
from data_prep.wiki.fileio import read_utf8
from tf_mlperf.base.errors import UserError

DEFAULT_SEED = 12345


def num_test_articles_for(file_id: int, num_files: int, num_test_articles: int) -> int:
    return (int((file_id + 1) * num_test_articles * 1.0 / num_files)
            - int(file_id * num_test_articles * 1.0 / num_files))


def pick_test_ids(num_articles: int, num_tests: int, file_id: int, seed: int = DEFAULT_SEED) -> list[int]:
    rng = random.Random(seed + file_id * 13)
    picked: list[int] = []
    while len(picked) < num_tests:
        new_id = int(rng.random() * num_articles)
        if new_id not in picked:
            picked.append(new_id)
    return picked


def split_text(text: str, file_id: int, num_files: int, num_test_articles: int, seed: int = DEFAULT_SEED,
               name: str = "") -> tuple[str, list[str]]:
    """(training text, held-out articles) for one sentence file."""
    articles = text.split("\n\n")
    num_tests = num_test_articles_for(file_id, num_files, num_test_articles)
    if num_tests > len(articles):
        # The reference loops forever here; small inputs need a smaller --num_test_articles.
        raise UserError(f"{name}: {num_tests} test articles requested but the file has only {len(articles)}; "
                        "lower --num_test_articles")
    test_ids = set(pick_test_ids(len(articles), num_tests, file_id, seed))
    train = "".join(article + "\n\n" for i, article in enumerate(articles) if i not in test_ids)
    return train, [article for i, article in enumerate(articles) if i in test_ids]


def split_file(src: pathlib.Path, train_dst: pathlib.Path, heldout_dst: pathlib.Path, file_id: int,
               num_files: int, num_test_articles: int, seed: int = DEFAULT_SEED) -> None:
    """Writes the held-out articles first and the training text last: the training file marks completion."""
    text = read_utf8(src, newline="\n")
    train, heldout = split_text(text, file_id, num_files, num_test_articles, seed, name=str(src))
    write_text_atomic(heldout_dst, "".join(article + "\n\n" for article in heldout))
    write_text_atomic(train_dst, train)


def article_md5(article: str) -> str:
    return hashlib.md5(article.rstrip().encode("utf-8")).hexdigest()


def write_eval_set(heldout_files: list[pathlib.Path], eval_txt: pathlib.Path, eval_md5: pathlib.Path) -> int:
    """Concatenate the per-file held-out articles into eval.txt and eval.md5; returns the article count."""
    articles = []
    for path in heldout_files:
        text = read_utf8(path, newline="\n")
        articles += text.split("\n\n")[:-1]  # each article was written followed by '\n\n'
    write_text_atomic(eval_md5, "".join(article_md5(a) + "\n" for a in articles))
    write_text_atomic(eval_txt, "".join(a + "\n\n" for a in articles))
    return len(articles)


def check_eval_md5(ours: pathlib.Path, reference: pathlib.Path) -> None:
    """Compare our eval.md5 with a reference eval.md5 (one hex md5 per held-out article, in order)."""
    expected = read_utf8(reference, newline="\n").split()
    got = read_utf8(ours, newline="\n").split()
    if any(len(h) != 32 for h in expected):
        raise UserError(f"{reference}: not an eval.md5 file (one 32-hex-digit md5 per line)")
    if got != expected:
        differing = sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise UserError(f"{reference}: held-out eval text differs from {ours}: {len(got)} vs {len(expected)} "
                        f"articles, {differing} differ, first at article {first + 1}")
