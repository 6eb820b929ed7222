"""The one reader of MLPerf logs (`:::MLLOG {json}` lines), for everything that reads them: the scorer, the
packager, the campaign's results-folder check and the demo. The writer is core/mlperf_log.py (mlperf-logging's
mllog); the official checkers parse the same lines with their own parser."""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

MARK = ":::MLLOG "


@dataclasses.dataclass(frozen=True)
class Event:
    key: str
    value: Any
    metadata: dict
    time_ms: int | None
    line: int                   # 1-based line number in the file


@dataclasses.dataclass
class Log:
    path: pathlib.Path
    events: list[Event]
    errors: list[tuple[int, str]]       # (line number, why) of :::MLLOG lines that do not parse (a cut log)

    def all(self, key: str) -> list[Event]:
        return [e for e in self.events if e.key == key]

    def first(self, key: str) -> Event | None:
        return next((e for e in self.events if e.key == key), None)

    def value(self, key: str, default=None):
        event = self.first(key)
        return default if event is None else event.value


def parse_line(text: str, number: int = 0) -> Event | None:
    """The event of one line (None when it holds no :::MLLOG); ValueError when the JSON after it is cut."""
    if MARK not in text:
        return None
    record = json.loads(text.split(MARK, 1)[1])
    if not isinstance(record, dict) or "key" not in record:
        raise ValueError("no 'key' in the event")
    return Event(str(record["key"]), record.get("value"), record.get("metadata") or {},
                 record.get("time_ms"), number)


def read_log(path) -> Log:
    """Every event of the log at `path` (OSError when it cannot be read); unparsable lines in `errors`."""
    path = pathlib.Path(path)
    events, errors = [], []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            event = parse_line(text, number)
        except ValueError as error:    # json.JSONDecodeError included
            errors.append((number, getattr(error, "msg", str(error))))
            continue
        if event is not None:
            events.append(event)
    return Log(path, events, errors)
