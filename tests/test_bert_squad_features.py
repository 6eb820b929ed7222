"""SQuAD v1.1 features, predictions and scores (tf_mlperf/bert/squad.py) against tf-models-official's independent
implementation of run_squad.py (`official/nlp/data/squad_lib.py`, its tokenizer `official/nlp/tools/tokenization.py`
and `official/nlp/tools/squad_evaluate_v1_1.py`), on the hand-written SQuAD set in tests/data/squad/ (real
Wikipedia paragraphs: long contexts that need several spans, answers at span borders, unicode)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from tf_mlperf.bert import squad

from tf_mlperf.bert import squad_predictions
from tf_mlperf.base.errors import UserError

DATA = pathlib.Path(__file__).resolve().parent / "data" / "squad"
TRAIN, DEV = DATA / "tiny-train-v1.1.json", DATA / "tiny-dev-v1.1.json"
# (max_seq_length, doc_stride, max_query_length): the reference's, the CPU smoke config's, and one that cuts
# questions and makes many spans.
CONFIGS = [(384, 128, 64), (128, 64, 32), (48, 16, 8)]


@pytest.fixture(scope="module")
def tokenizers(mlperf_vocab):
    from official.nlp.tools import tokenization
    return squad.Tokenizer(str(mlperf_vocab)), tokenization.FullTokenizer(str(mlperf_vocab), do_lower_case=True)


def oracle_features(path, tokenizer, config, is_training):
    from official.nlp.data import squad_lib
    examples = squad_lib.read_squad_examples(str(path), is_training, version_2_with_negative=False)
    features = []

    def collect(feature, is_padding=False):
        if not is_padding:
            features.append(feature)
    seq, stride, query = config
    squad_lib.convert_examples_to_features(examples, tokenizer, seq, stride, query, is_training, collect,
                                           batch_size=None if is_training else 4)
    return examples, features


def our_features(path, tokenizer, config, is_training, warnings=None):
    warn = (warnings.append if warnings is not None else squad.warn_stderr)
    examples = squad.read_examples(str(path), is_training, warn=warn)
    seq, stride, query = config
    return examples, squad.convert_examples_to_features(examples, tokenizer, seq, stride, query, is_training,
                                                        warn=warn)


FIELDS = ("unique_id", "example_index", "doc_span_index", "tokens", "token_to_orig_map", "token_is_max_context",
          "input_ids", "input_mask", "segment_ids")


@pytest.mark.parametrize("is_training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_features_equal_squad_lib(tokenizers, config, is_training):
    ours_tok, oracle_tok = tokenizers
    path = TRAIN if is_training else DEV
    examples, features = our_features(path, ours_tok, config, is_training, warnings=[])
    oracle_examples, oracle = oracle_features(path, oracle_tok, config, is_training)
    assert [e.qas_id for e in examples] == [e.qas_id for e in oracle_examples]
    for ours, theirs in zip(examples, oracle_examples):
        assert (ours.doc_tokens, ours.start_position, ours.end_position) == \
            (theirs.doc_tokens, theirs.start_position, theirs.end_position), ours.qas_id
    assert len(features) == len(oracle) > len(examples)
    for ours, theirs in zip(features, oracle):
        for field in FIELDS:
            assert getattr(ours, field) == getattr(theirs, field), (field, ours.unique_id)
        if is_training:
            assert (ours.start_position, ours.end_position) == (theirs.start_position, theirs.end_position), \
                ours.unique_id


def test_the_set_has_long_contexts_border_answers_and_unicode(tokenizers):
    """What the hand-written set is for, checked under the reference's 384 / 128 / 64."""
    warnings = []
    examples, features = our_features(TRAIN, tokenizers[0], CONFIGS[0], True, warnings)
    per_example = np.bincount([f.example_index for f in features])
    assert per_example.max() >= 3                                   # a context needing three spans
    at_span_start = at_span_end = crossing = 0
    for f in features:
        first, last = f.tokens.index("[SEP]") + 1, len(f.tokens) - 2        # the span's context tokens
        if f.start_position:
            at_span_start += f.start_position == first and f.doc_span_index > 0
            at_span_end += f.end_position == last
        else:     # this span lacks the answer; does it hold part of it? (the answer crosses its border)
            e = examples[f.example_index]
            held = {f.token_to_orig_map[i] for i in range(first, last + 1)}
            crossing += bool(held & set(range(e.start_position, e.end_position + 1)))
    assert at_span_start and at_span_end and crossing, (at_span_start, at_span_end, crossing)
    assert sum(any(ord(c) > 127 for c in " ".join(e.doc_tokens)) for e in examples) >= 5
    # the answer with a no-break space is not whitespace-separable in the reference's words: left out, one line
    assert len(warnings) == 1 and "atlantic-1" in warnings[0] and "left out of training" in warnings[0]
    assert "atlantic-1" not in {e.qas_id for e in examples}


def _random_results(features, seed):
    rng = np.random.default_rng(seed)
    return [squad_predictions.RawResult(f.unique_id, rng.normal(size=len(f.input_ids)).tolist(),
                                        rng.normal(size=len(f.input_ids)).tolist()) for f in features]


def _answer_results(examples, features, tokenizer, config):
    """Logits that peak at each training answer's tokens (where a span holds it), noise elsewhere."""
    _, train_features = our_features(TRAIN, tokenizer, config, True, warnings=[])
    rng = np.random.default_rng(3)
    by_key = {(f.example_index, f.doc_span_index): f for f in train_features}
    train_ids = [e.qas_id for e in squad.read_examples(str(TRAIN), True, warn=lambda _: None)]
    results = []
    for f in features:
        start, end = rng.normal(size=len(f.input_ids)), rng.normal(size=len(f.input_ids))
        qid = examples[f.example_index].qas_id
        if qid in train_ids:
            t = by_key[(train_ids.index(qid), f.doc_span_index)]
            if t.start_position:
                start[t.start_position] += 20
                end[t.end_position] += 20
        results.append(squad_predictions.RawResult(f.unique_id, start.tolist(), end.tolist()))
    return results


@pytest.mark.parametrize("final_text", squad_predictions.FINAL_TEXT)
@pytest.mark.parametrize("config", CONFIGS[:2], ids=lambda c: "-".join(map(str, c)))
def test_predictions_equal_squad_lib(tokenizers, monkeypatch, config, final_text):
    """The answers from random logits and from logits peaked at the answers equal squad_lib.postprocess_output's
    (run_squad.py's BasicTokenizer in get_final_text), or, for "wordpiece", its output with the full WordPiece
    tokenizer put in that place, which is what accuracy-squad.py does (transformers' BertTokenizer)."""
    from official.nlp.data import squad_lib
    ours_tok, oracle_tok = tokenizers
    if final_text == "wordpiece":
        monkeypatch.setattr(squad_lib.tokenization, "BasicTokenizer", lambda do_lower_case: oracle_tok)
    examples, features = our_features(DEV, ours_tok, config, False)
    oracle_examples, oracle = oracle_features(DEV, oracle_tok, config, False)
    for results in (_random_results(features, 1), _random_results(features, 2),
                    _answer_results(examples, features, ours_tok, config)):
        answers = squad_predictions.predictions(examples, features, results, ours_tok, final_text=final_text)
        expected, _, _ = squad_lib.postprocess_output(oracle_examples, oracle, results, squad_predictions.N_BEST_SIZE,
                                                      squad_predictions.MAX_ANSWER_LENGTH, do_lower_case=True)
        assert answers == dict(expected)
    # the peaked logits give the answers back: every training answer found (the no-break-space one by its
    # second answer), a few words changed only where the original-text recovery returns whole words
    scores = squad_predictions.evaluate(examples, answers)
    assert scores["exact_match"] > 85 and scores["f1"] > 95, scores


def test_evaluate_equals_the_official_script(tokenizers):
    from official.nlp.tools import squad_evaluate_v1_1 as official
    examples, features = our_features(DEV, tokenizers[0], CONFIGS[0], False)
    dataset = json.loads(DEV.read_text(encoding="utf-8"))["data"]
    answers = squad_predictions.predictions(examples, features, _random_results(features, 4), tokenizers[0])
    truths = {e.qas_id: e.answers for e in examples}
    perturbed = {"apple-1": "The " + truths["apple-1"][1] + ".", "apple-2": truths["apple-2"][0].upper(),
                 "apple-14": "an apology and a fix", "apple-3": "", "apple-8": "Cupertino , California",
                 "apple-10": "more than 1 billion devices", "apple-11": "Adrian", "apple-12": "Jobs Jobs",
                 "asparagales-10": "An Asparagi", "alkali-1": "José Bonifacio de Andrada"}
    for predictions in (answers, {**answers, **perturbed}, {k: v for k, v in perturbed.items()}):
        ours = squad_predictions.evaluate(examples, predictions)
        theirs = official.evaluate(dataset, predictions)
        assert ours["exact_match"] == pytest.approx(100 * theirs["exact_match"], abs=1e-9)
        assert ours["f1"] == pytest.approx(100 * theirs["final_f1"], abs=1e-9)
    assert 0 < squad_predictions.evaluate(examples, {**answers, **perturbed})["f1"] < 100


def _write(tmp_path, data, name="squad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_bad_squad_files_are_one_line_errors_naming_them(tmp_path):
    train = json.loads(TRAIN.read_text(encoding="utf-8"))
    qa = train["data"][0]["paragraphs"][0]["qas"]

    def variant(change):
        data = json.loads(json.dumps(train))
        change(data)
        return data
    cases = [
        (tmp_path / "absent.json", True, "no such file: pass a SQuAD v1.1 JSON"),
        (_write(tmp_path, TRAIN.read_text(encoding="utf-8")[:3000], "cut.json"), True,
         "not JSON (Unterminated string starting at: line 8 column 17): pass the SQuAD v1.1 file unchanged"),
        (_write(tmp_path, {"version": "1.1"}, "nodata.json"), True, "no \"data\" list at the top"),
        (_write(tmp_path, variant(lambda d: d["data"][2]["paragraphs"][0].pop("context")), "noctx.json"), True,
         "data[2].paragraphs[0]: no \"context\" string"),
        (_write(tmp_path, variant(lambda d: d["data"][0]["paragraphs"][0]["qas"][3].update(id=qa[0]["id"])),
                "dup.json"), False, "data[0].paragraphs[0].qas[3]: question id 'apple-1' also at "
                                    "data[0].paragraphs[0].qas[0]: ids must be unique"),
        (_write(tmp_path, variant(lambda d: d["data"][0]["paragraphs"][0]["qas"][1]["answers"][0].update(
            answer_start="12")), "offset.json"), False, "data[0].paragraphs[0].qas[1] (id apple-2): an answer needs"),
        (_write(tmp_path, variant(lambda d: d["data"][3]["paragraphs"][0]["qas"][1].update(answers=[])),
                "none.json"), True, "question 'ankara-2': has 0 answers, training needs exactly 1"),
        (_write(tmp_path, variant(lambda d: d["data"][7]["paragraphs"][0]["qas"][0]["answers"][0].update(
            answer_start=130)), "outside.json"), True,
         "question 'alphabet-1': answer_start 130 with a 11-character answer is outside its 136-character context"),
    ]
    for path, is_training, message in cases:
        with pytest.raises(UserError) as err:
            squad.read_examples(str(path), is_training, warn=pytest.fail)
        assert str(err.value).startswith(f"{path}: {message}"), (path.name, str(err.value))
        assert "\n" not in str(err.value)


def test_a_long_question_is_cut_as_the_reference_with_one_warning_line(tokenizers):
    warnings = []
    examples = squad.read_examples(str(DEV), False, warn=warnings.append)
    examples[5].question_text = "What " + "exactly " * 80 + "broke?"
    examples[9].question_text = "Who " + "really " * 66 + "called it?"
    features = squad.convert_examples_to_features(examples, tokenizers[0], is_training=False, source="dev.json",
                                                  warn=warnings.append)
    assert warnings == ["dev.json: 2 questions are longer than max_query_length=64 WordPiece tokens (the longest, "
                        "'apple-6', has 83): only their first 64 tokens are used, as run_squad.py does"]
    cut = next(f for f in features if f.example_index == 5)
    assert cut.tokens[:66] == ["[CLS]", "what"] + ["exactly"] * 63 + ["[SEP]"]
