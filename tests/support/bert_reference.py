"""The reference BERT's variables (TF1 names and shapes) and a small config, shared by the BERT tests."""
from __future__ import annotations

from tf_mlperf.bert.config import BertConfig

SMALL = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=40, type_vocab_size=2)


def reference_variable_shapes(c: BertConfig) -> dict[str, tuple[int, ...]]:
    """Trainable variables of the reference modeling.BertModel + run_pretraining heads, by TF1 name."""
    h, i = c.hidden_size, c.intermediate_size
    shapes = {"bert/embeddings/word_embeddings": (c.vocab_size, h),
              "bert/embeddings/token_type_embeddings": (c.type_vocab_size, h),
              "bert/embeddings/position_embeddings": (c.max_position_embeddings, h),
              "bert/embeddings/LayerNorm/gamma": (h,), "bert/embeddings/LayerNorm/beta": (h,)}
    for n in range(c.num_hidden_layers):
        p = f"bert/encoder/layer_{n}"
        for name in ("attention/self/query", "attention/self/key", "attention/self/value",
                     "attention/output/dense"):
            shapes[f"{p}/{name}/kernel"], shapes[f"{p}/{name}/bias"] = (h, h), (h,)
        shapes[f"{p}/intermediate/dense/kernel"], shapes[f"{p}/intermediate/dense/bias"] = (h, i), (i,)
        shapes[f"{p}/output/dense/kernel"], shapes[f"{p}/output/dense/bias"] = (i, h), (h,)
        for ln in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}/{ln}/gamma"], shapes[f"{p}/{ln}/beta"] = (h,), (h,)
    shapes.update({"bert/pooler/dense/kernel": (h, h), "bert/pooler/dense/bias": (h,),
                   "cls/predictions/transform/dense/kernel": (h, h),
                   "cls/predictions/transform/dense/bias": (h,),
                   "cls/predictions/transform/LayerNorm/gamma": (h,),
                   "cls/predictions/transform/LayerNorm/beta": (h,),
                   "cls/predictions/output_bias": (c.vocab_size,),
                   "cls/seq_relationship/output_weights": (2, h), "cls/seq_relationship/output_bias": (2,)})
    return shapes
