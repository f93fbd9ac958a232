"""Values that released evaluation sets store as strings: a list written as a JSON or Python
literal (``'["dog", "cat"]'``, ``"['dog', 'cat']"``), an index written in digits (``"2"``).

Python literals are read with ``ast.literal_eval``, never ``eval``. A numpy array's repr
(``"['dog' 'cat']"``) is refused rather than read: Python would join its adjacent strings into
one option.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import tokenize
from typing import Any


def parse_list(text: str) -> list[Any] | None:
    """The list ``text`` writes (JSON, or a Python list or tuple literal); None if it writes
    none."""
    try:
        value = json.loads(text)
    except ValueError:
        if _adjacent_strings(text):
            return None
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return list(value) if isinstance(value, (list, tuple)) else None


def parse_index(value: Any) -> int | None:
    """A non-negative index given as an int or as a string of digits; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def _adjacent_strings(text: str) -> bool:
    """Whether two string literals follow each other with nothing between them."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
    except (tokenize.TokenError, SyntaxError):
        return False  # not a literal at all: literal_eval says so
    return any(a.type == b.type == tokenize.STRING for a, b in itertools.pairwise(tokens))
