"""What an SMS text costs and whether it says how to opt out.

Shared by the SMS provider (the opt-out line, the preview's cost) and the sandbox's Twilio
(``num_segments`` in its answer), so both count segments the same way.

A text made only of GSM 03.38 characters travels as GSM-7: 160 characters in one segment,
153 per segment when split (the extension-table characters count twice). Any other
character makes the whole text UCS-2: 70 UTF-16 units in one segment, 67 when split.
"""

from __future__ import annotations

import math
import re

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")
GSM7, UCS2 = "GSM-7", "UCS-2"

# The keywords carriers and Twilio honour as an opt-out reply.
OPT_OUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
_OPT_OUT = re.compile(r"\b(?:" + "|".join(OPT_OUT_KEYWORDS) + r")\b", re.IGNORECASE)


def encoding(text: str) -> str:
    """``GSM-7`` when every character is in the GSM 03.38 tables, else ``UCS-2``."""
    return GSM7 if all(c in GSM_BASIC or c in GSM_EXTENDED for c in text) else UCS2


def segments(text: str) -> int:
    """How many segments (billed messages) *text* travels as."""
    if encoding(text) == GSM7:
        units = sum(2 if c in GSM_EXTENDED else 1 for c in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def has_opt_out(text: str) -> bool:
    """Whether *text* holds an opt-out keyword as a word, in any case."""
    return _OPT_OUT.search(text) is not None


def with_opt_out(text: str, opt_out: str) -> str:
    """*text*, with *opt_out* appended unless it already names an opt-out keyword (or
    *opt_out* is empty): after a space, or a line break when the text has several lines."""
    if not opt_out or has_opt_out(text):
        return text
    return f"{text}{chr(10) if chr(10) in text else ' '}{opt_out}"
