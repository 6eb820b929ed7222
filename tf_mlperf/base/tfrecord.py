"""TFRecord framing and tf.train.Example encoding without importing TensorFlow.

TensorFlow's import alone costs seconds per process; the wire formats are tiny:
- TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data), all little-endian.
- Example{features: Features{feature: map<string, Feature>}} with packed Int64List / FloatList values.
We emit the map entries sorted by key, which is what `SerializeToString(deterministic=True)` produces,
so our records are byte-equal to their canonical re-serialization.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Iterator

import google_crc32c
from tf_mlperf.base.errors import UserError


_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


def read_records(path) -> Iterator[bytes]:
    """Yield each record's payload, checking both CRCs (a truncated or corrupt file is an UserError)."""
    with open(path, "rb") as stream:
        yield from _read_stream(stream, path)


def record_spans(path: str, fix: str = "rewrite it with the data-prep command that wrote it") -> list[tuple[int, int]]:
    """(offset, length) of every record payload in a TFRecord file, from its 12-byte headers only (no CRC check,
    no payload read: random access for the inference QSL)."""
    size, offset, spans = os.path.getsize(path), 0, []
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(12)
            length = struct.unpack("<Q", header[:8])[0] if len(header) == 12 else None
            if length is None or offset + 16 + length > size:
                raise UserError(path, f"truncated TFRecord file (record at byte {offset}): {fix}")
            spans.append((offset + 12, length))
            offset += 16 + length
    return spans


def _read_stream(stream: BinaryIO, path) -> Iterator[bytes]:
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12 or _masked_crc(header[:8]) != header[8:]:
            raise UserError(f"{path}: corrupt or truncated TFRecord header")
        (length,) = struct.unpack("<Q", header[:8])
        data = stream.read(length)
        footer = stream.read(4)
        if len(data) < length or _masked_crc(data) != footer:
            raise UserError(f"{path}: corrupt or truncated TFRecord data")
        yield data


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class ExampleEncoder:
    """Builds Example bytes from pre-encoded pieces.

    Ints < table_size go through a precomputed varint table; constant features (0/1 masks, weights,
    labels) are passed as ready bytes, so the hot path is one table lookup per token id.
    """

    def __init__(self, table_size: int):
        self._varints = [_varint(i) for i in range(table_size)]

    def varint(self, value: int) -> bytes:
        return self._varints[value] if value < len(self._varints) else _varint(value)

    def packed_ints(self, values) -> bytes:
        return b"".join(map(self._varints.__getitem__, values))

    def int64_feature(self, packed: bytes) -> bytes:
        """Feature{int64_list (field 3): Int64List{value (field 1, packed)}}."""
        int64_list = b"\x0a" + self.varint(len(packed)) + packed
        return b"\x1a" + self.varint(len(int64_list)) + int64_list

    def float_feature(self, packed: bytes) -> bytes:
        """Feature{float_list (field 2): FloatList{value (field 1, packed)}}."""
        float_list = b"\x0a" + self.varint(len(packed)) + packed
        return b"\x12" + self.varint(len(float_list)) + float_list

    def example(self, features: dict[str, bytes]) -> bytes:
        """features: name -> serialized Feature; entries sorted by name (deterministic map order)."""
        entries = []
        for name in sorted(features):
            key, value = name.encode(), features[name]
            entry = b"\x0a" + self.varint(len(key)) + key + b"\x12" + self.varint(len(value)) + value
            entries.append(b"\x0a" + self.varint(len(entry)) + entry)
        body = b"".join(entries)
        return b"\x0a" + self.varint(len(body)) + body
