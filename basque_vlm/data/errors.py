"""Data errors: a stable machine-readable kind, where it happened, and a one-line reason."""

from __future__ import annotations

import dataclasses
import enum


class ErrorKind(enum.StrEnum):
    """Why a record was rejected; the values are stable (they key "skipped by reason" summaries)."""

    INVALID_JSON = "invalid_json"      # a JSONL line / JSON list element that does not parse
    MALFORMED = "malformed"            # parses, but is not a record of a known format
    UNKNOWN_ROLE = "unknown_role"
    BAD_ORDER = "bad_order"            # the first non-system message is not a user message
    NO_ASSISTANT = "no_assistant"
    EMPTY_TEXT = "empty_text"
    IMAGE_COUNT = "image_count"        # placeholders in the text != images of the record
    MISSING_IMAGE = "missing_image"
    BAD_IMAGE = "bad_image"            # unreadable or corrupt image file
    TOO_LONG = "too_long"              # dropped: not even the first turn fits max_length
    NO_SUPERVISED = "no_supervised"    # dropped: no token would carry loss


class DataError(ValueError):
    """A bad record. ``record_id`` and/or ``line`` (of a JSON file) or ``row`` (of a table, from
    0) locate it; ``kind`` says why."""

    def __init__(self, kind: ErrorKind, message: str, *, record_id: str | None = None,
                 line: int | None = None, row: int | None = None):
        self.kind = ErrorKind(kind)
        self.message = message
        self.record_id = record_id
        self.line = line
        self.row = row
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"record {self.record_id!r}"] if self.record_id is not None else []
        where += [f"line {self.line}"] if self.line is not None else []
        where += [f"row {self.row}"] if self.row is not None else []
        return f"{', '.join(where) or 'record'}: {self.message} [{self.kind}]"


@dataclasses.dataclass(frozen=True)
class Unavailable:
    """A record left out because its image could not be downloaded: ``kind`` is the failure that
    ``download_images`` recorded (``http_404``, ``checksum``, ...). Not a bad record: dead links
    are the normal state of a URL dataset, and the download summary already counted them."""

    record_id: str
    kind: str
