"""core/input.py, the input pieces both benchmarks share: every record read by exactly one pipeline (files or
records sharded), padding of the last eval batch with weight 0, file lists, seeds and the metric's zero guard."""
import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.core import input as core_input
from tf_mlperf.core.task import InputContext
from tf_mlperf.base.errors import UserError


def _write(tmp_path, num_files, per_file):
    files = []
    for f in range(num_files):
        path = str(tmp_path / f"part-{f:02d}")
        with tf.io.TFRecordWriter(path) as w:
            for r in range(per_file):
                w.write(f"{f}:{r}".encode())
        files.append(path)
    return files


@pytest.mark.parametrize("num_files,pipelines", [(4, 2), (1, 3), (3, 4)], ids=["by-file", "by-record", "fewer"])
def test_every_record_is_read_by_exactly_one_pipeline(tmp_path, num_files, pipelines):
    files = _write(tmp_path, num_files, 5)
    seen = []
    for i in range(pipelines):
        ctx = InputContext(pipelines, i, 2)
        seen += [r.numpy() for r in core_input.records(files, ctx, shuffle_seed=core_input.pipeline_seed(7, ctx))]
    assert sorted(seen) == sorted(f"{f}:{r}".encode() for f in range(num_files) for r in range(5))


def test_pad_batch_pads_tuples_and_dicts_with_zero_weight_rows():
    ds = tf.data.Dataset.from_tensor_slices((np.ones((5, 2), np.float32), np.arange(5), np.ones(5, np.float32)))
    batches = list(core_input.padded_batches(ds, 4))
    assert [b[0].shape[0] for b in batches] == [4, 4]
    np.testing.assert_array_equal(batches[1][2], [1, 0, 0, 0])
    padded = core_input.pad_batch({"ids": tf.ones([1, 3], tf.int32), "w": tf.ones([1])}, 3)
    np.testing.assert_array_equal(padded["w"], [1, 0, 0])
    assert padded["ids"].shape == (3, 3)


def test_list_files_sorted_unique_or_a_named_error(tmp_path):
    files = _write(tmp_path, 3, 1)
    pattern = str(tmp_path / "part-*")
    assert core_input.list_files(f"{pattern},{files[0]}", "x", "y") == files
    with pytest.raises(UserError, match="^--flag=none: matches nothing"):
        core_input.list_files(str(tmp_path / "none-*"), "--flag=none", "matches nothing")


def test_seeds_differ_per_pipeline_and_run_and_the_metric_guards_zero():
    seeds = {core_input.pipeline_seed(s, InputContext(64, i, 1)) for s in range(3) for i in range(64)}
    assert len(seeds) == 3 * 64
    assert core_input.fraction({"correct": 3.0, "count": 4.0}) == 0.75
    assert core_input.fraction({"correct": 0.0, "count": 0.0}) == 0.0


def test_synthetic_batches_repeat_one_batch_per_pipeline():
    ctx = InputContext(2, 1, 3)
    ds = core_input.synthetic_batches(ctx, lambda gen, b: gen.uniform([b, 2]), num_batches=2)
    first, second = list(ds)
    np.testing.assert_array_equal(first, second)
    other = next(iter(core_input.synthetic_batches(InputContext(2, 0, 3), lambda gen, b: gen.uniform([b, 2]))))
    assert not np.array_equal(first, other)
