"""The order of group values: user columns hold numbers as text, and "10" must not come before "9"."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import numpy as np

# A JSON number as its text (no sign but "-", no spaces: text around a number makes it text).
JSON_NUMBER: Final[str] = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_JSON_NUMBER: Final[re.Pattern[str]] = re.compile(JSON_NUMBER)


def as_number(value: object) -> float | None:
    """The value as a number when it is one or is the text of a JSON number; else None (booleans too)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str) and _JSON_NUMBER.fullmatch(value):
        return float(value)
    return None


def value_order(values: Sequence[object]) -> list[int]:
    """Positions of ``values`` in display order.

    By number when every value is a number or the text of one (equal numbers
    spelled two ways, "1.0" and "1e0", by their text); else as the values
    compare, or by their text when they do not.

    Examples
    --------
    >>> [["10", "9", "1e0"][i] for i in value_order(["10", "9", "1e0"])]
    ['1e0', '9', '10']
    >>> [["b", "10", "a"][i] for i in value_order(["b", "10", "a"])]
    ['10', 'a', 'b']
    """
    positions = range(len(values))
    numbers = [as_number(value) for value in values]
    if values and all(number is not None for number in numbers):
        return sorted(positions, key=lambda i: (numbers[i], str(values[i])))
    try:
        return sorted(positions, key=lambda i: values[i])  # type: ignore[arg-type,return-value]
    except TypeError:
        return sorted(positions, key=lambda i: str(values[i]))
