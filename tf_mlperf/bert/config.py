"""BERT model configuration (the reference's `bert_config.json`) and the closed-division eval cadence."""
from __future__ import annotations

import dataclasses
import json
import math


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Field names and meaning as the reference `modeling.BertConfig` / `bert_config.json`."""
    vocab_size: int = 30522
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, values: dict) -> "BertConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"bert config: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The MLPerf reference bert_config.json (BERT-large, uncased, 512 positions, 2 segment types).
BERT_LARGE = BertConfig()
# A 2-layer model small enough to fit the fixture sample on 2 CPU cores in minutes (smoke runs).
BERT_TINY = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
PRESETS = {"large": BERT_LARGE, "tiny": BERT_TINY}


def load(config_file: str | None, preset: str = "large") -> BertConfig:
    """`--bert_config_file` when given (the reference JSON), else a named preset."""
    if config_file:
        return BertConfig.from_json_file(config_file)
    if preset not in PRESETS:
        raise ValueError(f"--bert_preset={preset!r}: expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


def eval_interval_samples(global_batch_size: int) -> int:
    """The rules' eval cadence: floor(0.05 * (230.23 * GBS + 3,000,000) / 25,000) * 25,000 samples."""
    return int(math.floor(0.05 * (230.23 * global_batch_size + 3_000_000) / 25_000) * 25_000)
