"""create_pretraining_data: masked-LM / next-sentence examples, equal to the MLPerf reference's.

Fidelity rules (the reference is google-research/bert's create_pretraining_data.py as used by MLPerf):
- one `random.Random(random_seed)` drives everything, and we make exactly the reference's calls in the
  reference's order: shuffle(documents); per dupe, per document: random() [+ randint] for the target
  length, randint for the A/B split, random() for "random next", randint for the random document and
  start, random() per truncation step, shuffle(candidates) and random() [+ random()/randint] per masked
  token; finally shuffle(instances);
- tokens are handled as vocab ids (the reference converts strings to ids at write time; the mapping is
  one-to-one, and [CLS]/[SEP] can never come out of the tokenizer because '[' and ']' are punctuation).
Speed comes from the memoized tokenizer, ids instead of strings, inlined shuffles and hand-encoded
Examples; the random stream is untouched.
"""
from __future__ import annotations

import dataclasses
import random
import struct

from tf_mlperf.base import bert_features as features, tokenization
from tf_mlperf.base.tfrecord import ExampleEncoder


@dataclasses.dataclass(frozen=True)
class PretrainingParams:
    max_seq_length: int = features.MAX_SEQ_LENGTH
    max_predictions_per_seq: int = features.MAX_PREDICTIONS_PER_SEQ
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    random_seed: int = 12345
    do_lower_case: bool = True


def read_documents(paths, tokenizer: tokenization.FullTokenizer) -> list[list[list[int]]]:
    """Documents -> sentences -> token ids. A blank line (after strip) starts a new document."""
    documents: list[list[list[int]]] = [[]]
    for path in paths:
        for line in tokenization.read_text_lines(path):
            line = line.strip()
            if not line:
                documents.append([])
                continue
            ids = tokenizer.tokenize_ids(line)
            if ids:
                documents[-1].append(ids)
    return [doc for doc in documents if doc]


_BIT_LENGTHS = [1]  # _BIT_LENGTHS[i] == (i + 1).bit_length(), grown on demand


def _shuffle(rng: random.Random, items: list) -> None:
    """random.Random.shuffle inlined: the same getrandbits(k) calls as _randbelow_with_getrandbits(i + 1)
    (draw k = bit_length(i + 1) bits, redraw while >= i + 1), without the per-step method calls."""
    while len(_BIT_LENGTHS) < len(items):
        _BIT_LENGTHS.append((len(_BIT_LENGTHS) + 1).bit_length())
    getrandbits, bit_lengths = rng.getrandbits, _BIT_LENGTHS
    for i in range(len(items) - 1, 0, -1):
        bits = bit_lengths[i]
        j = getrandbits(bits)
        while j > i:
            j = getrandbits(bits)
        items[i], items[j] = items[j], items[i]


def _concat(segments: list[list[int]]) -> list[int]:
    out: list[int] = []
    for segment in segments:
        out += segment
    return out


class InstanceMaker:
    """Replays the reference's instance creation and emits serialized tf.train.Example bytes."""

    def __init__(self, params: PretrainingParams, vocab: dict[str, int]):
        self.p = params
        self.vocab_size = len(vocab)
        self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in (tokenization.CLS, tokenization.SEP,
                                                                     tokenization.MASK))
        self.encoder = ExampleEncoder(max(self.vocab_size, params.max_seq_length) + 1)
        self.one = struct.pack("<f", 1.0)
        self.zero = struct.pack("<f", 0.0)

    def create(self, documents: list[list[list[int]]]) -> list[bytes]:
        rng = random.Random(self.p.random_seed)
        _shuffle(rng, documents)
        examples: list[bytes] = []
        for _ in range(self.p.dupe_factor):
            for index in range(len(documents)):
                examples.extend(self._from_document(documents, index, rng))
        _shuffle(rng, examples)
        return examples

    def _from_document(self, documents, document_index: int, rng: random.Random) -> list[bytes]:
        document = documents[document_index]
        max_num_tokens = self.p.max_seq_length - 3
        target_length = max_num_tokens
        if rng.random() < self.p.short_seq_prob:
            target_length = rng.randint(2, max_num_tokens)
        examples = []
        chunk: list[list[int]] = []
        chunk_length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target_length:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = _concat(chunk[:a_end])
                tokens_b: list[int] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_length - len(tokens_a)
                    # The reference retries 10 times to avoid picking the current document.
                    for _ in range(10):
                        random_index = rng.randint(0, len(documents) - 1)
                        if random_index != document_index:
                            break
                    random_document = documents[random_index]
                    for segment in random_document[rng.randint(0, len(random_document) - 1):]:
                        tokens_b += segment
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(chunk) - a_end  # the unused segments go back to the document
                else:
                    is_random_next = False
                    tokens_b = _concat(chunk[a_end:])
                tokens_a, tokens_b = self._truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
                examples.append(self._masked_example(tokens_a, tokens_b, is_random_next, rng))
                chunk = []
                chunk_length = 0
            i += 1
        return examples

    @staticmethod
    def _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng):
        """Drop tokens from the longer side (front or back, by coin flip) until the pair fits."""
        a_lo, a_hi, b_lo, b_hi = 0, len(tokens_a), 0, len(tokens_b)
        while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
            if a_hi - a_lo > b_hi - b_lo:
                if rng.random() < 0.5:
                    a_lo += 1
                else:
                    a_hi -= 1
            elif rng.random() < 0.5:
                b_lo += 1
            else:
                b_hi -= 1
        return tokens_a[a_lo:a_hi], tokens_b[b_lo:b_hi]

    def _masked_example(self, tokens_a, tokens_b, is_random_next, rng) -> bytes:
        p = self.p
        tokens = [self.cls_id, *tokens_a, self.sep_id, *tokens_b, self.sep_id]
        n_a, n = len(tokens_a), len(tokens)
        # Every position except [CLS] and the two [SEP]s, in ascending order, then shuffled.
        candidates = list(range(1, n_a + 1)) + list(range(n_a + 2, n - 1))
        _shuffle(rng, candidates)
        num_to_predict = min(p.max_predictions_per_seq, max(1, int(round(n * p.masked_lm_prob))))
        output = list(tokens)
        masked = sorted(candidates[:num_to_predict])
        random_, randint, vocab_last = rng.random, rng.randint, self.vocab_size - 1
        for index in candidates[:num_to_predict]:  # candidates are distinct: the reference's skip never fires
            if random_() < 0.8:
                output[index] = self.mask_id
            elif random_() < 0.5:
                pass  # keep the original token
            else:
                output[index] = randint(0, vocab_last)  # vocab ids are the vocab_words indexes
        return self._encode(output, n_a, masked, [tokens[i] for i in masked], is_random_next)

    def _encode(self, input_ids, n_a, positions, label_ids, is_random_next) -> bytes:
        p, enc = self.p, self.encoder
        n, pad = len(input_ids), p.max_seq_length - len(input_ids)
        n_masked, mask_pad = len(positions), p.max_predictions_per_seq - len(positions)
        # Every value of input_mask / segment_ids / labels is 0 or 1, whose varint is that single byte.
        features = {
            "input_ids": enc.int64_feature(enc.packed_ints(input_ids) + b"\x00" * pad),
            "input_mask": enc.int64_feature(b"\x01" * n + b"\x00" * pad),
            "segment_ids": enc.int64_feature(b"\x00" * (n_a + 2) + b"\x01" * (n - n_a - 2) + b"\x00" * pad),
            "masked_lm_positions": enc.int64_feature(enc.packed_ints(positions) + b"\x00" * mask_pad),
            "masked_lm_ids": enc.int64_feature(enc.packed_ints(label_ids) + b"\x00" * mask_pad),
            "masked_lm_weights": enc.float_feature(self.one * n_masked + self.zero * mask_pad),
            "next_sentence_labels": enc.int64_feature(b"\x01" if is_random_next else b"\x00"),
        }
        return enc.example(features)
