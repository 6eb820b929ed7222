"""Make every image something `tf.io.decode_and_crop_jpeg` reads as RGB, judging by content, not by name.

ImageNet has a PNG named `.JPEG` and 22 CMYK JPEGs (plus greyscale ones); these are re-encoded as RGB
JPEG quality 100. RGB JPEGs are kept byte-for-byte after a decode check, done at 1/8 scale (libjpeg still
entropy-decodes the whole stream, so truncation is caught, but skips most of the IDCT work).
"""
import io

from PIL import Image

from data_prep.imagenet.errors import CorruptImageError

JPEG_FORMATS = ("JPEG", "MPO")   # MPO: camera multi-picture JPEG, a plain JPEG to libjpeg
CHECKS = ("draft", "full", "header")


def to_rgb_jpeg(data, where, check="draft"):
    """Return (jpeg_bytes, height, width, fix) where fix names what was converted, or None."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if image.format in JPEG_FORMATS and image.mode == "RGB":
            if check != "header":
                if check == "draft":
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
            return data, height, width, None
        fix = f"{image.format} {image.mode}"
        image.load()
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=100)
        return out.getvalue(), height, width, fix
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptImageError(where, f"corrupt or truncated image ({e})") from e
