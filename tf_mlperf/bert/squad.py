"""SQuAD v1.1 for BERT, exactly as the references: features as google-research/bert `run_squad.py` (which the
MLPerf Inference reference copies as `language/bert/create_squad_data.py`), answers and scores as the MLPerf
Inference `language/bert/accuracy-squad.py` and the official `evaluate-v1.1.py`.

Pure Python (no TensorFlow), used by the fine-tuning trainer (tf-mlperf-squad) and the inference harness.

* Examples (`read_examples`): each context is split on whitespace (space, tab, CR, LF, U+202F, as the
  reference; a no-break space is *not* whitespace there) into `doc_tokens`; a training answer's character
  offset is mapped to its first and last word. Training needs exactly one answer per question; an answer whose
  text cannot be found again in its words is skipped with a warning, as the reference does.
* Features (`convert_examples_to_features`): `[CLS] question [SEP] context-span [SEP]`, zero-padded to
  `max_seq_length` (384); the question is WordPiece-tokenized and cut to `max_query_length` (64); a context
  longer than `max_seq_length - len(question) - 3` tokens is cut into spans that start every `doc_stride`
  (128) tokens; `token_is_max_context` marks, for each context token, the span in which it has the most
  context (min(left, right) + 0.01 * span length); for training, the answer's word span is refined to the
  WordPiece tokens of the answer text (`_improve_answer_span`) and a span that does not contain the whole
  answer gets start = end = 0 ([CLS]). unique_id starts at 1,000,000,000.
* Predictions and scores: squad_predictions.py.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import sys
from typing import Callable, Iterable, Sequence

from tf_mlperf.base import tokenization as wordpiece
from tf_mlperf.base.errors import UserError

MAX_SEQ_LENGTH = 384
DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
UNIQUE_ID_BASE = 1_000_000_000
# MLPerf Inference bert: the reference model's F1 on dev-v1.1.json, and the bert-99 / bert-99.9 targets.
REFERENCE_F1 = 90.874
TARGET_F1 = {"bert-99": 0.99 * REFERENCE_F1, "bert-99.9": 0.999 * REFERENCE_F1}


def warn_stderr(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


@dataclasses.dataclass
class SquadExample:
    qas_id: str
    question_text: str
    doc_tokens: list[str]
    answers: list[str]                       # every answer text (the dev set has several)
    orig_answer_text: str | None = None      # training: the one answer
    start_position: int | None = None        # training: its first and last word in doc_tokens
    end_position: int | None = None


@dataclasses.dataclass
class InputFeatures:
    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list[str]
    token_to_orig_map: dict[int, int]
    token_is_max_context: dict[int, bool]
    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    start_position: int | None = None       # training only
    end_position: int | None = None


# ---------------------------------------------------------------- reading

def _is_whitespace(c: str) -> bool:
    return c in (" ", "\t", "\r", "\n") or ord(c) == 0x202F


def load_json(path: str) -> dict:
    """The SQuAD JSON as a dict, after checking the layout every later step relies on."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(path, "no such file: pass a SQuAD v1.1 JSON (dev-v1.1.json or train-v1.1.json; "
                        "docs/inference.md says where to get them)") from None
    except json.JSONDecodeError as e:
        raise UserError(path, f"not JSON ({e.msg}: line {e.lineno} column {e.colno}): pass the SQuAD v1.1 "
                        "file unchanged (is it cut off?)") from None
    except UnicodeDecodeError as e:
        raise UserError(path, f"not UTF-8 text ({e.reason} at byte {e.start}): pass the SQuAD v1.1 JSON") from None
    check_layout(path, data)
    return data


def check_layout(path: str, data) -> None:
    def bad(where: str, what: str):
        raise UserError(f"{path}: {where}" if where else path,
                        f"{what}; a SQuAD v1.1 file is {{\"data\": [{{\"paragraphs\": [{{\"context\": str, "
                        "\"qas\": [{\"id\", \"question\", \"answers\": [{\"text\", \"answer_start\"}]}]}]}]}")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        bad("", "no \"data\" list at the top")
    seen: dict[str, str] = {}
    for i, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            bad(f"data[{i}]", "no \"paragraphs\" list")
        for j, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{i}].paragraphs[{j}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                bad(where, "no \"context\" string")
            if not isinstance(paragraph.get("qas"), list):
                bad(where, "no \"qas\" list")
            for k, qa in enumerate(paragraph["qas"]):
                qwhere = f"{where}.qas[{k}]"
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) \
                        or not isinstance(qa.get("question"), str):
                    bad(qwhere, "a question needs an \"id\" and a \"question\" string")
                if not isinstance(qa.get("answers", []), list):
                    bad(qwhere, "\"answers\" is not a list")
                for answer in qa.get("answers", []):
                    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) \
                            or not isinstance(answer.get("answer_start"), int):
                        bad(f"{qwhere} (id {qa['id']})", "an answer needs \"text\" (string) and \"answer_start\" "
                            "(integer)")
                if qa["id"] in seen:
                    bad(qwhere, f"question id {qa['id']!r} also at {seen[qa['id']]}: ids must be unique")
                seen[qa["id"]] = qwhere


def read_examples(path: str, is_training: bool, warn: Callable[[str], None] = warn_stderr) -> list[SquadExample]:
    """run_squad.py's read_squad_examples (SQuAD v1.1: no impossible questions)."""
    data = load_json(path)
    examples, unfound = [], []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            doc_tokens: list[str] = []
            char_to_word_offset: list[int] = []
            previous_is_whitespace = True
            for c in context:
                if _is_whitespace(c):
                    previous_is_whitespace = True
                else:
                    if previous_is_whitespace:
                        doc_tokens.append(c)
                    else:
                        doc_tokens[-1] += c
                    previous_is_whitespace = False
                char_to_word_offset.append(len(doc_tokens) - 1)
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa.get("answers", [])]
                example = SquadExample(qa["id"], qa["question"], doc_tokens, answers)
                if is_training:
                    if len(qa.get("answers", [])) != 1:
                        raise UserError(f"{path}: question {qa['id']!r}",
                                        f"has {len(answers)} answers, training needs exactly 1 (run_squad.py): "
                                        "train on train-v1.1.json, or give that question one answer")
                    answer = qa["answers"][0]
                    text, offset = answer["text"], answer["answer_start"]
                    if not text or offset < 0 or offset + len(text) > len(context):
                        raise UserError(f"{path}: question {qa['id']!r}",
                                        f"answer_start {offset} with a {len(text)}-character answer is outside its "
                                        f"{len(context)}-character context: fix the answer's offset")
                    start, end = char_to_word_offset[offset], char_to_word_offset[offset + len(text) - 1]
                    actual = " ".join(doc_tokens[start:end + 1])
                    cleaned = " ".join(text.strip().split())
                    if actual.find(cleaned) == -1:   # as the reference: skipped, not fatal
                        unfound.append(qa["id"])
                        continue
                    example.orig_answer_text, example.start_position, example.end_position = text, start, end
                examples.append(example)
    if unfound:
        warn(f"{path}: the answers of {len(unfound)} questions are not at their answer_start ({', '.join(unfound[:5])}"
             f"{', ...' if len(unfound) > 5 else ''}): those questions are left out of training, as run_squad.py "
             "does")
    if not examples:
        raise UserError(path, "holds no questions" + (" with a usable answer" if is_training else ""))
    return examples


# ---------------------------------------------------------------- features

class Tokenizer:
    """The reference FullTokenizer's interface on our WordPiece tokenizer (tf_mlperf/base/tokenization.py)."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True):
        try:
            self.vocab = wordpiece.check_bert_vocab(vocab_file, do_lower_case)
        except UserError as e:
            raise UserError("--vocab_file", str(e)) from None
        self.full = wordpiece.FullTokenizer(self.vocab, do_lower_case)
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str) -> list[str]:
        return self.full.tokenize(text)

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]


def basic_tokenize(text: str, do_lower_case: bool = True) -> list[str]:
    """The reference BasicTokenizer: our tokenizer's steps before WordPiece (clean, CJK, lower + strip
    accents, split on whitespace and punctuation)."""
    tokens = []
    for word in text.translate(_CLEAN).split():
        if do_lower_case:
            word = wordpiece._strip_accents(word.lower())                 # pylint: disable=protected-access
        for piece in wordpiece._split_on_punctuation(word):              # pylint: disable=protected-access
            tokens += piece.split()
    return tokens


_CLEAN = wordpiece._CleanTable()                                          # pylint: disable=protected-access

_DocSpan = collections.namedtuple("DocSpan", ["start", "length"])


def convert_examples_to_features(examples: Sequence[SquadExample], tokenizer, max_seq_length: int = MAX_SEQ_LENGTH,
                                 doc_stride: int = DOC_STRIDE, max_query_length: int = MAX_QUERY_LENGTH,
                                 is_training: bool = False, source: str = "SQuAD file",
                                 warn: Callable[[str], None] = warn_stderr) -> list[InputFeatures]:
    """run_squad.py's convert_examples_to_features; `source` names the file in messages."""
    if doc_stride < 1 or max_query_length < 1 or max_seq_length < max_query_length + 4:
        raise UserError(f"--max_seq_length={max_seq_length} --doc_stride={doc_stride} "
                        f"--max_query_length={max_query_length}",
                        "need doc_stride >= 1 and max_seq_length >= max_query_length + 4 ([CLS], 2 x [SEP] and at "
                        "least one context token); the reference uses 384, 128 and 64")
    features: list[InputFeatures] = []
    unique_id = UNIQUE_ID_BASE
    long_questions: list[tuple[str, int]] = []
    for example_index, example in enumerate(examples):
        query_tokens = tokenizer.tokenize(example.question_text)
        if len(query_tokens) > max_query_length:
            long_questions.append((example.qas_id, len(query_tokens)))
            query_tokens = query_tokens[:max_query_length]

        tok_to_orig_index, orig_to_tok_index, all_doc_tokens = [], [], []
        for i, token in enumerate(example.doc_tokens):
            orig_to_tok_index.append(len(all_doc_tokens))
            for sub_token in tokenizer.tokenize(token):
                tok_to_orig_index.append(i)
                all_doc_tokens.append(sub_token)

        tok_start_position = tok_end_position = None
        if is_training:
            tok_start_position = orig_to_tok_index[example.start_position]
            if example.end_position < len(example.doc_tokens) - 1:
                tok_end_position = orig_to_tok_index[example.end_position + 1] - 1
            else:
                tok_end_position = len(all_doc_tokens) - 1
            tok_start_position, tok_end_position = _improve_answer_span(
                all_doc_tokens, tok_start_position, tok_end_position, tokenizer, example.orig_answer_text)

        max_tokens_for_doc = max_seq_length - len(query_tokens) - 3   # [CLS], [SEP], [SEP]
        doc_spans = []
        start_offset = 0
        while start_offset < len(all_doc_tokens):
            length = min(len(all_doc_tokens) - start_offset, max_tokens_for_doc)
            doc_spans.append(_DocSpan(start_offset, length))
            if start_offset + length == len(all_doc_tokens):
                break
            start_offset += min(length, doc_stride)

        for doc_span_index, doc_span in enumerate(doc_spans):
            tokens = ["[CLS]", *query_tokens, "[SEP]"]
            segment_ids = [0] * len(tokens)
            token_to_orig_map: dict[int, int] = {}
            token_is_max_context: dict[int, bool] = {}
            for i in range(doc_span.length):
                split_token_index = doc_span.start + i
                token_to_orig_map[len(tokens)] = tok_to_orig_index[split_token_index]
                token_is_max_context[len(tokens)] = _check_is_max_context(doc_spans, doc_span_index,
                                                                          split_token_index)
                tokens.append(all_doc_tokens[split_token_index])
                segment_ids.append(1)
            tokens.append("[SEP]")
            segment_ids.append(1)
            input_ids = tokenizer.convert_tokens_to_ids(tokens)
            input_mask = [1] * len(input_ids)
            padding = max_seq_length - len(input_ids)
            input_ids += [0] * padding
            input_mask += [0] * padding
            segment_ids += [0] * padding

            start_position = end_position = None
            if is_training:
                doc_start, doc_end = doc_span.start, doc_span.start + doc_span.length - 1
                if tok_start_position >= doc_start and tok_end_position <= doc_end:
                    doc_offset = len(query_tokens) + 2
                    start_position = tok_start_position - doc_start + doc_offset
                    end_position = tok_end_position - doc_start + doc_offset
                else:                       # the span does not hold the whole answer: point at [CLS]
                    start_position = end_position = 0
            features.append(InputFeatures(unique_id, example_index, doc_span_index, tokens, token_to_orig_map,
                                          token_is_max_context, input_ids, input_mask, segment_ids,
                                          start_position, end_position))
            unique_id += 1
    if long_questions:
        qid, n = max(long_questions, key=lambda q: q[1])
        warn(f"{source}: {len(long_questions)} questions are longer than max_query_length={max_query_length} "
             f"WordPiece tokens (the longest, {qid!r}, has {n}): only their first {max_query_length} tokens are "
             "used, as run_squad.py does")
    return features


def _improve_answer_span(doc_tokens, input_start, input_end, tokenizer, orig_answer_text):
    """The token span whose text equals the tokenized answer, if one lies within the word span."""
    tok_answer_text = " ".join(tokenizer.tokenize(orig_answer_text))
    for new_start in range(input_start, input_end + 1):
        for new_end in range(input_end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == tok_answer_text:
                return new_start, new_end
    return input_start, input_end


def _check_is_max_context(doc_spans, cur_span_index, position) -> bool:
    best_score, best_span_index = None, None
    for span_index, doc_span in enumerate(doc_spans):
        end = doc_span.start + doc_span.length - 1
        if position < doc_span.start or position > end:
            continue
        score = min(position - doc_span.start, end - position) + 0.01 * doc_span.length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return cur_span_index == best_span_index
