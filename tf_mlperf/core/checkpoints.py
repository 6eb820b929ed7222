"""The run's checkpoints on disk, <model_dir>/checkpoints/ckpt-N.{index,data-*} and the CheckpointManager's state
file: which one a restart resumes from, and the error that names a damaged one."""
from __future__ import annotations

import glob
import os
import re

import tensorflow as tf
from absl import logging

from tf_mlperf.base.errors import UserError


def _checkpoints_on_disk(ckpt_dir: str) -> dict[int, str]:
    """step -> prefix of every ckpt-N whose index file exists."""
    found = {}
    for index in glob.glob(os.path.join(glob.escape(ckpt_dir), "ckpt-*.index")):
        match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
        if match:
            found[int(match.group(1))] = index[:-len(".index")]
    return found


def _readable(prefix: str) -> bool:
    """Whether every tensor of the checkpoint reads back (index and data complete)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        return True
    except Exception:   # pylint: disable=broad-except
        return False


def resume_checkpoint(ckpt_dir: str) -> str | None:
    """The checkpoint a restart resumes from: the one the state file names; when that file is unreadable or
    names files that are gone, the latest complete ckpt-N on disk (the state file is rewritten to name it, the
    unreadable one kept as checkpoint.unreadable). UserError when checkpoints exist but none reads back:
    starting over would overwrite them with earlier steps."""
    state_path = os.path.join(ckpt_dir, "checkpoint")
    on_disk = _checkpoints_on_disk(ckpt_dir)
    state = None
    if os.path.exists(state_path):
        try:
            state = tf.train.get_checkpoint_state(ckpt_dir)    # None (and a warning) on a ParseError
        except ValueError:                                     # parsed, but names no checkpoint
            state = None
    if state is not None and os.path.exists(state.model_checkpoint_path + ".index"):
        return state.model_checkpoint_path
    if not on_disk:
        if os.path.exists(state_path):
            logging.warning("%s names no checkpoint that exists: starting from step 0", state_path)
        return None
    for step in sorted(on_disk, reverse=True):
        if _readable(on_disk[step]):
            why = "is unreadable" if state is None and os.path.exists(state_path) else (
                "is missing" if not os.path.exists(state_path) else "names a checkpoint that is gone")
            logging.warning("%s %s: resuming from %s, the latest complete checkpoint beside it", state_path,
                            why, on_disk[step])
            if os.path.exists(state_path):
                os.replace(state_path, state_path + ".unreadable")
            tf.compat.v1.train.update_checkpoint_state(
                ckpt_dir, on_disk[step], [on_disk[s] for s in sorted(on_disk) if s <= step])
            return on_disk[step]
    raise UserError(ckpt_dir, f"holds checkpoints {sorted(on_disk)} but none reads back completely (and the "
                    f"state file {state_path} names none of them): move the folder away to start over, or restore "
                    "a checkpoint from a copy")


def damaged_checkpoint_error(prefix: str, err: Exception) -> UserError:
    data = sorted(glob.glob(glob.escape(prefix) + ".data-*")) or [prefix + ".data-00000-of-00001"]
    reason = str(getattr(err, "message", err)).splitlines()[0] if str(err) else type(err).__name__
    return UserError(data[0] if len(data) == 1 else prefix, f"checkpoint cannot be read ({type(err).__name__}: "
                     f"{reason}); it is truncated or damaged: move {os.path.basename(prefix)}.* out of "
                     f"{os.path.dirname(prefix)} to resume from an earlier checkpoint there, or restore it from a copy")
