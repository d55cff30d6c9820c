"""Durations as people write them: 90, 90s, 10m, 2h, 1d, 1h30m (and +1h,
meaning "that much more", where an API accepts it)."""

import re
from typing import Tuple, Union

Duration = Union[str, int, float]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
# bounded: a duration longer than ~100 years is a typo, not a lease
MAX_SECONDS = 100 * 365 * 86400


def parse(value: Duration, what: str = "duration") -> Tuple[int, bool]:
    """(seconds, relative) of a duration: a number of seconds (int or
    float, rounded up to whole seconds), or a string of one or more
    NUMBER UNIT parts with units s, m, h, d, w ("90s", "10m", "1h30m"); a
    bare number string is seconds. A leading "+" sets relative. Raises
    ValueError with what in the message for anything else (negative,
    empty, unknown unit, over 100 years)."""
    relative = False
    if isinstance(value, bool):
        raise ValueError("%s: %r is not a duration" % (what, value))
    if isinstance(value, (int, float)):
        if not value >= 0 or value != value:
            raise ValueError("%s: %r is not a duration (negative or NaN)" % (what, value))
        secs = int(value) + (1 if value != int(value) else 0)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("+"):
            relative, text = True, text[1:].strip()
        if text.isdigit():
            secs = int(text)
        else:
            pos, secs = 0, 0
            for m in _PART.finditer(text):
                if m.start() != pos:
                    break
                secs += int(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if not text or pos != len(text):
                raise ValueError("%s: '%s' is not a duration (like 90s, 10m, 2h, 1d, 1h30m%s)"
                                 % (what, value, ", +1h" if relative else ""))
    else:
        raise ValueError("%s: %r is not a duration" % (what, value))
    if secs > MAX_SECONDS:
        raise ValueError("%s: '%s' is over 100 years" % (what, value))
    return secs, relative


def seconds(value: Duration, what: str = "duration") -> int:
    """Seconds of an absolute duration ("+..." is refused)."""
    secs, relative = parse(value, what)
    if relative:
        raise ValueError("%s: '%s' cannot be relative here" % (what, value))
    return secs
