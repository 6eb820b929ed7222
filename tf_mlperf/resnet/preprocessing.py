"""ImageNet preprocessing of the MLCommons ResNet reference (imagenet_preprocessing.py), op for op.

train: sample_distorted_bounding_box (bbox from the record when present, else the whole image; min object
       covered 0.1, aspect 3/4..4/3, area 5%..100%, 100 attempts) fused with JPEG decoding
       (decode_and_crop_jpeg), random left-right flip, bilinear resize to 224x224 (no aspect preservation).
eval:  decode, aspect-preserving bilinear resize to shortest side 256, central 224x224 crop.
both:  per-channel mean subtraction (RGB 123.68, 116.78, 103.94), no scaling.

Resizes use TF1 bilinear (`tf.compat.v1.image.resize`, align_corners=False, half_pixel_centers=False) as the
reference does; tf.image.resize (v2) samples at pixel centres and gives different numbers.

Randomness is stateless and seeded per example, so a crop depends only on (seed, example index) and not on
how many parallel map calls ran or in which order: train crops are reproducible for a seed.
"""
from __future__ import annotations

import tensorflow as tf

DEFAULT_IMAGE_SIZE = 224
NUM_CHANNELS = 3
CHANNEL_MEANS = (123.68, 116.78, 103.94)
RESIZE_MIN = 256                      # eval: shortest side before the central crop (for 224 output)

MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (0.75, 1.33)
AREA_RANGE = (0.05, 1.0)
MAX_ATTEMPTS = 100


def resize_bilinear_v1(image: tf.Tensor, height, width) -> tf.Tensor:
    """The reference's resize: TF1 bilinear, align_corners=False -> float32."""
    return tf.compat.v1.image.resize(image, [height, width], method=tf.image.ResizeMethod.BILINEAR,
                                     align_corners=False)


def mean_subtract(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) - tf.constant(CHANNEL_MEANS, tf.float32)


def distorted_crop_window(image_shape: tf.Tensor, bbox: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[offset_y, offset_x, height, width] of the reference's random crop, from a [2] seed.

    bbox: [1, num_boxes, 4] float boxes (ymin, xmin, ymax, xmax) in [0, 1]; num_boxes may be 0.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, bounding_boxes=bbox, seed=seed, min_object_covered=MIN_OBJECT_COVERED,
        aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=AREA_RANGE, max_attempts=MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True)
    offset_y, offset_x, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(size)
    return tf.stack([offset_y, offset_x, height, width])


def random_flip_left_right(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip with probability 1/2. A cond, not tf.image's where(reverse(x), x): only a flip pays for a copy."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def crop_flip_resize(jpeg: tf.Tensor, bbox: tf.Tensor, seed: tf.Tensor,
                     image_size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Train preprocessing up to, not including, the mean subtraction (the input pipeline does that per batch)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = distorted_crop_window(tf.image.extract_jpeg_shape(jpeg), bbox, crop_seed)
    # Fused: only the window's blocks are decoded.
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=NUM_CHANNELS)
    image = random_flip_left_right(image, flip_seed)
    image = resize_bilinear_v1(image, image_size, image_size)
    image.set_shape([image_size, image_size, NUM_CHANNELS])
    return image


def preprocess_train(jpeg: tf.Tensor, bbox: tf.Tensor, seed: tf.Tensor,
                     image_size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Random crop fused with decoding, flip, resize, centre."""
    return mean_subtract(crop_flip_resize(jpeg, bbox, seed, image_size))


def eval_resize_min(image_size: int) -> int:
    """Shortest side before the central crop: 256 for 224 (the reference's 0.875 crop ratio)."""
    return RESIZE_MIN if image_size == DEFAULT_IMAGE_SIZE else round(image_size * RESIZE_MIN / 224)


def smallest_side_at_least(height: tf.Tensor, width: tf.Tensor, resize_min: int):
    """New (height, width) with the shorter side = resize_min, truncated to int as the reference does."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = tf.constant(resize_min, tf.float32) / tf.minimum(height, width)
    return tf.cast(height * scale, tf.int32), tf.cast(width * scale, tf.int32)


def central_crop(image: tf.Tensor, crop_height: int, crop_width: int) -> tf.Tensor:
    shape = tf.shape(image)
    top, left = (shape[0] - crop_height) // 2, (shape[1] - crop_width) // 2
    return tf.slice(image, [top, left, 0], [crop_height, crop_width, -1])


def preprocess_eval(jpeg: tf.Tensor, image_size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    image = tf.io.decode_jpeg(jpeg, channels=NUM_CHANNELS)
    shape = tf.shape(image)
    height, width = smallest_side_at_least(shape[0], shape[1], eval_resize_min(image_size))
    image = central_crop(resize_bilinear_v1(image, height, width), image_size, image_size)
    image.set_shape([image_size, image_size, NUM_CHANNELS])
    return mean_subtract(image)
