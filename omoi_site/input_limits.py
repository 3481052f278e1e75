"""What any door refuses before a service sees it: text PostgreSQL cannot store, unbounded integers, and
JSON nested deeper than any real argument needs.

`find_unacceptable_value` walks a decoded JSON value without recursion (so a hostile 100,000-deep array
cannot exhaust the stack) and returns a message that names the place and the fix, or None.
"""

from __future__ import annotations

import re
from typing import Any

MAX_JSON_DEPTH = 32
INTEGER_MIN, INTEGER_MAX = -(2**63), 2**63 - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL (\\u0000) character; remove it"
    if _LONE_SURROGATE.search(text):
        return "contains a lone UTF-16 surrogate (e.g. \\ud800), which is not text; send valid Unicode"
    return None


def find_unacceptable_value(value: Any, *, root: str = "body") -> str | None:
    """The first problem in a decoded JSON value, as a sentence naming where it is; None when acceptable."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"{path} is nested more than {MAX_JSON_DEPTH} levels deep; flatten the value."
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{path} {problem}."
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if not INTEGER_MIN <= item <= INTEGER_MAX:
                return f"{path} is an integer outside the 64-bit range; send a smaller number."
        elif isinstance(item, dict):
            for key, child in item.items():
                key_problem = _text_problem(str(key))
                if key_problem:
                    return f"a key in {path} {key_problem}."
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, (list, tuple)):
            for index, child in enumerate(item):
                stack.append((child, f"{path}[{index}]", depth + 1))
    return None
