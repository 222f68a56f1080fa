"""How the simulated text-to-speech reads SSML: as words, the way an engine says them.

Twilio nests SSML in ``<Say>`` and Telnyx takes it as a ``payload_type: "ssml"`` payload;
both engines read ``<say-as interpret-as="digits">4711</say-as>`` digit by digit.  The
simulator's transcripts show what the caller hears, so it reads it the same way.  Other
elements (breaks, emphasis, prosody, other say-as) are read as their text.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

__all__ = ("spoken_words",)

_DIGITS = ("digits", "characters", "spell-out")


def spoken_words(element: ET.Element) -> str:
    """The words an element of speech (a ``<Say>``, a ``<speak>``) says, spaces normalised."""
    return " ".join(_read(element).split())


def _read(element: ET.Element) -> str:
    if element.tag == "say-as" and element.get("interpret-as") in _DIGITS:
        text = " ".join("".join(element.itertext()).replace(" ", ""))
    elif element.tag == "break":
        text = " "  # a pause, between words
    else:
        text = (element.text or "") + "".join(_read(child) for child in element)
    return text + (element.tail or "")
