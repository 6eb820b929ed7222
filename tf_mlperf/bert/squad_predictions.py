"""SQuAD v1.1 answers and scores, exactly as the references (squad.py has the features):

* Predictions (`predictions`): per question, over its features, the 20 best start and 20 best end logits,
  keeping start <= end within 30 tokens, both in the context, the start in its max-context span; ranked by
  start + end logit; the WordPiece text of the best is projected back onto the original words
  (`get_final_text`). accuracy-squad.py tokenizes the original text there with the full WordPiece tokenizer
  (transformers' BertTokenizer); run_squad.py uses the BasicTokenizer: `final_text="wordpiece"` (default, the
  inference reference) or `"basic"` (run_squad.py).
* Scores (`evaluate`): evaluate-v1.1.py's normalisation (lower case, no punctuation, no a/an/the, single
  spaces), exact match and token F1, each the maximum over the question's answers, in percent.
"""
from __future__ import annotations

import collections
import json
import re
import string
from typing import Callable, Iterable, Mapping, Sequence

from tf_mlperf.base.errors import UserError
from tf_mlperf.bert.squad import MAX_SEQ_LENGTH, InputFeatures, SquadExample, basic_tokenize

N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30
FINAL_TEXT = ("wordpiece", "basic")


# ---------------------------------------------------------------- predictions

RawResult = collections.namedtuple("RawResult", ["unique_id", "start_logits", "end_logits"])
_Prelim = collections.namedtuple("PrelimPrediction", ["feature_index", "start_index", "end_index", "start_logit",
                                                      "end_logit"])


def _best_indexes(logits, n_best_size: int) -> list[int]:
    ranked = sorted(enumerate(logits), key=lambda x: x[1], reverse=True)
    return [index for index, _ in ranked[:n_best_size]]


def get_final_text(pred_text: str, orig_text: str, tokenize: Callable[[str], list[str]]) -> str:
    """The part of `orig_text` (original words) that the normalised `pred_text` covers; `orig_text` when
    the character alignment fails (the reference heuristic)."""
    def strip_spaces(text):
        chars, ns_to_s = [], {}
        for i, c in enumerate(text):
            if c == " ":
                continue
            ns_to_s[len(chars)] = i
            chars.append(c)
        return "".join(chars), ns_to_s

    tok_text = " ".join(tokenize(orig_text))
    start_position = tok_text.find(pred_text)
    if start_position == -1:
        return orig_text
    end_position = start_position + len(pred_text) - 1
    orig_ns_text, orig_ns_to_s = strip_spaces(orig_text)
    tok_ns_text, tok_ns_to_s = strip_spaces(tok_text)
    if len(orig_ns_text) != len(tok_ns_text):
        return orig_text
    tok_s_to_ns = {tok_index: i for i, tok_index in tok_ns_to_s.items()}
    orig_start = orig_ns_to_s.get(tok_s_to_ns[start_position]) if start_position in tok_s_to_ns else None
    if orig_start is None:
        return orig_text
    orig_end = orig_ns_to_s.get(tok_s_to_ns[end_position]) if end_position in tok_s_to_ns else None
    if orig_end is None:
        return orig_text
    return orig_text[orig_start:orig_end + 1]


def predictions(examples: Sequence[SquadExample], features: Sequence[InputFeatures],
                results: Iterable[RawResult], tokenizer, n_best_size: int = N_BEST_SIZE,
                max_answer_length: int = MAX_ANSWER_LENGTH, final_text: str = "wordpiece") -> dict[str, str]:
    """qas_id -> answer text, as accuracy-squad.py's write_predictions (features without a result are
    skipped, as there; a question none of whose features has a valid span gets "empty")."""
    if final_text not in FINAL_TEXT:
        raise ValueError(f"final_text={final_text!r}: one of {FINAL_TEXT}")
    tokenize = tokenizer.tokenize if final_text == "wordpiece" else (
        lambda text: basic_tokenize(text, tokenizer.do_lower_case))
    by_example = collections.defaultdict(list)
    for feature in features:
        by_example[feature.example_index].append(feature)
    by_id = {result.unique_id: result for result in results}
    answers: dict[str, str] = {}
    for example_index, example in enumerate(examples):
        example_features = by_example[example_index]
        prelim = []
        for feature_index, feature in enumerate(example_features):
            result = by_id.get(feature.unique_id)
            if result is None:
                continue
            n_tokens = len(feature.tokens)
            end_indexes = _best_indexes(result.end_logits, n_best_size)
            for start_index in _best_indexes(result.start_logits, n_best_size):
                for end_index in end_indexes:
                    if start_index >= n_tokens or end_index >= n_tokens:
                        continue
                    if start_index not in feature.token_to_orig_map or end_index not in feature.token_to_orig_map:
                        continue
                    if not feature.token_is_max_context.get(start_index, False):
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    prelim.append(_Prelim(feature_index, start_index, end_index,
                                          result.start_logits[start_index], result.end_logits[end_index]))
        if not prelim:          # no valid span in any feature: the reference's nonce answer
            answers[example.qas_id] = "empty"
            continue
        # The reference ranks the candidates by start + end logit (a stable sort) and builds an n-best list of
        # distinct texts; its answer is that list's first entry, the text of the first candidate.
        pred = max(prelim, key=lambda p: p.start_logit + p.end_logit)
        feature = example_features[pred.feature_index]
        tok_text = " ".join(feature.tokens[pred.start_index:pred.end_index + 1])
        tok_text = " ".join(tok_text.replace(" ##", "").replace("##", "").strip().split())
        orig_start = feature.token_to_orig_map[pred.start_index]
        orig_end = feature.token_to_orig_map[pred.end_index]
        orig_text = " ".join(example.doc_tokens[orig_start:orig_end + 1])
        answers[example.qas_id] = get_final_text(tok_text, orig_text, tokenize)
    return answers


# ---------------------------------------------------------------- evaluate-v1.1

def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


_PUNCTUATION = frozenset(string.punctuation)


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def evaluate(examples: Sequence[SquadExample], answers: Mapping[str, str], source: str = "SQuAD file") -> dict:
    """{"exact_match": %, "f1": %} over every question of `examples`; an unanswered question scores 0."""
    exact = f1 = 0.0
    for example in examples:
        if not example.answers:
            raise UserError(f"{source}: question {example.qas_id!r}", "has no answers to score against: pass the "
                            "dev set with its answers (dev-v1.1.json)")
        if example.qas_id not in answers:
            continue
        prediction = answers[example.qas_id]
        exact += max(exact_match_score(prediction, truth) for truth in example.answers)
        f1 += max(f1_score(prediction, truth) for truth in example.answers)
    total = len(examples)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def format_result(scores: Mapping[str, float]) -> str:
    """evaluate-v1.1.py's output line."""
    return json.dumps({"exact_match": scores["exact_match"], "f1": scores["f1"]})


# ---------------------------------------------------------------- logits as the SUT returns them

def results_from_logits(features: Sequence[InputFeatures], logits) -> list[RawResult]:
    """RawResults from per-feature logits [n, seq, 2] (start, end) in feature order."""
    return [RawResult(f.unique_id, [float(x) for x in row[:, 0]], [float(x) for x in row[:, 1]])
            for f, row in zip(features, logits)]


def results_from_accuracy_log(entries: Sequence[dict], features: Sequence[InputFeatures], dtype="float32",
                              max_seq_length: int = MAX_SEQ_LENGTH, source: str = "accuracy log") -> list[RawResult]:
    """accuracy-squad.py's load_loadgen_log: each entry's data is the feature's logits [seq, 2] (start, end
    interleaved) as `dtype`; shorter outputs are padded with -10000."""
    import numpy as np
    results = []
    for entry in entries:
        index = entry["qsl_idx"]
        if not 0 <= index < len(features):
            raise UserError(source, f"qsl_idx {index} is outside the {len(features)} features: is the SQuAD file "
                            "the one of the run?")
        logits = np.frombuffer(bytes.fromhex(entry["data"]), dtype)
        if logits.size % 2 or logits.size // 2 > max_seq_length:
            raise UserError(source, f"qsl_idx {index}: {logits.size} values of {dtype}, expected [n <= "
                            f"{max_seq_length}, 2] logits")
        logits = logits.reshape(-1, 2)
        start = np.full(max_seq_length, -10000.0)
        end = np.full(max_seq_length, -10000.0)
        start[:len(logits)], end[:len(logits)] = logits[:, 0], logits[:, 1]
        results.append(RawResult(features[index].unique_id, start.tolist(), end.tolist()))
    return results

