"""Optional training bounding boxes: PASCAL VOC xml (`ILSVRC2012_bbox_train_v2.tar.gz` or Kaggle's
`ILSVRC/Annotations/CLS-LOC/train` folder) -> `image stem -> [(xmin, ymin, xmax, ymax), ...]` as
fractions of the image size, clipped to [0, 1] (the convention of TF's process_bounding_boxes.py)."""
import pathlib
import posixpath
import tarfile
import xml.etree.ElementTree as ElementTree

from data_prep.imagenet.sources import check_member
from tf_mlperf.base.errors import UserError


def _fraction(value, size):
    return min(max(float(value) / size, 0.0), 1.0)


def parse_voc_xml(data, where):
    try:
        root = ElementTree.fromstring(data)
        width = float(root.findtext("size/width"))
        height = float(root.findtext("size/height"))
        boxes = []
        for box in root.iter("bndbox"):
            xs = sorted(_fraction(box.findtext(k), width) for k in ("xmin", "xmax"))
            ys = sorted(_fraction(box.findtext(k), height) for k in ("ymin", "ymax"))
            boxes.append((xs[0], ys[0], xs[1], ys[1]))
    except (ElementTree.ParseError, TypeError, ValueError, ZeroDivisionError) as e:
        raise UserError(where, f"not a PASCAL VOC annotation with size and bndbox ({e})") from e
    return boxes


def _stem(name):
    return posixpath.basename(name).rsplit(".", 1)[0]


def read_bboxes(path):
    path = pathlib.Path(path)
    boxes = {}
    if path.is_dir():
        for xml_path in sorted(path.rglob("*.xml")):
            boxes[_stem(xml_path.name)] = parse_voc_xml(xml_path.read_bytes(), xml_path)
        return boxes
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                check_member(member, path)
                if member.isfile() and member.name.endswith(".xml"):
                    data = tar.extractfile(member).read()
                    boxes[_stem(member.name)] = parse_voc_xml(data, f"{path}: member {member.name!r}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(path, f"unreadable bounding-box archive ({e})") from e
    return boxes
