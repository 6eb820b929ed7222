"""records / pick-eval fidelity: the golden hash of the MLPerf reference create_pretraining_data.py,
tokenizer semantics, the TFRecord wire format and the shared feature spec."""
import hashlib
import json

import pytest

from data_prep.wiki import pretraining, records
from tf_mlperf.base import bert_features as features, tokenization
from tf_mlperf.base.tfrecord import read_records


@pytest.fixture(scope="module")
def vocab_file(mlperf_vocab):
    return mlperf_vocab


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return tokenization.FullTokenizer(tokenization.check_bert_vocab(vocab_file))


@pytest.fixture(scope="module")
def golden_run(bert_golden_dir, vocab_file, tmp_path_factory):
    golden = json.loads((bert_golden_dir / "golden.json").read_text())
    out = tmp_path_factory.mktemp("golden") / "golden.tfrecord"
    params = pretraining.PretrainingParams(**golden["params"])
    count = records.make_records(bert_golden_dir / golden["input"], out, vocab_file, params)
    return golden, out, count


def test_golden_hash_of_reference_create_pretraining_data(golden_run):
    golden, out, count = golden_run
    assert count == golden["records"] == 6470
    # The golden definition: each record parsed as tf.train.Example, re-serialized deterministically.
    import tensorflow as tf
    digest = hashlib.sha256()
    raw_digest = hashlib.sha256()
    for record in tf.data.TFRecordDataset(str(out)):
        raw = record.numpy()
        digest.update(tf.train.Example.FromString(raw).SerializeToString(deterministic=True))
        raw_digest.update(raw)
    assert digest.hexdigest() == golden["canonical_sha256"]
    # Our records are written in canonical form already (so pick-eval may copy them as they are).
    assert raw_digest.hexdigest() == golden["canonical_sha256"]


def test_records_parse_with_the_shared_feature_spec(golden_run):
    import tensorflow as tf
    _, out, _ = golden_run
    spec = features.tf_feature_spec()
    assert set(spec) == set(features.FEATURE_SPEC)
    for record in tf.data.TFRecordDataset(str(out)).take(50):
        example = tf.io.parse_single_example(record, spec)
        n = int(tf.reduce_sum(example["input_mask"]))
        assert example["input_ids"].dtype == tf.int64 and example["masked_lm_weights"].dtype == tf.float32
        assert int(example["input_ids"][0]) == 101 and int(example["input_ids"][n - 1]) == 102  # [CLS] ... [SEP]
        masked = int(tf.reduce_sum(example["masked_lm_weights"]))
        assert 1 <= masked <= features.MAX_PREDICTIONS_PER_SEQ
        assert int(example["next_sentence_labels"][0]) in (0, 1)


def test_pick_eval_takes_examples_at_float_ratio(golden_run, tmp_path):
    _, out, count = golden_run
    picked = tmp_path / "eval"
    records.pick_eval(out, picked, num_examples=1000)
    source = list(read_records(out))
    ratio = count / 1000
    assert list(read_records(picked)) == [source[int(i * ratio)] for i in range(1000)]


@pytest.fixture(scope="module")
def reference_tokenizer(vocab_file):
    """An independent implementation of the reference's tokenization.py: TF Model Garden's copy of Google's
    BERT tokenizer (official.nlp.tools.tokenization, tf-models-official), uncased as the MLPerf vocab.
    Its one difference from the reference's tokenization.py: words longer than 400 characters become [UNK]
    where the reference says 200 (WordpieceTokenizer.max_input_chars_per_word), so that is set back to 200."""
    from official.nlp.tools import tokenization as official_tokenization
    reference = official_tokenization.FullTokenizer(str(vocab_file), do_lower_case=True)
    assert reference.wordpiece_tokenizer.max_input_chars_per_word == 400
    reference.wordpiece_tokenizer.max_input_chars_per_word = 200
    return reference


@pytest.mark.parametrize("text", [
    "Héllo, Wörld! Ça va? Ångström naïve café",
    "東京は日本の首都です and 中文字符",
    "tabs\tand\u00a0nbsp\u2003em-space; zero\u200bwidth soft\u00adhyphen ctrl\x07bell \ufffd",
    "$5^2 `code` ~tilde~ {braces} [brackets] #hash @at 3.14%",
    "x" * 201 + " supercalifragilisticexpialidocious unaffable",
    "İstanbul ﬁ ligature ＡＢＣ fullwidth Ⅻ roman",
    "[CLS] [SEP] [MASK] are split by punctuation",
])
def test_tokenizer_matches_reference_rules(tokenizer, reference_tokenizer, text):
    expected = reference_tokenizer.tokenize(text)
    assert tokenizer.tokenize(text) == expected
    assert tokenizer.tokenize_ids(text) == reference_tokenizer.convert_tokens_to_ids(expected)


def test_tokenizer_on_fixture_text(tokenizer, reference_tokenizer, bert_golden_dir):
    lines = (bert_golden_dir / "sentences_wiki_00.txt").read_text(encoding="utf-8").split("\n")
    for line in lines[::3]:
        assert tokenizer.tokenize(line) == reference_tokenizer.tokenize(line), line


def test_lines_split_on_newline_only_and_drop_carriage_returns(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("a\rb\x0bc\u2028d\ne\x85f\n\nlast".encode("utf-8"))
    # TF's GFile.readline: '\n' ends a line, '\r' is dropped; other Unicode line breaks stay inside lines.
    assert tokenization.read_text_lines(path) == ["ab\x0bc\u2028d", "e\x85f", "", "last"]
