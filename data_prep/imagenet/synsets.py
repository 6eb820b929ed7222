"""The 1000 ILSVRC2012 classes: sorted wnid list (labels are index + 1) and human-readable names.

Both files ship with the package (tensorflow-datasets' `imagenet2012/labels.txt`, Apache-2.0, and timm's
`imagenet_synset_to_lemma.txt`, Apache-2.0) so a user needs nothing beyond the raw ImageNet download.
Names always come from here, not from whichever label file the user has, so every label format yields
byte-identical records.
"""
import pathlib
import re
from tf_mlperf.base.errors import UserError


PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
DEFAULT_SYNSETS = PACKAGE_DIR / "imagenet2012_synsets.txt"
DEFAULT_SYNSET_NAMES = PACKAGE_DIR / "imagenet2012_synset_names.txt"
NUM_CLASSES = 1000
WNID_RE = re.compile(r"^n\d{8}$")


class Synsets:
    """Sorted wnids (label = position + 1) and their names."""

    def __init__(self, wnids, names):
        self.wnids = tuple(wnids)
        self.names = dict(names)
        self._index = {w: i for i, w in enumerate(self.wnids)}

    def label(self, wnid):
        return self._index[wnid] + 1

    def __contains__(self, wnid):
        return wnid in self._index


def read_wnid_list(path):
    path = pathlib.Path(path)
    try:
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise UserError(path, f"cannot read synset list ({e.strerror})") from e
    bad = [w for w in wnids if not WNID_RE.match(w)]
    if bad:
        raise UserError(path, f"not a wnid list: bad entry {bad[0]!r}")
    if len(wnids) != NUM_CLASSES or wnids != sorted(set(wnids)):
        raise UserError(path, f"expected {NUM_CLASSES} distinct sorted wnids, found {len(wnids)}")
    return wnids


def read_names(path):
    """`wnid<TAB>names` lines (TF's imagenet_metadata.txt / timm's lemma file format)."""
    path = pathlib.Path(path)
    names = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(path, f"cannot read synset names ({e.strerror})") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        wnid, sep, text = line.partition("\t")
        if not sep or not WNID_RE.match(wnid):
            raise UserError(path, f"line {number}: expected 'wnid<TAB>names', got {line[:60]!r}")
        names[wnid] = text.strip()
    return names


def load_synsets(synsets_path=None, names_path=None):
    wnids = read_wnid_list(synsets_path or DEFAULT_SYNSETS)
    names = read_names(names_path or DEFAULT_SYNSET_NAMES)
    return Synsets(wnids, {w: names.get(w, "") for w in wnids})
