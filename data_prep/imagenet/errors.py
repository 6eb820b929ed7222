"""Data prep's one error type (data_prep/errors.py), under the names the ImageNet modules import."""
from data_prep.errors import CorruptImageError, PrepError  # noqa: F401
