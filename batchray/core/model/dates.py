"""Date text as CODAP reads it: :func:`parse_codap_date`.

CODAP keeps a date attribute's values as the text it was given and parses them when it needs a
date, with the formats of CODAP v3's ``v3/src/utilities/date-parser.ts``
(``parseDateV2Compatible``, the rules v2 applied too). The formats taken here, in that file's
order (English month and day names, as CODAP's default locale writes them):

* ``5/25/2019``, ``5/25/19``, ``5/25/2019 10:04``, ``8/7/2017 12:01 PM``,
  ``5/25/2019, 10:04:32.123 am`` (``localDateTimeRE``: month/day/year, an optional time of day
  with seconds, fractions and am/pm);
* ISO 8601 calendar dates and date-times: ``2019-05``, ``2019-05-25``, ``2019-05-25 10:04Z``,
  ``2019-05-25T10:04:03.123+01:00`` (``isoDateTimeRE``);
* ``Tue Jul  9 18:16:04 PDT 2019`` (``unixDate``), ``Tue Jul 09 2019 18:16:04 GMT-0700 (PDT)``
  (``browserDate``), ``Tue, 09 Jul 2019 18:16:04 GMT`` (``utcDate``);
* ``2019.05.25``, ``2019/05/25 10:04 pm`` (``dateVar2``), ``25 Oct 2019`` (``dateVar1``),
  ``Oct 25, 2019``, ``Oct. 25, 2019 10:04 am``, ``Tuesday, October 25, 2019`` (``dateVar3``),
  a bare year ``2019`` and ``10:04 PM on 5/25/2019`` (``dateVar4``).

Two-digit years follow CODAP's ``fixYear``: 00-49 are 20xx, 50-99 are 19xx; 12 am is hour 0
and 12 pm hour 12 (``fixHour``). CODAP lets days and months overflow as JavaScript's ``Date``
does (``isValidDateSpec``); :func:`parse_codap_date` does the same (``2/30/2019`` is
March 2), so that every value CODAP reads as a date is one here.

:func:`parse_codap_date` returns a naive :class:`datetime.datetime` (time zones are read but
not applied; batchray stores the text as given) or ``None`` for text CODAP does not read as a
date. Seconds since the epoch are numbers, not text, and are not this module's concern.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Optional

_MONTHS_FULL = ["january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december"]
_MONTHS_ABBR = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS_FULL = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
_DAYS_ABBR = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

_MONTH_RE = "|".join([*_MONTHS_ABBR, *(m + r"\." for m in _MONTHS_ABBR), *_MONTHS_FULL])
_ABBR_RE = "|".join(_MONTHS_ABBR)
_DOW_RE = "|".join(_DAYS_FULL + _DAYS_ABBR)
_DOW_ABBR_RE = "|".join(_DAYS_ABBR)
_TIME = r"(\d\d?)(?::(\d\d?)(?::(\d\d)(?:\.(\d+))?)?)?"

# (pattern, group of: year, month, day, hour, minute, second, fraction, am/pm); 0 = absent
_FORMATS: list[tuple[re.Pattern[str], tuple[int, ...]]] = [
    (re.compile(r"^([01]?\d)/([0-3]?\d)/(\d{4}|\d{2})(?:,? (\d\d?)(?::(\d\d?)(?::(\d\d)(?:\.(\d+))?)?)?"
                r"(?: ?(am|pm|AM|PM))?)?$"), (3, 1, 2, 4, 5, 6, 7, 8)),
    (re.compile(r"^(\d{4})-([01]\d)(?:-([0-3]\d)(?:[T ]([0-2]\d)(?::([0-5]\d)(?::([0-5]\d)(?:[.,](\d+))?)?)?"
                r"(Z|(?:[+-]\d\d:?\d\d?)| ?[a-zA-Z]{1,4}T)?)?)?$"), (1, 2, 3, 4, 5, 6, 7, 0)),
    (re.compile(rf"^(?:(?:{_DOW_ABBR_RE}) )?({_ABBR_RE}) ([ \d]\d) ([ \d]\d):(\d\d):(\d\d) ([A-Z]{{3}}) (\d{{4}})$",
                re.I), (7, 1, 2, 3, 4, 5, 0, 0)),
    (re.compile(rf"^(?:{_DOW_ABBR_RE}) ({_ABBR_RE}) (\d\d?),? (\d{{4}})(?: {_TIME} "
                r"(GMT(?:[+-]\d{4})?(?: \([\w ]+\))?))", re.I), (3, 1, 2, 4, 5, 6, 7, 0)),
    (re.compile(rf"^(?:{_DOW_ABBR_RE}),? (\d\d?) ({_ABBR_RE}) (\d{{4}}) {_TIME} GMT$", re.I),
     (3, 2, 1, 4, 5, 6, 7, 0)),
    (re.compile(rf"^(\d{{4}})[./-](\d\d?)[./-](\d\d?)(?: {_TIME}(?: (am|pm|AM|PM))?)?$"),
     (1, 2, 3, 4, 5, 6, 7, 8)),
    (re.compile(rf"^(\d\d?) ({_MONTH_RE}),? (\d{{4}})(?: {_TIME}(?: (am|pm))?)?$", re.I),
     (3, 2, 1, 4, 5, 6, 7, 8)),
    (re.compile(rf"^(?:(?:{_DOW_RE}),? )?({_MONTH_RE})(?: (\d\d?),)? (\d{{4}})(?: {_TIME}(?: (am|pm))?)?$", re.I),
     (3, 1, 2, 4, 5, 6, 7, 8)),
    (re.compile(r"^(\d{4})$"), (1, 0, 0, 0, 0, 0, 0, 0)),
    # CODAP's dateVar4 maps its groups as year=5, month=6, day=7 (sic: the day/month/year text
    # "on 25/5/2019" is read with the day as the year); it is unanchored at the end and start
    (re.compile(r"(\d\d?):(\d\d)(?::(\d\d))? (AM|PM) on (\d\d?)/(\d\d?)/(\d{4})"), (5, 6, 7, 1, 2, 3, 0, 4)),
]

_MONTH_NAMES = _MONTHS_ABBR + [m + "." for m in _MONTHS_ABBR] + _MONTHS_FULL


def _year(text: str) -> int:
    year = int(text)
    if year < 50:
        return 2000 + year
    if year < 100:
        return 1900 + year
    return year


def _month(text: Optional[str]) -> int:
    if not text:
        return 1
    if text.isdigit():
        return int(text)
    return _MONTH_NAMES.index(text.lower()) % 12 + 1


def _hour(text: Optional[str], ampm: Optional[str]) -> int:
    hour = int(text or 0)
    if ampm is not None and 0 < hour <= 12:
        hour %= 12
        if ampm.lower() == "pm":
            hour += 12
    return hour


def parse_codap_date(text: str) -> Optional[_dt.datetime]:
    """``text`` read as CODAP reads a date (see the module's docstring), or ``None``."""
    value = text.strip()
    if not value or len(value) > 80 or not value.isascii():  # JavaScript reads ASCII digits only
        return None
    for pattern, groups in _FORMATS:
        match = pattern.match(value) if pattern.pattern.startswith("^") else pattern.search(value)
        if match is None:
            continue
        g = [match.group(i) if i else None for i in groups]
        try:
            year, month, day = _year(g[0]), _month(g[1]), int(g[2] or 1)
            hour, minute, second = _hour(g[3], g[7]), int(g[4] or 0), int(g[5] or 0)
            millis = int(g[6] or 0)  # CODAP passes the digits after the point as milliseconds
            # JavaScript's Date lets months, days and times overflow into the next unit
            base = _dt.datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)
            return base + _dt.timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second,
                                        milliseconds=millis)
        except (ValueError, OverflowError):
            return None
    return None


__all__ = ["parse_codap_date"]
