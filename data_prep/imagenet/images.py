"""Make every image something `tf.io.decode_and_crop_jpeg` reads as RGB, judging by content, not by name.

ImageNet has a PNG named `.JPEG` and 22 CMYK JPEGs (plus greyscale ones); these are re-encoded as RGB
JPEG quality 100. RGB JPEGs are kept byte-for-byte after a check:
  header  parse the headers and require the end-of-image marker after the scan: catches truncated and
          zero-filled downloads, the failures that make tf.io.decode_jpeg reject a file (libjpeg only warns
          about damaged scan data); 0xFFD9 cannot occur inside entropy-coded data. Default of the CLI.
  draft   also decode at 1/8 scale: libjpeg entropy-decodes the whole stream (bad Huffman tables are
          caught too) but skips most IDCT work;
  full    full decode.
"""
import io

from PIL import Image

from tf_mlperf.base.errors import UserError

JPEG_FORMATS = ("JPEG", "MPO")   # MPO: camera multi-picture JPEG, a plain JPEG to libjpeg
CHECKS = ("header", "draft", "full")


class CorruptImageError(UserError):
    """An image that cannot be decoded; fatal unless --skip_corrupt (the one subclass of UserError: the converter
    decides on it whether to skip)."""


def to_rgb_jpeg(data, where, check="header"):
    """Return (jpeg_bytes, height, width, fix) where fix names what was converted, or None."""
    try:
        stream = io.BytesIO(data)
        image = Image.open(stream)
        width, height = image.size
        if image.format in JPEG_FORMATS and image.mode == "RGB":
            # Pillow's header parse stops at the scan start, so the marker must come after stream.tell().
            if check == "header" and data.rfind(b"\xff\xd9") < stream.tell():
                raise CorruptImageError(where, "truncated image (no end-of-image marker)")
            if check == "draft":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            if check != "header":
                image.load()
            return data, height, width, None
        fix = f"{image.format} {image.mode}"
        image.load()
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=100)
        return out.getvalue(), height, width, fix
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptImageError(where, f"corrupt or truncated image ({e})") from e
