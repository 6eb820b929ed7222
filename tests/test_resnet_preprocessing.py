"""Preprocessing against a NumPy oracle written from the reference's imagenet_preprocessing.py, on the real
test photos (packaged + tests/data/images). JPEG decoding itself is not under test: the oracle decodes with the same TF ops (decode_jpeg for
eval, the reference's fused decode_and_crop_jpeg for train) and does every later step (TF1 bilinear resize, aspect-preserving resize, central crop, crop, flip, mean) in NumPy."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_mlperf.resnet import preprocessing

MEANS = np.array([123.68, 116.78, 103.94])


# ---------------- oracle (reference math, NumPy) ----------------
def resize_bilinear_tf1(image, out_h, out_w):
    """tf.compat.v1.image.resize(BILINEAR, align_corners=False): source = dest * in/out, no half-pixel shift.

    Source coordinates in float32 as TF's kernel computes them (a float64 scale moves the interpolation weights
    by up to ~1e-4 on large images, i.e. up to ~1e-2 on a 0..255 pixel); the interpolation itself in float64.
    """
    in_h, in_w = image.shape[:2]
    image = image.astype(np.float64)

    def axis(out_size, in_size):
        src = np.arange(out_size, dtype=np.float32) * (np.float32(in_size) / np.float32(out_size))
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, in_size - 1), (src - lo).astype(np.float64)

    y0, y1, fy = axis(out_h, in_h)
    x0, x1, fx = axis(out_w, in_w)
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx[None, :, None]
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx[None, :, None]
    return top + (bottom - top) * fy[:, None, None]


def oracle_eval(jpeg, size=224, resize_min=256):
    image = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    h, w = image.shape[:2]
    scale = np.float32(resize_min) / np.float32(min(h, w))           # _smallest_size_at_least, in float32
    new_h, new_w = int(np.float32(h) * scale), int(np.float32(w) * scale)
    resized = resize_bilinear_tf1(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2               # _central_crop
    return resized[top:top + size, left:left + size] - MEANS


def oracle_train(jpeg, window, flip, size=224):
    # The reference decodes only the window (fused decode_and_crop_jpeg); libjpeg's cropped decode differs from
    # a full decode + slice by up to ~1 grey level at block edges, so the oracle decodes the window the same way.
    crop = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3).numpy()
    if flip:
        crop = crop[:, ::-1]
    return resize_bilinear_tf1(crop, size, size) - MEANS


def reference_window(jpeg, bbox, crop_seed):
    """The reference's sample_distorted_bounding_box call (constants copied from it), stateless."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(jpeg), bounding_boxes=bbox, seed=crop_seed, min_object_covered=0.1,
        aspect_ratio_range=[0.75, 1.33], area_range=[0.05, 1.0], max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    return [int(begin[0]), int(begin[1]), int(size[0]), int(size[1])]


# ---------------- fixtures ----------------
@pytest.fixture(scope="module")
def photos(photo_paths):
    """Every test photo as JPEG bytes (PNG, CMYK and greyscale converted to RGB first, as data_prep does)."""
    out = {}
    for path in photo_paths:
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=95)
        out[path.name] = buffer.getvalue()
    assert len(out) >= 5
    return out


NO_BOX = tf.zeros([1, 0, 4])


def test_eval_matches_reference_oracle(photos):
    for name, jpeg in photos.items():
        ours = preprocessing.preprocess_eval(tf.constant(jpeg)).numpy()
        assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
        assert np.max(np.abs(ours - oracle_eval(jpeg))) <= 1e-3, name


def test_eval_small_image_size_scales_the_resize(photos):
    jpeg = next(iter(photos.values()))
    ours = preprocessing.preprocess_eval(tf.constant(jpeg), image_size=64).numpy()
    assert np.max(np.abs(ours - oracle_eval(jpeg, size=64, resize_min=73))) <= 1e-3


def expected_flip(seed):
    """The documented decision: the second half of the example's seed split, uniform < 0.5."""
    _, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.constant(seed, tf.int64), 2))
    return bool(tf.random.stateless_uniform([], flip_seed) < 0.5)


def check_reference_window(window, image_hw, box=None):
    """The constraints the reference's sample_distorted_bounding_box arguments put on a crop (min object
    covered 0.1, aspect ratio w/h in [3/4, 4/3], area 5%..100% of the image), checked exactly up to the
    kernel's rounding to whole pixels; or the whole image (its fallback after 100 failed attempts)."""
    y, x, h, w = window
    H, W = image_hw
    assert 0 <= y and 0 <= x and h > 0 and w > 0 and y + h <= H and x + w <= W, window
    if (y, x, h, w) == (0, 0, H, W):
        return "whole"
    assert 0.05 * H * W <= h * w <= H * W, (window, h * w / (H * W))
    assert (w - 1) / (h + 1) <= 1.33 and (w + 1) / max(h - 1, 1) >= 0.75, (window, w / h)
    if box is None:                  # the whole image is the object: at least 10 % of it
        assert h * w >= 0.1 * H * W, window
    else:
        ymin, xmin, ymax, xmax = box[0] * H, box[1] * W, box[2] * H, box[3] * W
        inter = max(0.0, min(y + h, ymax) - max(y, ymin)) * max(0.0, min(x + w, xmax) - max(x, xmin))
        assert inter >= 0.1 * (ymax - ymin) * (xmax - xmin) - 1e-6 * H * W, (window, box)
    return h * w / (H * W)


@pytest.mark.parametrize("box", [None, (0.2, 0.3, 0.7, 0.9), (0.05, 0.05, 0.25, 0.2)])
def test_crop_windows_obey_the_reference_arguments_and_span_them(box):
    """Many seeds on a 300x400 image: every window obeys the reference's constraints, and together they
    reach the ends of its ranges (an area near the lower bound: 10 % of the image without a box, below 8 % --
    torchvision's minimum -- with one; above 90 %; aspect ratios beyond 0.8 and 1.25), which a narrower set of
    arguments would not give."""
    bbox = tf.constant([[box]], tf.float32) if box else NO_BOX
    areas, aspects = [], []
    for i in range(200):
        window = [int(v) for v in preprocessing.distorted_crop_window(tf.constant([300, 400, 3]), bbox,
                                                                      tf.constant([i, 5], tf.int64))]
        area = check_reference_window(window, (300, 400), box)
        if area != "whole":
            areas.append(area)
            aspects.append(window[3] / window[2])
    assert len(areas) > 150
    assert min(areas) < (0.12 if box is None else 0.08) and max(areas) > 0.9, (min(areas), max(areas))
    assert min(aspects) < 0.8 and max(aspects) > 1.25, (min(aspects), max(aspects))


@pytest.mark.parametrize("with_box", [False, True])
def test_train_crop_flip_resize_match_reference_oracle(photos, with_box):
    """The output is the oracle's crop of the window the sampler drew (checked against the reference's
    constraints above), flipped exactly when the seed says so (and far from the other choice)."""
    box = (0.2, 0.3, 0.7, 0.9)
    bbox = tf.constant([[box]]) if with_box else NO_BOX
    flips = set()
    for index, (name, jpeg) in enumerate(photos.items()):
        for seed in ([index, 0], [index, 1]):
            ours = preprocessing.preprocess_train(tf.constant(jpeg), bbox, tf.constant(seed, tf.int64)).numpy()
            crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(tf.constant(seed, tf.int64), 2))
            window = reference_window(jpeg, bbox, crop_seed)
            check_reference_window(window, tf.image.extract_jpeg_shape(jpeg).numpy()[:2], box if with_box else None)
            flip = expected_flip(seed)
            flips.add(flip)
            assert np.max(np.abs(ours - oracle_train(jpeg, window, flip))) <= 1e-3, (name, seed)
            assert np.max(np.abs(ours - oracle_train(jpeg, window, not flip))) > 1.0, (name, seed)
    assert flips == {False, True}                                       # both branches were exercised


def test_train_crops_are_reproducible_for_a_seed(photos):
    jpeg = tf.constant(photos["chelsea.png"])
    first = [preprocessing.preprocess_train(jpeg, NO_BOX, tf.constant([7, i], tf.int64)).numpy() for i in range(4)]
    again = [preprocessing.preprocess_train(jpeg, NO_BOX, tf.constant([7, i], tf.int64)).numpy() for i in range(4)]
    other = [preprocessing.preprocess_train(jpeg, NO_BOX, tf.constant([8, i], tf.int64)).numpy() for i in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_crop_windows_obey_the_reference_ranges(photos):
    jpeg = photos["astronaut.png"]
    height, width = tf.io.decode_jpeg(jpeg).shape[:2]
    box = np.array([0.25, 0.25, 0.75, 0.75])                          # ymin, xmin, ymax, xmax
    for i in range(50):
        y, x, h, w = preprocessing.distorted_crop_window(tf.image.extract_jpeg_shape(jpeg),
                                                         tf.constant(box[None, None], tf.float32),
                                                         tf.constant([3, i], tf.int64)).numpy()
        assert 0 <= y and y + h <= height and 0 <= x and x + w <= width
        if (h, w) == (height, width):
            continue                                                     # fallback: the whole image
        assert 0.05 * height * width * 0.95 <= h * w <= height * width
        assert 0.75 * 0.95 <= w / h <= 1.33 * 1.05
        overlap_h = max(0, min(y + h, 0.75 * height) - max(y, 0.25 * height))
        overlap_w = max(0, min(x + w, 0.75 * width) - max(x, 0.25 * width))
        assert overlap_h * overlap_w >= 0.1 * 0.25 * height * width * 0.95
