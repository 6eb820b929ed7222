"""clean / sentences / split / gather on the MLPerf sample text (tests/data/wikipedia_extracted/wiki_00..03).

Two kinds of oracle: small ones written in this file from the reference scripts' rules, and the sha256 of
what the reference scripts themselves (cleanup_file.py + clean.sh, do_sentence_segmentation.py with the
same punkt parameters, seperate_test_set.py with 20 test articles, do_gather.py) wrote for these files.
"""
import hashlib
import random
import re

import pytest

from data_prep.wiki import cli, clean, gather, sentences, split

FILES = ["wiki_00", "wiki_01", "wiki_02", "wiki_03"]
REFERENCE_SHA256 = {  # stage -> file -> sha256 of the reference scripts' output
    "cleaned": {"wiki_00": "ea55aa81841a12ea12640a207b485f5af143c90a3d0d098423589667dd3dfe1f",
                "wiki_01": "74cbabee97977fa1de01f3583d43f096eff7d5624a5c1ab424268c2d4de34671",
                "wiki_02": "ee5b56a712536a9f29525c0e89e51be9e037d49790031d6b3aa0ed727330fae0",
                "wiki_03": "c38e9aa21586c59b24646e30480ded2c0b33582faaf91001079fb88e61e49374"},
    "sentences": {"wiki_00": "26bbd901c43619165d3f176545614ef646e60093c4151cf96438afd746b2feeb",
                  "wiki_01": "d77377aba7baedaf9846d532c1955b1848e4b4d153d9778536c25232e93c8361",
                  "wiki_02": "adc95f971bccfe63a3c1bbbe1892bf1e4207a7ce197b5efadb6e18ba175dede6",
                  "wiki_03": "af7ef23a7683bc0bc5d88daafc3df520548ffee0fced9330edbf2ef68d40f368"},
    "train": {"wiki_00": "e5357dfc51427cca8a4e2acfcd7b3543824bff122fcb05c3dcbe92b523388b04",
              "wiki_01": "6b149216864291522d503b164b013949ebe3d4e26f7781396d88555226692136",
              "wiki_02": "36299cee113fba34ade5b3e55f3aae9f859ef59db23e36d6bea8c149eb4ffe8e",
              "wiki_03": "a73a71936ba6d12deadb72e81a63dcbb4809644d291d7a36471f6cc01670e464"},
    "results": {"eval.txt": "ad27cd87f244334fcd2a8c53dda41e039d75959ac099217d432ec642efb74edb",
                "eval.md5": "2b5cef4e046d15a08d99d7e07864155312efd2e683f01d094d37795bdbec46a2",
                # do_gather.py --block_size=1.5
                "part-00000-of-00500": "45d5ae15ba6d0b19f369d5ae81d6a9f6f27de525ae86f2371550aad625c2a702",
                "part-00001-of-00500": "a8ec04fbb8e236561090db6e1e8fe8129cc6564cd1660bae4a799a9fe187a9e2",
                "part-00002-of-00500": "f110564eb1629604f8f2cc17cab9f54854cac7f8c893ec7fc085743ceaa8e2c7",
                "part-00003-of-00500": "9fcaafe02ce076bb8963c99d127a78f5128b3ae4336c6c886671c19067510fc4"},
}
NUM_TEST_ARTICLES = 20


@pytest.fixture(scope="module")
def prepared(wiki_extracted_dir, tmp_path_factory):
    """Our clean, sentences, split and gather stages run on the sample, two workers."""
    out = tmp_path_factory.mktemp("wiki_text")
    base = ["--output_dir", str(out), "--extracted_dir", str(wiki_extracted_dir),
            "--num_workers", "2", "--num_test_articles", str(NUM_TEST_ARTICLES), "--block_size", "1.5",
            "--punkt_cache_dir", str(out / "cache")]
    for stage in ("clean", "sentences", "split", "gather"):
        assert cli.main([stage, *base]) == 0
    return out


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("stage", sorted(REFERENCE_SHA256))
def test_outputs_equal_reference_scripts(prepared, stage):
    for name, digest in REFERENCE_SHA256[stage].items():
        assert sha256(prepared / stage / name) == digest, f"{stage}/{name}"


def test_doc_tags_oracle(wiki_extracted_dir):
    """cleanup_file.py rule: per <doc>, an empty line, then the body's non-empty lines (title dropped)."""
    for name in FILES:
        text = (wiki_extracted_dir / name).read_text(encoding="utf-8")
        docs = re.findall(r"<doc [^\n]*>\n[^\n]*\n(.*?)</doc>\n", text, flags=re.S)
        assert len(docs) == text.count("<doc ")
        expected = "".join("\n" + "".join(line + "\n" for line in body.split("\n") if line) for body in docs)
        assert clean.strip_doc_tags(text) == expected


@pytest.mark.parametrize("line, expected", [
    ("see [[Paris]] and [[Lyon|the city]].", "see Paris and the city."),
    # Plain [[x]] is unwrapped first, so the File/Image/Media rules only see links with several '|'.
    ("[[File:Map.png|thumb|a map]]x [[:file:b.jpg]]y [[Image:c.gif]]z [[media:d.ogg]]",
     "x :file:b.jpgy Image:c.gifz media:d.ogg"),
    ("[[a [[b]] c]]", "a b c"),
    ("[1] [text|here]", "1 [text|here]"),
    ("x<ref name=a>cite</ref>y<ref name=b/>z", "xyz"),
    ("H<sub>2</sub><sup>2</sup> a<br>b</br>c <small>s</small>", "H<sub>2</sub>2 abc s"),
    ("<chem>H2O</chem> <math>x</math> <div class=a>t</div>", ">H2O x t"),
    ('alt=Photo <gallery mode="x">g</gallery> <section begin=a />s', "Photo g s"),
    ("a</doc>b", "a\rb"),
])
def test_clean_rules_examples(line, expected):
    assert clean.apply_clean_rules(line + "\n") == expected + "\n"


@pytest.mark.parametrize("line", ["<doc id=\"1\" title=\"x\">", "[[Category:Physics]] trailing text"])
def test_clean_drops_doc_and_category_lines(line):
    assert clean.apply_clean_rules(f"keep\n{line}\nkeep\n") == "keep\nkeep\n"


def test_sentences_oracle(prepared):
    """One stripped sentence per line (punkt), a blank line for each blank input line, one more at the end."""
    splitter = sentences.sentence_splitter(str(prepared / "cache"))
    for name in FILES:
        cleaned = (prepared / "cleaned" / name).read_text(encoding="utf-8").replace("\r", "\n")
        expected = []
        for line in cleaned.split("\n")[:-1]:
            if not line:
                expected.append("")
            expected += [s.strip() for s in splitter.tokenize(line + "\n")]
        assert (prepared / "sentences" / name).read_text(encoding="utf-8") == "\n".join(expected) + "\n\n"


def test_split_oracle(prepared):
    """File i keeps int((i+1)*N/4) - int(i*N/4) articles out, picked by Random(12345 + 13 i)."""
    held_out = []
    for i, name in enumerate(FILES):
        articles = (prepared / "sentences" / name).read_text(encoding="utf-8").split("\n\n")
        rng, ids = random.Random(12345 + 13 * i), []
        while len(ids) < (i + 1) * NUM_TEST_ARTICLES // 4 - i * NUM_TEST_ARTICLES // 4:
            pick = int(rng.random() * len(articles))
            ids += [] if pick in ids else [pick]
        assert (prepared / "train" / name).read_text(encoding="utf-8") == "".join(
            a + "\n\n" for j, a in enumerate(articles) if j not in ids)
        held_out += [a for j, a in enumerate(articles) if j in ids]
    assert (prepared / "results" / "eval.txt").read_text(encoding="utf-8") == "".join(a + "\n\n" for a in held_out)
    md5s = (prepared / "results" / "eval.md5").read_text().split()
    assert md5s == [hashlib.md5(a.rstrip().encode()).hexdigest() for a in held_out]


def test_eval_md5_check(prepared, tmp_path):
    ours = prepared / "results" / "eval.md5"
    split.check_eval_md5(ours, ours)
    wrong = tmp_path / "eval.md5"
    wrong.write_text(ours.read_text().replace(ours.read_text()[:32], "0" * 32, 1))
    with pytest.raises(split.InputError, match="differ, first at article 1"):
        split.check_eval_md5(ours, wrong)


def test_gather_block_rule():
    mb = 1024 * 1024
    # a part may reach the block size exactly; a file that would pass it starts the next part
    assert gather.plan_parts([mb, mb, mb // 2, 3 * mb, mb], 2.0) == [[0, 1], [2], [3], [4]]
    assert gather.part_name(7, 500) == "part-00007-of-00500"
