"""Worker for tests/test_horovod_grads.py, launched by horovodrun -np 2 (the real Horovod path).

Usage: python tests/support/hvd_grads_worker.py OUT_DIR. Each rank writes OUT_DIR/rank<r>.npz with
- `dtypes_*`: HorovodDistribution.allreduce_gradients of a mixed fp32/bf16/fp16 list (rank-dependent values);
- `clip<mode>_*`: the weights after STEPS real train steps (core/train_step.py + BERT's LAMB and clipping,
  clip_after_allreduce=mode) where each rank's gradients are its own data (the loss is linear in the weights).
"""
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository
from tf_mlperf.bert import optimizer as bert_optimizer  # noqa: E402
from tf_mlperf.core import distribution, train_step  # noqa: E402

NAMES = ["layer/kernel", "layer/bias", "attention/output/LayerNorm/gamma"]
SHAPES = [(4, 3), (3,), (3,)]
STEPS = 3
CFG = dict(learning_rate=0.01, num_train_steps=10, num_warmup_steps=0, beta_1=0.62, beta_2=0.9, epsilon=1e-6,
           weight_decay_rate=0.1)


def initial_weights():
    rng = np.random.default_rng(5)
    return [rng.normal(size=s).astype(np.float32) for s in SHAPES]


def rank_gradients(rank):
    """[step][variable] gradients of `rank`: rank 0's have global norms 10, 0.3, 4; rank 1's 0.5, 6, 0.2."""
    rng = np.random.default_rng(100 + rank)
    norms = [(10.0, 0.3, 4.0), (0.5, 6.0, 0.2)][rank]
    out = []
    for norm in norms:
        grads = [rng.normal(size=s) for s in SHAPES]
        total = np.sqrt(sum((g ** 2).sum() for g in grads))
        out.append([(g * norm / total).astype(np.float32) for g in grads])
    return out


class LinearModel(tf.Module):
    def __init__(self):
        super().__init__()
        self.weights_ = []
        for value, name in zip(initial_weights(), NAMES):
            with tf.name_scope(name.rsplit("/", 1)[0]):
                self.weights_.append(tf.Variable(value, name=name.rsplit("/", 1)[1]))


class LinearTask:
    """loss = sum_i <w_i, d_i>: the gradient of each variable is exactly this rank's data d_i."""
    num_accumulation_steps = 1

    def __init__(self, cfg):
        self.cfg = cfg

    def train_loss(self, model, batch):
        return tf.add_n([tf.reduce_sum(w * d) for w, d in zip(model.trainable_variables, batch)])

    def replica_gradients(self, grads):
        return bert_optimizer.clip_replica_gradients(grads, self.cfg)


def train(dist, clip_after_allreduce):
    cfg = bert_optimizer.LambConfig(clip_after_allreduce=clip_after_allreduce, **CFG)
    model = LinearModel()
    assert [v.name for v in model.trainable_variables] == [n + ":0" for n in NAMES]
    optimizer = bert_optimizer.create_optimizer(cfg)
    train_step.build_optimizer_state(optimizer, model.trainable_variables)
    per_step = rank_gradients(dist.rank)
    ds = tf.data.Dataset.from_tensor_slices(tuple(np.stack([s[i] for s in per_step]) for i in range(len(SHAPES))))
    step = train_step.make_train_step(LinearTask(cfg), model, optimizer, dist, xla=False)
    step(iter(ds), tf.constant(STEPS))
    return [v.numpy() for v in model.trainable_variables]


def main(out_dir):
    dist = distribution.create("horovod")
    assert dist.size == 2
    out = {}
    local = [tf.constant(np.arange(3, dtype=np.float32) * (dist.rank + 1)),
             tf.constant(np.full((2, 2), 1.5 * (dist.rank + 1)), dtype=tf.bfloat16),
             tf.constant(np.arange(4) * 0.25 * (dist.rank + 1), dtype=tf.float16),
             tf.constant([10.0 * (dist.rank + 1)], dtype=tf.float32),
             tf.constant(0.5 * (dist.rank + 1), dtype=tf.bfloat16)]
    reduced = dist.allreduce_gradients(local)
    for i, (loc, red) in enumerate(zip(local, reduced)):
        out[f"dtypes_local{i}"] = tf.cast(loc, tf.float64).numpy()
        out[f"dtypes_reduced{i}"] = tf.cast(red, tf.float64).numpy()
        out[f"dtypes_dtype{i}"] = np.array([loc.dtype.name, red.dtype.name])
    for mode in (False, True):
        for i, w in enumerate(train(dist, mode)):
            out[f"clip{int(mode)}_{i}"] = w
    np.savez(os.path.join(out_dir, f"rank{dist.rank}.npz"), **out)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
