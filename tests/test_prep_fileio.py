"""data_prep/fileio.py, data prep's one atomic-write helper and one process pool (ImageNet and Wikipedia)."""
import errno
import os

import pytest

from data_prep import fileio
from tf_mlperf.base.errors import UserError


def _fail_on(job):
    if job == 3:
        raise UserError(f"job-{job}", "broken")
    fileio.report_progress(job)
    return job * job


def test_atomic_output_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError):
        with fileio.atomic_output(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert not out.exists() and os.listdir(out.parent) == []
    fileio.write_json_atomic(str(out), {"b": 1, "a": 2})
    assert out.read_text() == '{\n "a": 2,\n "b": 1\n}' and os.listdir(out.parent) == ["out.txt"]


def test_a_failed_write_names_the_output_not_the_temp_file(tmp_path):
    out = tmp_path / "out.txt"
    with pytest.raises(UserError, match=f"^{out}: cannot write .*no space left"):
        with fileio.atomic_output(out) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    missing = tmp_path / "input.txt"
    with pytest.raises(FileNotFoundError):            # an input's error stays the input's
        with fileio.atomic_output(out):
            missing.read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_run_parallel_results_in_order_and_worker_errors_raised(workers):
    done = []
    assert fileio.run_parallel(_fail_on, [0, 1, 2], workers, "t", on_done=done.append, total=3) == [0, 1, 4]
    assert sorted(done) == [0, 1, 4]
    with pytest.raises(UserError, match="job-3: broken"):
        fileio.run_parallel(_fail_on, [1, 3, 2], workers, "t")
