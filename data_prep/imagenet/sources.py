"""Find the images of a split in what the user downloaded, without extracting anything.

Inputs are the raw tars (`ILSVRC2012_img_train.tar` of per-class tars, flat `ILSVRC2012_img_val.tar`) or
extracted trees (`train/nXXXXXXXX/*.JPEG` or `train/nXXXXXXXX.tar`, `val/*.JPEG` or `val/nXXXXXXXX/*.JPEG`,
Kaggle's `ILSVRC/Data/CLS-LOC/...`). Indexing reads only tar headers (seeking past the data) and records
where each image's bytes lie, so workers later read any image directly out of the archive: this gives a
seeded global shuffle, independent shards (parallel and resumable) and no extraction to disk.
"""
import collections
import os
import pathlib
import posixpath
import tarfile

from data_prep.imagenet.synsets import WNID_RE
from tf_mlperf.base.errors import UserError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

# One image: its file name (as written to image/filename) and where its bytes are.
RawImage = collections.namedtuple("RawImage", "filename path offset size dir_wnid")


def check_member(member, archive):
    """Refuse members that could escape or alias: absolute paths, `..`, links, devices, sparse files."""
    name = member.name
    parts = pathlib.PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        reason = "absolute path"
    elif ".." in parts or ".." in name.split("\\"):
        reason = "path contains '..'"
    elif member.issym() or member.islnk():
        reason = f"link (-> {member.linkname!r})"
    elif member.ischr() or member.isblk() or member.isfifo():
        reason = "device or fifo"
    elif member.issparse() or not (member.isfile() or member.isdir()):
        reason = "not a regular file"
    else:
        return
    raise UserError(f"{archive}: member {name!r}", f"refused: {reason}")


def is_image_name(name):
    return name.lower().endswith(IMAGE_SUFFIXES)


def open_plain_tar(path):
    """Open an uncompressed tar for random access (headers only); compressed tars cannot be seeked."""
    try:
        return tarfile.open(path, mode="r:")
    except (tarfile.ReadError, OSError) as e:
        raise UserError(path, f"not a readable uncompressed tar archive ({e})") from e


def _tar_images(tar, archive, path, base_offset, wnid):
    """Images of an open tar holding images only, located as byte ranges of the file at `path` (the tar
    starts at `base_offset` there: a class tar inside the train tar)."""
    for member in tar:
        check_member(member, archive)
        if member.isdir():
            continue
        if not is_image_name(member.name):
            raise UserError(f"{archive}: member {member.name!r}", "unexpected member (not an image)")
        yield RawImage(posixpath.basename(member.name), path, base_offset + member.offset_data,
                       member.size, wnid)


def _class_tar_images(class_tar, archive, path, base_offset, wnid):
    """Images of one per-class tar (`nXXXXXXXX.tar`, a file object)."""
    try:
        with tarfile.open(fileobj=class_tar, mode="r:") as inner:
            return list(_tar_images(inner, archive, path, base_offset, wnid))
    except tarfile.ReadError as e:
        raise UserError(archive, f"not a readable uncompressed tar archive ({e})") from e


def _wnid_of_class_tar(name, where):
    wnid, ext = posixpath.splitext(posixpath.basename(name))
    if ext != ".tar" or not WNID_RE.match(wnid):
        raise UserError(where, "expected per-class tars named nXXXXXXXX.tar")
    return wnid


def index_train_tar(path, empty=None):
    """`ILSVRC2012_img_train.tar`: 1000 member tars, each holding that class's JPEGs. Class tars holding
    no image are appended to `empty` as (wnid, where)."""
    path = str(path)
    images = []
    empty = [] if empty is None else empty
    with open_plain_tar(path) as outer:
        for member in outer:
            check_member(member, path)
            if member.isdir():
                continue
            wnid = _wnid_of_class_tar(member.name, f"{path}: member {member.name!r}")
            found = _class_tar_images(outer.extractfile(member), f"{path}:{member.name}", path,
                                      member.offset_data, wnid)
            if not found:
                empty.append((wnid, f"{path}: member {member.name!r}"))
            images += found
    return images


def index_flat_tar(path):
    """`ILSVRC2012_img_val.tar`: images directly in the archive (stored in no particular order)."""
    path = str(path)
    with open_plain_tar(path) as tar:
        return list(_tar_images(tar, path, path, 0, None))


def _files_in(directory):
    return sorted((e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name)


def index_directory(path, empty=None):
    """An extracted split: class folders (`nXXXXXXXX/`), class tars (`nXXXXXXXX.tar`) or flat images.
    Class folders or tars holding no image are appended to `empty` as (wnid, where)."""
    images = []
    empty = [] if empty is None else empty
    for entry in _files_in(path):
        if entry.is_dir() and WNID_RE.match(entry.name):
            found = [RawImage(e.name, e.path, 0, e.stat().st_size, entry.name)
                     for e in _files_in(entry.path) if e.is_file() and is_image_name(e.name)]
            if not found:
                empty.append((entry.name, entry.path))
            images += found
        elif entry.is_file() and entry.name.endswith(".tar") and WNID_RE.match(entry.name[:-4]):
            with open(entry.path, "rb") as class_tar:
                found = _class_tar_images(class_tar, entry.path, entry.path, 0, entry.name[:-4])
            if not found:
                empty.append((entry.name[:-4], entry.path))
            images += found
        elif entry.is_file() and is_image_name(entry.name):
            images.append(RawImage(entry.name, entry.path, 0, entry.stat().st_size, None))
        elif entry.is_dir():
            raise UserError(entry.path, "unexpected folder (class folders are named nXXXXXXXX)")
    return images


def index_split(path, is_train, empty=None):
    """All images of a split at `path` (tar or folder), checked for duplicate names and class folders.
    Class folders or tars without images are appended to `empty` as (wnid, where)."""
    path = pathlib.Path(path)
    if path.is_dir():
        images = index_directory(path, empty)
    elif path.is_file():
        images = index_train_tar(path, empty) if is_train else index_flat_tar(path)
    else:
        raise UserError(path, "no such file or folder")
    if not images:
        raise UserError(path, "holds no images")
    if is_train and any(image.dir_wnid is None for image in images):
        loose = next(image.filename for image in images if image.dir_wnid is None)
        raise UserError(path, f"train images must be in class folders or class tars, found loose {loose!r}")
    seen = set()
    for image in images:
        if image.filename in seen:
            raise UserError(path, f"image name {image.filename!r} occurs twice")
        seen.add(image.filename)
    return images
