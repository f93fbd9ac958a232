"""Stream JSON values, with their line numbers, from a JSONL file or a JSON list file.

Neither reader holds more than one record (plus a read-ahead chunk) in memory, so a multi-GB LLaVA
JSON list streams like JSONL. A JSONL line that does not parse is reported and reading goes on; in
a JSON list a syntax error ends the stream (nothing after it can be located reliably).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import IO, Any

from basque_vlm.data.errors import DataError, ErrorKind

CHUNK = 1 << 20
_SPACE = re.compile(r"\s*")
_decoder = json.JSONDecoder()


def read_json_records(path: str | os.PathLike) -> Iterator[tuple[int, Any] | DataError]:
    """``(line, value)`` per record, or a ``DataError`` (kind ``invalid_json``) for one that does
    not parse. The format is told by the first non-blank character: ``[`` is a JSON list, else
    JSONL."""
    with open(path, encoding="utf-8") as f:
        is_list = f.read(CHUNK).lstrip().startswith("[")
        f.seek(0)
        yield from (_json_list(f) if is_list else _jsonl(f))


def _jsonl(f: IO[str]) -> Iterator[tuple[int, Any] | DataError]:
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            yield DataError(ErrorKind.INVALID_JSON, f"invalid JSON: {e.msg} (column {e.colno})",
                            line=number)


def _json_list(f: IO[str]) -> Iterator[tuple[int, Any] | DataError]:
    buf, pos, line = f.read(CHUNK), 0, 1  # ``line`` is the line number of buf[pos]
    eof = False

    def advance(to: int) -> None:
        nonlocal pos, line
        line += buf.count("\n", pos, to)
        pos = to

    def refill() -> None:  # keep buf[pos:], append the next chunk
        nonlocal buf, pos, eof
        more = f.read(CHUNK)
        eof = not more
        buf, pos = buf[pos:] + more, 0

    def skip_space() -> str:
        while True:
            advance(_SPACE.match(buf, pos).end())
            if pos < len(buf) or eof:
                return buf[pos:pos + 1]
            refill()

    skip_space()
    advance(pos + 1)  # the "["
    expect_value, first = True, True
    while True:
        char = skip_space()
        if char == "]" and (first or not expect_value):
            return
        if char == "," and not expect_value:
            advance(pos + 1)
            expect_value = True
            continue
        if not expect_value or not char:
            reason = "expected ',' or ']'" if char else "unexpected end of file"
            yield DataError(ErrorKind.INVALID_JSON, f"invalid JSON list: {reason}", line=line)
            return
        try:
            value, end = _decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            if not eof:  # the value may only be cut by the chunk boundary
                refill()
                continue
            yield DataError(ErrorKind.INVALID_JSON, f"invalid JSON: {e.msg}",
                            line=line + buf.count("\n", pos, e.pos))
            return
        yield line, value
        advance(end)
        expect_value, first = False, False
