"""`records` (one TFRecord file per text part, = the reference's create_pretraining_data.py run on that
part alone) and `pick-eval` (= the reference's pick_eval_samples.py)."""
from __future__ import annotations

import pathlib

from data_prep.fileio import atomic_output
from data_prep.wiki import pretraining
from tf_mlperf.base import tokenization
from tf_mlperf.base.tfrecord import frame_record, read_records
from tf_mlperf.base.facts import BERT_EVAL_EXAMPLES as DEFAULT_NUM_EVAL_EXAMPLES
from tf_mlperf.base.errors import UserError

_WORKER_STATE: dict = {}  # per process: one tokenizer (and its word memo) reused for every part


def _maker_and_tokenizer(vocab_file: str, params: pretraining.PretrainingParams):
    key = (vocab_file, params)
    if key not in _WORKER_STATE:
        vocab = tokenization.check_bert_vocab(vocab_file, params.do_lower_case)
        _WORKER_STATE.clear()
        _WORKER_STATE[key] = (pretraining.InstanceMaker(params, vocab),
                              tokenization.FullTokenizer(vocab, params.do_lower_case))
    return _WORKER_STATE[key]


def create_examples(text_files, vocab_file, params: pretraining.PretrainingParams) -> list[bytes]:
    maker, tokenizer = _maker_and_tokenizer(str(vocab_file), params)
    documents = pretraining.read_documents(text_files, tokenizer)
    if not documents:
        raise UserError(f"{', '.join(map(str, text_files))}: no text to make examples from")
    return maker.create(documents)


def write_tfrecord(examples: list[bytes], dst: pathlib.Path) -> None:
    with atomic_output(dst) as tmp:
        with open(tmp, "wb") as out:
            for example in examples:
                out.write(frame_record(example))


def make_records(src: pathlib.Path, dst: pathlib.Path, vocab_file, params: pretraining.PretrainingParams) -> int:
    examples = create_examples([src], vocab_file, params)
    write_tfrecord(examples, dst)
    return len(examples)


def pick_eval(src: pathlib.Path, dst: pathlib.Path, num_examples: int = DEFAULT_NUM_EVAL_EXAMPLES) -> int:
    """Examples at int(i * (N / num_examples)) for i < num_examples, as the reference (float ratio).

    Records are copied as they are: the reference parses and re-serializes them, which keeps content."""
    records = list(read_records(src))
    if not records:
        raise UserError(f"{src}: no records to pick eval examples from")
    ratio = len(records) / num_examples
    write_tfrecord([records[int(i * ratio)] for i in range(num_examples)], dst)
    return num_examples
