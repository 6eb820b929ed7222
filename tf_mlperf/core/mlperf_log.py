"""MLPerf logging for tf_mlperf: a thin, chief-only layer over `mlperf_logging.mllog`.

Rank 0 writes `:::MLLOG {...}` lines to `--mllog_path` (the file the compliance checker reads; horovodrun
prefixes stdout, so stdout copies are for people only) and to stdout. Other ranks log nothing.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping

from mlperf_logging.mllog import mllog as mllog_impl
from mlperf_logging.mllog import constants

_ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MLPerfLogger:
    """Events go through mllog only on the chief; elsewhere every call is a no-op."""

    def __init__(self, path: str | None, enabled: bool = True, to_stdout: bool = True):
        self.path = path
        self.enabled = enabled
        self._mllogger = None
        if not enabled:
            return
        logger = logging.getLogger(f"tf_mlperf.mllog.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        if path:   # opened at the first line: a run refused before it logs anything leaves no file behind
            logger.addHandler(_LazyFileHandler(path))
        if to_stdout:
            logger.addHandler(logging.StreamHandler(sys.stdout))
        # stack offset 2: report the caller of event()/start()/end(), not this wrapper.
        self._mllogger = mllog_impl.MLLogger(logger=logger, default_stack_offset=2, root_dir=_ROOT_DIR)

    def event(self, key: str, value: Any = None, metadata: Mapping | None = None, **kw) -> None:
        if self._mllogger:
            self._mllogger.event(key=key, value=value, metadata=dict(metadata or {}), **kw)

    def start(self, key: str, value: Any = None, metadata: Mapping | None = None, **kw) -> None:
        if self._mllogger:
            self._mllogger.start(key=key, value=value, metadata=dict(metadata or {}), **kw)

    def end(self, key: str, value: Any = None, metadata: Mapping | None = None, **kw) -> None:
        if self._mllogger:
            self._mllogger.end(key=key, value=value, metadata=dict(metadata or {}), **kw)

    def submission_info(self, benchmark: str, org: str, platform: str, division: str = "closed",
                        status: str = "onprem") -> None:
        self.event(constants.SUBMISSION_BENCHMARK, benchmark)
        self.event(constants.SUBMISSION_ORG, org)
        self.event(constants.SUBMISSION_DIVISION, division)
        self.event(constants.SUBMISSION_STATUS, status)
        self.event(constants.SUBMISSION_PLATFORM, platform)

    def hyperparameters(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.event(key, value)

    def close(self) -> None:
        if self._mllogger:
            for handler in list(self._mllogger.logger.handlers):
                handler.flush()
                handler.close()
                self._mllogger.logger.removeHandler(handler)
            self._mllogger = None


class _LazyFileHandler(logging.FileHandler):
    """A FileHandler that creates its folder and file only when the first line is written."""

    def __init__(self, path: str):
        super().__init__(path, delay=True)

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return super()._open()


def draw_seed() -> int:
    """A fresh seed from the system's source of randomness (os.urandom), one of the sources the training
    rules allow; 31 bits so every consumer (tf, numpy, int32 seeds) takes it."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFF_FFFF


DROP_CACHES_FILE = "/proc/sys/vm/drop_caches"


def drop_caches() -> bool:
    """Clears the OS page cache as the rules ask before a run (needs root); returns whether it worked."""
    try:
        os.sync()
        with open(DROP_CACHES_FILE, "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False
