#!/usr/bin/env bash
# Issue 29, CPU side of the device run: export our BERT train steps (baseline, each lever, all, packed) and the
# fused-attention check modules as XLA HLO, convert them to StableHLO for the GPU's jaxlib, check every cuDNN
# call against JAX's own, and write DIR/plan.json for benchmarks/gpu/run_steps.py.
#
#   bash benchmarks/gpu/prepare.sh DIR          # BERT-large, batch 32 x 512, 76 predictions, bf16 (the real run)
#   bash benchmarks/gpu/prepare.sh DIR --tiny   # a 2-layer model, for the CPU dry run (run_steps.py --dry_run)
#
# Needs the project venv (.venv) and a python with jax==0.10.2 + jaxlib==0.10.2 (JAXPY; made in /tmp/jaxenv
# when missing): newer jaxlibs cannot legalize TF's mhlo.copy. Run from the repository root.
set -euo pipefail
DIR=${1:?usage: prepare.sh DIR [--tiny]}
SIZE=${2:-full}
PY=${PY:-.venv/bin/python}
JAXPY=${JAXPY:-/tmp/jaxenv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=
if [ ! -x "$JAXPY" ]; then
    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install -q jax==0.10.2 jaxlib==0.10.2
    JAXPY=/tmp/jaxenv/bin/python
fi
mkdir -p "$DIR"
if [ "$SIZE" = "--tiny" ]; then
    cat > "$DIR/tiny_bert.json" <<'JSON'
{"vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
 "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
 "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02}
JSON
    FLAGS=(--use_synthetic_data "--bert_config_file=$DIR/tiny_bert.json" --precision=bf16 --train_batch_size=4
           --max_seq_length=64 --max_predictions_per_seq=8 --num_eval_examples=4)
else
    FLAGS=(--flagfile=flags/bert/gbs448.cfg --use_synthetic_data --precision=bf16 --train_batch_size=32
           --max_seq_length=512 --max_predictions_per_seq=76)
fi
# name:levers, in the order run_steps.py times them (most important first: the deadline may cut the tail)
VARIANTS="ours_base:none all:all fused_attention:fused_attention dropout_philox16:dropout_philox16 \
packed_base:packed packed_all:packed,all"
for v in $VARIANTS; do
    name=${v%%:*}; levers=${v#*:}
    "$PY" benchmarks/export_step.py bert "$DIR/$name.pb" "${FLAGS[@]}" "--lever=$levers"
    "$JAXPY" benchmarks/gpu/run_steps.py --convert "$DIR/$name.pb" "$DIR/$name.mlir"
    mv "$DIR/$name.pb.batch.npz" "$DIR/$name.npz"
done
"$PY" benchmarks/gpu/export_attention_check.py "$DIR"
for m in attn_fused_key_padding attn_ref_key_padding attn_fused_block_diagonal attn_ref_block_diagonal attn_dropout; do
    "$JAXPY" benchmarks/gpu/run_steps.py --convert "$DIR/$m.pb" "$DIR/$m.mlir"
done
"$PY" - "$DIR" "$VARIANTS" <<'PYEOF'
import json, sys
import numpy as np
d, variants = sys.argv[1], sys.argv[2].split()
steps = []
for v in variants:
    name, levers = v.split(":")
    batch = np.load(f"{d}/{name}.npz")
    get = lambda key: batch[next(k for k in batch.files if k.split("_", 1)[1] == key)]
    steps.append({"name": name, "levers": levers, "module": f"{name}.mlir", "batch": f"{name}.npz",
                  "fused": "all" in levers or "fused" in levers, "sequences": int(get("masked_lm_ids").shape[0]),
                  "rows": int(get("input_ids").shape[0]), "real_tokens": int(get("input_mask").sum())})
plan = {"baseline": "ours_base", "steps": steps, "attention_layouts": ["key_padding", "block_diagonal"],
        "attention_dropout": True}
json.dump(plan, open(f"{d}/plan.json", "w"), indent=1)
print(json.dumps(steps, indent=1))
PYEOF
# every fused call must be the call JAX emits for the same configuration
"$JAXPY" benchmarks/gpu/compare_jax.py "$DIR"/fused_attention.mlir "$DIR"/all.mlir "$DIR"/packed_all.mlir \
    "$DIR"/attn_fused_key_padding.mlir "$DIR"/attn_fused_block_diagonal.mlir "$DIR"/attn_dropout.mlir
rm -f "$DIR"/*.pb "$DIR"/*.pb.txt
du -sh "$DIR"
