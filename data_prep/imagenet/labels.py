"""Validation labels in the three forms users have, all turned into `val image stem -> wnid`.

- devkit `ILSVRC2012_devkit_t12.tar.gz`: `data/meta.mat` maps ILSVRC2012_ID -> WNID (meta.mat order, NOT
  sorted-wnid order) and `data/ILSVRC2012_validation_ground_truth.txt` gives one ID per val image;
- `synset_labels.txt`: one wnid per val image, in file-name order;
- Kaggle `LOC_val_solution.csv`: `ImageId,PredictionString` rows (unsorted), first token is the wnid.
The format is recognised by content. Every problem names the file (and line) it is in.
"""
import csv
import io
import pathlib
import re
import tarfile

import scipy.io

from data_prep.imagenet.sources import check_member
from tf_mlperf.base.errors import UserError

VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})$")
META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


class ValLabels:
    """Labels from one file: either positional (line N = ILSVRC2012_val_0000000N) or keyed by stem."""

    def __init__(self, source, by_position=None, by_stem=None):
        self.source = source
        self.by_position = by_position
        self.by_stem = by_stem

    def wnid_for(self, filename):
        stem = filename.rsplit(".", 1)[0]
        if self.by_stem is not None:
            if stem not in self.by_stem:
                raise UserError(self.source, f"has no label for validation image {filename!r}")
            return self.by_stem[stem]
        match = VAL_NAME_RE.match(stem)
        if not match:
            raise UserError(self.source, f"labels are by position, but {filename!r} is not named "
                                         "ILSVRC2012_val_NNNNNNNN.JPEG")
        position = int(match.group(1))
        if not 1 <= position <= len(self.by_position):
            raise UserError(self.source, f"has {len(self.by_position)} labels, none for {filename!r}")
        return self.by_position[position - 1]


def _check_wnid(wnid, synsets, where):
    if wnid not in synsets:
        raise UserError(where, f"{wnid!r} is not one of the 1000 ILSVRC2012 classes")
    return wnid


def read_synset_labels(path, synsets):
    lines = pathlib.Path(path).read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    wnids = [_check_wnid(line.strip(), synsets, f"{path}: line {n}") for n, line in enumerate(lines, 1)]
    if not wnids:
        raise UserError(path, "holds no labels")
    return ValLabels(str(path), by_position=wnids)


def read_kaggle_solution(path, synsets):
    by_stem = {}
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != ["ImageId", "PredictionString"]:
            raise UserError(path, f"expected header 'ImageId,PredictionString', got {header}")
        for number, row in enumerate(rows, 2):
            where = f"{path}: line {number}"
            if len(row) != 2 or not row[1].split():
                raise UserError(where, "expected 'ImageId,wnid x y x y ...'")
            by_stem[row[0]] = _check_wnid(row[1].split()[0], synsets, where)
    if not by_stem:
        raise UserError(path, "holds no labels")
    return ValLabels(str(path), by_stem=by_stem)


def _devkit_members(path):
    """meta.mat and ground-truth bytes, streamed out of the tar.gz (every member checked, none extracted)."""
    found = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                check_member(member, path)
                for wanted in (META_MAT, GROUND_TRUTH):
                    if member.isfile() and member.name.endswith(wanted):
                        found[wanted] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(path, f"unreadable devkit archive ({e})") from e
    for wanted in (META_MAT, GROUND_TRUTH):
        if wanted not in found:
            raise UserError(path, f"devkit archive has no {wanted}")
    return found[META_MAT], found[GROUND_TRUTH]


def _wnid_by_ilsvrc_id(meta_mat, where, synsets):
    try:
        records = scipy.io.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
        entries = [(int(r["ILSVRC2012_ID"]), str(r["WNID"]), int(r["num_children"])) for r in records]
    except Exception as e:  # scipy raises many types for a malformed file
        raise UserError(where, f"not a devkit meta.mat with a 'synsets' struct ({e})") from e
    leaves = {ilsvrc_id: wnid for ilsvrc_id, wnid, children in entries if children == 0}
    for ilsvrc_id, wnid in leaves.items():
        _check_wnid(wnid, synsets, f"{where}: ILSVRC2012_ID {ilsvrc_id}")
    return leaves


def read_devkit(path, synsets):
    meta_mat, ground_truth = _devkit_members(path)
    wnid_by_id = _wnid_by_ilsvrc_id(meta_mat, f"{path}:{META_MAT}", synsets)
    wnids = []
    for number, line in enumerate(ground_truth.decode().split(), 1):
        where = f"{path}:{GROUND_TRUTH}: line {number}"
        if not line.isdigit() or int(line) not in wnid_by_id:
            raise UserError(where, f"{line!r} is not an ILSVRC2012_ID of a class in meta.mat")
        wnids.append(wnid_by_id[int(line)])
    if not wnids:
        raise UserError(f"{path}:{GROUND_TRUTH}", "holds no labels")
    return ValLabels(f"{path}:{GROUND_TRUTH}", by_position=wnids)


def read_val_labels(path, synsets):
    """Read any of the three label formats, recognised by content."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(path, "validation label file not found")
    if tarfile.is_tarfile(path):
        return read_devkit(path, synsets)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"ImageId"):
        return read_kaggle_solution(path, synsets)
    try:
        return read_synset_labels(path, synsets)
    except UnicodeDecodeError as e:
        raise UserError(path, "not a devkit tar.gz, Kaggle csv or synset_labels.txt") from e
