"""Worker for tests/test_horovod_compression.py, launched by horovodrun -np 2 (the real Horovod path).

Usage: python tests/support/hvd_compression_worker.py OUT_DIR. Each rank writes OUT_DIR/rank<r>.npz with, for
--gradient_compression none and fp16 (HorovodDistribution through distribution.create):
- `<mode>_local` / `<mode>_reduced`: allreduce_gradients of rank-dependent fp32 values over 12 orders of
  magnitude (fp16 normals, subnormals, values fp16 cannot represent);
- `<mode>_w<i>`: the weights after STEPS real train steps (core/train_step.py, BERT's LAMB and clipping), each
  rank's gradients its own data (hvd_grads_worker's linear task).
"""
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: `support`
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository
from support import hvd_grads_worker as base  # noqa: E402
from tf_mlperf.core import distribution  # noqa: E402


def rank_values(rank):
    rng = np.random.default_rng(40 + rank)
    magnitude = 10.0 ** rng.uniform(-9, 1, size=4000)
    return (rng.choice([-1.0, 1.0], size=4000) * magnitude).astype(np.float32)


def main(out_dir):
    out = {}
    for mode in ("none", "fp16"):
        dist = distribution.create("horovod", compression=mode)
        assert dist.size == 2 and dist.compression == mode
        local = tf.constant(rank_values(dist.rank))
        reduced = dist.allreduce_gradients([local, tf.reshape(local[:6], [2, 3])])
        assert all(r.dtype == tf.float32 for r in reduced)
        out[f"{mode}_local"] = local.numpy()
        out[f"{mode}_reduced"] = reduced[0].numpy()
        out[f"{mode}_reduced2d"] = reduced[1].numpy()
        for i, w in enumerate(base.train(dist, clip_after_allreduce=False)):
            out[f"{mode}_w{i}"] = w
        dist.barrier()
    np.savez(os.path.join(out_dir, f"rank{dist.rank}.npz"), **out)


if __name__ == "__main__":
    main(sys.argv[1])
