"""Sequence packing for BERT pretraining: several short sequences share one `max_seq_length` row.

The packer keeps the training rules' semantics of a batch: every micro-batch holds exactly `seqs_per_batch`
sequences (so the global batch, the sample counts, `epoch_num`, `train_samples` and the eval cadence stay in
sequences, exactly as unpacked), laid out in a fixed number of `rows` (static shapes for XLA), at most
`max_per_row` sequences per row. Sequences are taken oldest first from the stream (the shuffled input); when the
oldest `seqs_per_batch` do not fit the rows, the youngest of the longest is swapped for the oldest shorter one
and waits at the head of a queue for the next micro-batch. Every sequence is used exactly once; the queue is
bounded (2 x seqs_per_batch; more means too few rows: PackingError), so a sequence waits a few micro-batches
at most, and the order stays the shuffled one up to that.

Layout of one packed micro-batch (S = max_seq_length, P = max_predictions_per_seq, b = seqs_per_batch,
R = rows); per-token features are [R, S], per-sequence ones [b, ...]:
  input_ids, segment_ids, input_mask  the sequences' real tokens side by side, zero padding after them
  position_ids                         0.. restarting at every sequence (the position embeddings it had unpacked)
  sequence_ids                         1..k: which sequence of its row a token belongs to (0: padding); the
                                       model attends only within the same id (block-diagonal attention)
  masked_lm_positions [b, P]           flat index row * S + offset + position into the micro-batch's R x S tokens
  masked_lm_ids, masked_lm_weights     unchanged, per sequence
  next_sentence_labels [b, 1]          unchanged, per sequence
  sequence_starts [b]                  flat index of each sequence's [CLS] (its NSP pooler input)
Pure NumPy: the training input pipeline (tf_mlperf.bert.input_pipeline) and the benchmarks use it.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

TOKEN_FEATURES = ("input_ids", "segment_ids")
SEQUENCE_FEATURES = ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


class PackingError(ValueError):
    """The rows cannot hold the sequences (too few rows for the data's lengths)."""


def sequence_length(example: dict) -> int:
    return int(np.count_nonzero(example["input_mask"]))


def first_fit_decreasing(lengths: Iterable[int], capacity: int, max_per_row: int) -> list[list[int]]:
    """Offline first-fit-decreasing: indices of `lengths` grouped into rows (the ceiling of what packing the
    whole data set at once could reach; used for the reported packing factor)."""
    rows: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(lengths := list(lengths))), key=lambda j: -lengths[j]):
        for r, used in enumerate(fill):
            if used + lengths[i] <= capacity and len(rows[r]) < max_per_row:
                rows[r].append(i)
                fill[r] += lengths[i]
                break
        else:
            rows.append([i])
            fill.append(lengths[i])
    return rows


class Packer:
    """Online packer: examples in, packed micro-batches of exactly `seqs_per_batch` sequences out."""

    def __init__(self, seqs_per_batch: int, rows: int, seq_length: int, max_per_row: int = 3,
                 max_carry: int = 0):
        if rows < 1 or seqs_per_batch < 1 or max_per_row < 1:
            raise ValueError("seqs_per_batch, rows and max_per_row must be positive")
        if rows * max_per_row < seqs_per_batch:
            raise PackingError(f"{rows} rows x {max_per_row} sequences per row cannot hold {seqs_per_batch} "
                               "sequences")
        if rows > seqs_per_batch:
            raise PackingError(f"{rows} rows for {seqs_per_batch} sequences: packing would add rows")
        self.b, self.rows, self.seq_length, self.k = seqs_per_batch, rows, seq_length, max_per_row
        self.carry: list[dict] = []
        self.max_carry = max_carry or 2 * seqs_per_batch

    def pack(self, stream: Iterator[dict]) -> dict | None:
        """The next packed micro-batch from `stream` (examples with `_length` and `_order`), or None when the
        stream ends first (then `self.carry` holds every example drawn and not returned).

        The oldest `seqs_per_batch` sequences are the candidates; while first-fit-decreasing needs more rows
        than there are, the youngest of the longest candidates is swapped for the oldest shorter sequence
        (drawn from the stream when none is waiting). The swapped-out ones wait at the head of the queue."""
        pool = self.carry
        while len(pool) < self.b:
            ex = next(stream, None)
            if ex is None:
                self.carry = pool
                return None
            pool.append(ex)
        chosen, waiting = pool[:self.b], pool[self.b:]
        while True:
            rows = first_fit_decreasing([ex["_length"] for ex in chosen], self.seq_length, self.k)
            if len(rows) <= self.rows:
                break
            longest = max(ex["_length"] for ex in chosen)
            out = max((i for i, ex in enumerate(chosen) if ex["_length"] == longest),
                      key=lambda i: chosen[i]["_order"])
            j = next((j for j, ex in enumerate(waiting) if ex["_length"] < longest), None)
            while j is None:
                ex = next(stream, None)
                if ex is None:
                    self.carry = chosen + waiting
                    return None
                waiting.append(ex)
                self._check_carry(waiting)
                j = len(waiting) - 1 if ex["_length"] < longest else None
            chosen[out], waiting[j] = waiting[j], chosen[out]
        self.carry = sorted(waiting, key=lambda ex: ex["_order"])
        return self._assemble(chosen, rows)

    def _check_carry(self, rest: list[dict]) -> None:
        if len(rest) > self.max_carry:
            raise PackingError(f"{self.rows} rows per micro-batch are too few for {self.b} sequences of this "
                               f"data ({len(rest)} left over for the next micro-batch): pass more rows")

    def _assemble(self, placed: list[dict], members: list[list[int]]) -> dict:
        R, S, b = self.rows, self.seq_length, self.b
        out = {name: np.zeros([R, S], np.int32) for name in
               ("input_ids", "segment_ids", "input_mask", "position_ids", "sequence_ids")}
        starts = np.zeros([b], np.int32)
        positions = np.zeros([b, placed[0]["masked_lm_positions"].shape[0]], np.int32)
        for r, row in enumerate(members):
            offset = 0
            for j, i in enumerate(row):
                ex, n = placed[i], placed[i]["_length"]
                for name in TOKEN_FEATURES:
                    out[name][r, offset:offset + n] = ex[name][:n]
                out["input_mask"][r, offset:offset + n] = 1
                out["position_ids"][r, offset:offset + n] = np.arange(n)
                out["sequence_ids"][r, offset:offset + n] = j + 1
                starts[i] = r * S + offset
                positions[i] = r * S + offset + ex["masked_lm_positions"]
                offset += n
        out["sequence_starts"] = starts
        out["masked_lm_positions"] = positions
        for name in SEQUENCE_FEATURES:
            out[name] = np.stack([ex[name] for ex in placed])
        return out


def with_lengths(examples: Iterable[dict]) -> Iterator[dict]:
    """Adds `_length` (real tokens) and `_order` (position in the stream) to each example."""
    for order, ex in enumerate(examples):
        ex = dict(ex)
        ex["_length"], ex["_order"] = sequence_length(ex), order
        yield ex


def packed_batches(examples: Iterable[dict], seqs_per_batch: int, rows: int, seq_length: int,
                   max_per_row: int = 3, micro_batches: int = 1) -> Iterator[dict]:
    """Per-replica batches of `micro_batches` packed micro-batches stacked along the first axis (flat indices
    stay local to each micro-batch, which is how the train step splits them)."""
    packer = Packer(seqs_per_batch, rows, seq_length, max_per_row)
    stream = with_lengths(examples)
    while True:
        parts = []
        for _ in range(micro_batches):
            part = packer.pack(stream)
            if part is None:
                return
            parts.append(part)
        yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def rows_needed(lengths: Iterable[int], seqs_per_batch: int, seq_length: int, max_per_row: int = 3,
                slack: float = 1.0) -> int:
    """Rows per micro-batch for the length distribution `lengths`: the offline first-fit-decreasing ratio
    (rows per sequence) times `seqs_per_batch`, times `slack`, rounded up, at least enough for `max_per_row`."""
    lengths = list(lengths)
    ratio = len(first_fit_decreasing(lengths, seq_length, max_per_row)) / max(1, len(lengths))
    rows = int(np.ceil(seqs_per_batch * ratio * slack))
    return int(min(seqs_per_batch, max(rows, -(-seqs_per_batch // max_per_row))))
