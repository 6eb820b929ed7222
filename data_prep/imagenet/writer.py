"""Plan a split into shards, write them in parallel, keep a manifest that makes reruns resume.

Every shard is independent: its images are fixed by the plan (sorted names, seeded shuffle for train),
so any worker can write any shard, the output does not depend on --num_workers, and a rerun skips the
shards the progress file lists as complete. A shard is written under a temporary name and renamed only when
complete, so a killed run never leaves a partial file under a final name.

While a split is being converted its state is in `<split>-progress.json`; `<split>-manifest.json` (what
the trainer and `verify` read: every shard's name, record count, size and sha256) is written only when
every shard is complete, so a partial output never looks complete. Shard files of the split that the plan
would not write (another run's `train-*-of-00008`) are refused, or removed with --overwrite: the trainer's
glob would read them too.
"""
import collections
import contextlib
import glob
import hashlib
import json
import os
import random
import time

from data_prep import fileio
from data_prep.imagenet.images import CorruptImageError, to_rgb_jpeg
from tf_mlperf.base.errors import UserError, os_error
from tf_mlperf.base.imagenet_records import (MANIFEST_FORMAT, SHARD_PREFIX, file_sha256, manifest_path,  # noqa: F401
                                            progress_path, read_state, shard_files, shard_name)

# Test hook: seconds to sleep per image, so a test can SIGKILL a run reliably mid-way.
DELAY_ENV = "TF_MLPERF_PREP_TEST_DELAY_S"
PROGRESS_EVERY = 16  # images per progress message from a worker

ImageJob = collections.namedtuple("ImageJob", "filename path offset size wnid label text boxes")
ShardTask = collections.namedtuple("ShardTask", "name output_dir jobs check skip_corrupt")
SplitPlan = collections.namedtuple("SplitPlan", "split output_dir shards fingerprint seed label_map")


def describe(job):
    """How errors name an image: its file, or its member in an archive."""
    if job.offset == 0 and os.path.basename(job.path) == job.filename:
        return job.path
    return f"{job.path}: member {job.filename!r}"


def plan_split(split, jobs, output_dir, num_shards, seed, check, skip_corrupt, label_map, source):
    """Order the images (sorted by name; train then shuffled with `seed`) and cut them into shards."""
    if num_shards < 1 or num_shards > len(jobs):
        raise UserError(source, f"{len(jobs)} {split} images cannot fill {num_shards} shards "
                                f"(set --{split}_shards between 1 and {len(jobs)})")
    jobs = sorted(jobs, key=lambda job: job.filename)
    if split == "train":
        random.Random(seed).shuffle(jobs)
    bounds = [len(jobs) * i // num_shards for i in range(num_shards + 1)]
    shards = [ShardTask(shard_name(split, i, num_shards), output_dir, jobs[bounds[i]:bounds[i + 1]],
                        check, skip_corrupt) for i in range(num_shards)]
    # What the output depends on (not where the bytes come from: tar or folder give the same records).
    digest = hashlib.sha256(json.dumps([check, skip_corrupt]).encode())
    for shard in shards:
        digest.update(json.dumps([shard.name, [[j.filename, j.label, j.text, j.boxes] for j in shard.jobs]]).encode())
    return SplitPlan(split, output_dir, shards, digest.hexdigest(), seed, label_map)


# ---------------------------------------------------------------- worker side

MAX_OPEN_FILES = 64   # per worker: a shard of loose images must not need one descriptor per image


def _open_cached(path, open_files):
    """A read handle for `path`, kept open for the next images of the same archive (least recently used
    handles are closed beyond MAX_OPEN_FILES)."""
    handle = open_files.pop(path, None) or open(path, "rb")
    open_files[path] = handle                # (re)insert as most recent
    if len(open_files) > MAX_OPEN_FILES:
        open_files.pop(next(iter(open_files))).close()
    return handle


def _read_bytes(job, open_files):
    try:
        handle = _open_cached(job.path, open_files)
        handle.seek(job.offset)
        data = handle.read(job.size)
    except OSError as e:
        raise UserError(describe(job), f"cannot read ({e})") from e
    if len(data) != job.size:
        raise CorruptImageError(describe(job), f"input ends early ({len(data)} of {job.size} bytes)")
    return data


def _serialized_records(task, skipped, report):
    from tf_mlperf.base.imagenet_records import make_example  # TF loads only where records are made
    delay = float(os.environ.get(DELAY_ENV, "0"))
    open_files = {}
    unreported = 0
    try:
        for job in task.jobs:
            try:
                encoded, height, width, _ = to_rgb_jpeg(_read_bytes(job, open_files), describe(job), task.check)
            except CorruptImageError as e:
                if not task.skip_corrupt:
                    raise
                skipped.append({"filename": job.filename, "problem": e.problem})
                continue
            example = make_example(encoded, height, width, job.label, job.wnid, job.text, job.filename, job.boxes)
            yield example.SerializeToString(deterministic=True)  # sorted map keys: same bytes in any process
            unreported += 1
            if unreported == PROGRESS_EVERY or delay:
                report(unreported)
                unreported = 0
            if delay:
                time.sleep(delay)
        report(unreported)
    finally:
        for handle in open_files.values():
            handle.close()


def write_shard(task, report=None):
    """Write one shard to a temporary file, fsync, rename; return its manifest entry."""
    from tf_mlperf.base.imagenet_records import write_records
    report = report or fileio.report_progress
    skipped = []
    # Disk full, permissions: a UserError naming the shard and the fix, not a traceback; no temp file left.
    with fileio.atomic_output(os.path.join(task.output_dir, task.name), fsync=True) as temp_path:
        write_records(temp_path, _serialized_records(task, skipped, report))
        entry = {"name": task.name, "num_records": len(task.jobs) - len(skipped),
                 "size_bytes": os.path.getsize(temp_path), "sha256": file_sha256(temp_path),
                 "skipped_corrupt": skipped}
    return entry


# ---------------------------------------------------------------- main side

_temp_name = fileio.temp_name    # `.<name>.tmp-<pid>`: what _remove_temp_files clears after a kill


def _manifest(plan, done):
    shards = [done[s.name] for s in plan.shards if s.name in done]
    manifest = {"format": MANIFEST_FORMAT, "split": plan.split, "plan_sha256": plan.fingerprint,
                "seed": plan.seed if plan.split == "train" else None,
                "num_shards": len(plan.shards), "complete": len(shards) == len(plan.shards),
                "label_map": plan.label_map, "shards": shards}
    if manifest["complete"]:
        manifest["num_records"] = sum(s["num_records"] for s in shards)
        manifest["skipped_corrupt"] = [dict(item, shard=s["name"]) for s in shards for item in s["skipped_corrupt"]]
    return manifest


def _completed_shards(plan, overwrite):
    """Shards a previous run finished (listed in a progress file or manifest of the same plan, file of the
    listed size). With `overwrite`, the outputs of another plan are removed instead of refused."""
    states = [(path, read_state(path)) for path in (progress_path(plan.output_dir, plan.split),
                                                    manifest_path(plan.output_dir, plan.split))]
    states = [(path, state) for path, state in states if state is not None]
    for path, state in states:
        if state.get("plan_sha256") != plan.fingerprint:
            if not overwrite:
                raise UserError(path, "was written for other inputs or flags; pass --overwrite to replace "
                                      "this split, or use another --output_dir")
            for stale in [p for p, _ in states] + shard_files(plan.output_dir, plan.split):
                os.remove(os.path.join(plan.output_dir, stale))
            return {}
    return {s["name"]: s for _, state in states for s in state.get("shards", [])
            if os.path.exists(os.path.join(plan.output_dir, s["name"]))
            and os.path.getsize(os.path.join(plan.output_dir, s["name"])) == s["size_bytes"]}


def _check_foreign_shards(plan, overwrite):
    """Refuse (or with `overwrite` remove) shard files of this split that the plan does not write."""
    ours = {s.name for s in plan.shards}
    foreign = [name for name in shard_files(plan.output_dir, plan.split) if name not in ours]
    if not foreign:
        return
    if overwrite:
        for name in foreign:
            os.remove(os.path.join(plan.output_dir, name))
        print(f"{plan.split}: removed {len(foreign)} shard file(s) of another conversion (--overwrite): "
              f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}")
        return
    shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
    raise UserError(plan.output_dir, f"holds {len(foreign)} {plan.split} shard file(s) this conversion "
                    f"would not write ({shown}), which the trainer would read too; pass --overwrite to "
                    "delete them, or use another --output_dir")


def _remove_temp_files(plan):
    for temp in glob.glob(os.path.join(plan.output_dir, f".{SHARD_PREFIX[plan.split]}-*.tmp-*")):
        os.remove(temp)


def convert_split(plan, num_workers=1, overwrite=False, progress=True):
    """Write every shard of `plan` not already complete; write and return the final manifest."""
    try:
        os.makedirs(plan.output_dir, exist_ok=True)
    except OSError as e:
        raise os_error(e, plan.output_dir) from None
    done = _completed_shards(plan, overwrite)
    _check_foreign_shards(plan, overwrite)
    _remove_temp_files(plan)
    path, state_path = manifest_path(plan.output_dir, plan.split), progress_path(plan.output_dir, plan.split)
    todo = [s for s in plan.shards if s.name not in done]
    if todo:
        fileio.write_json_atomic(state_path, _manifest(plan, done))
        if os.path.exists(path):  # it no longer describes the folder (a shard is missing or changed)
            os.remove(path)

    def on_done(entry):
        done[entry["name"]] = entry
        fileio.write_json_atomic(state_path, _manifest(plan, done))

    try:
        # forkserver: workers fork from a fresh server that imported TF once, never from this (possibly
        # multi-threaded, TF-running) process. The bar counts images (its rate column: images/s).
        fileio.run_parallel(write_shard, todo, num_workers, plan.split, unit="img",
                            total=sum(len(s.jobs) for s in todo), on_done=on_done, start_method="forkserver",
                            preload=["tf_mlperf.base.imagenet_records", "data_prep.imagenet.writer"], progress=progress)
    except BaseException:  # the other workers were stopped mid-shard: leave no temp file behind
        with contextlib.suppress(OSError):
            _remove_temp_files(plan)
        raise
    manifest = _manifest(plan, done)
    if read_state(path) != manifest:
        fileio.write_json_atomic(path, manifest)
    if os.path.exists(state_path):
        os.remove(state_path)
    return manifest
