"""``Speech``: a portable subset of SSML, built in Python so user text is always escaped.

A flow builds what it says from parts (plain strings are text, escaped on the way
out) and a few marks that every speech platform understands::

    Speech("Your total is ", Speech.currency("19.00", "EUR"), ".", Speech.pause(0.5),
           "Your code is ", Speech.digits("4711"))

Each ``Speech`` has two renderings, both computed once, when it is built:

- ``ssml``: an ``<speak>`` document with only ``<break>``, ``<say-as>``,
  ``<emphasis>`` and ``<prosody>``, which platforms that take SSML receive (Twilio
  nests it in ``<Say>``, Telnyx sends it with ``payload_type: "ssml"``);
- ``text``: the same message in plain words, for platforms that only read text
  (BlueVia) and for transcripts: digits spaced out one by one, a date and an amount
  written as a person reads them (English), pauses as commas.

Only what ``Speech`` builds can become SSML: a string is never parsed as markup, so
text from a caller or a database cannot inject tags.
"""

from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal, InvalidOperation
from typing import Literal, TypeAlias
from xml.sax.saxutils import escape, quoteattr

__all__ = ("EmphasisLevel", "ProsodyPitch", "ProsodyRate", "ProsodyVolume", "Speech")

EmphasisLevel: TypeAlias = Literal["strong", "moderate", "reduced"]
ProsodyRate: TypeAlias = Literal["x-slow", "slow", "medium", "fast", "x-fast"]
ProsodyPitch: TypeAlias = Literal["x-low", "low", "medium", "high", "x-high"]
ProsodyVolume: TypeAlias = Literal["silent", "x-soft", "soft", "medium", "loud", "x-loud"]

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
# How an amount is read: the unit, its plural, and the hundredth's (ISO 4217 codes).
_CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    "EUR": ("euro", "euros", "cent", "cents"),
    "USD": ("dollar", "dollars", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
    "CHF": ("franc", "francs", "centime", "centimes"),
    "MXN": ("peso", "pesos", "centavo", "centavos"),
}
MAX_PAUSE = 10.0
"""The longest ``<break>`` (seconds) SSML engines honour (Polly and Google: 10 s)."""


def _tidy(text: str) -> str:
    """A plain reading without the doubled marks a pause's comma leaves ("Hello., ")."""
    text = re.sub(r"([.!?;:,])(\s*,)+", r"\1", text)
    return re.sub(r"\s+", " ", text).strip(" ,") if text.strip(" ,") else ""


class Speech:
    """Something to say, with pauses, digits, dates, amounts, emphasis and prosody.

    ``Speech(*parts)`` joins strings (escaped text) and other ``Speech`` values;
    ``+`` joins two.  Pass it wherever a flow passes text to say: ``call.say``, a
    ``gather``'s or ``menu``'s prompt.
    """

    __slots__ = ("_markup", "text")
    _markup: str
    text: str

    def __init__(self, *parts: str | Speech) -> None:
        markup: list[str] = []
        text: list[str] = []
        for part in parts:
            if isinstance(part, Speech):
                markup.append(part._markup)
                text.append(part.text)
            elif isinstance(part, str):
                markup.append(escape(part))
                text.append(part)
            else:
                raise TypeError(f"Speech parts are str or Speech, not {type(part).__name__}")
        self._markup = "".join(markup)
        self.text = _tidy("".join(text))

    @classmethod
    def _raw(cls, markup: str, text: str) -> Speech:
        speech = cls.__new__(cls)
        speech._markup, speech.text = markup, text
        return speech

    @property
    def ssml(self) -> str:
        """The SSML document: ``<speak>...</speak>``."""
        return f"<speak>{self._markup}</speak>"

    def __add__(self, other: str | Speech) -> Speech:
        return Speech(self, other)

    def __radd__(self, other: str) -> Speech:
        return Speech(other, self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Speech) and other._markup == self._markup

    def __hash__(self) -> int:
        return hash(self._markup)

    def __repr__(self) -> str:
        return f"Speech({self.ssml!r})"

    # -- marks ----------------------------------------------------------------------------

    @classmethod
    def pause(cls, seconds: float) -> Speech:
        """Silence for ``seconds`` (at most 10) inside the speech."""
        if not 0 <= seconds <= MAX_PAUSE:
            raise ValueError(f"a pause lasts 0 to {MAX_PAUSE:g} seconds, not {seconds!r}")
        return cls._raw(f'<break time="{round(seconds * 1000)}ms"/>', ", ")

    @classmethod
    def digits(cls, digits: str) -> Speech:
        """Read ``digits`` one by one ("4 7 1 1"), not as a number."""
        if not digits or not all(c.isdigit() or c in "*#" for c in digits):
            raise ValueError(f"digits() reads digits (and * #), not {digits!r}")
        return cls._raw(f'<say-as interpret-as="digits">{escape(digits)}</say-as>',
                        " ".join(digits))

    @classmethod
    def date(cls, day: _dt.date) -> Speech:
        """Read a date as a date ("3 December 2026"), whatever the voice's language."""
        if not isinstance(day, _dt.date):
            raise TypeError(f"date() takes a datetime.date, not {type(day).__name__}")
        iso = f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
        return cls._raw(f'<say-as interpret-as="date" format="ymd">{iso}</say-as>',
                        f"{day.day} {_MONTHS[day.month - 1]} {day.year}")

    @classmethod
    def currency(cls, amount: Decimal | str | int, code: str) -> Speech:
        """Read an amount of money ("19 euros", "4 euros 50"), never "19.00 euros".

        ``code`` is ISO 4217 (EUR, USD, GBP, CHF, MXN); ``amount`` a ``Decimal``, an
        ``int`` or a decimal string (not a ``float``: money is not approximate).
        """
        names = _CURRENCIES.get(code.upper())
        if names is None:
            raise ValueError(f"currency() knows {', '.join(_CURRENCIES)}, not {code!r}")
        if isinstance(amount, float | bool):
            raise TypeError("currency() takes a Decimal, an int or a string, not a float")
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise ValueError(f"currency(): {amount!r} is not an amount") from None
        if not value.is_finite() or value < 0:
            raise ValueError(f"currency(): {amount!r} is not an amount")
        cents = int((value * 100).to_integral_value())
        whole, fraction = divmod(cents, 100)
        unit, units, sub, subs = names
        spoken = [(whole, unit if whole == 1 else units)]
        if fraction:
            spoken.append((fraction, sub if fraction == 1 else subs))
        words = " ".join(f"{number} {name}" for number, name in spoken)
        markup = " ".join(f'<say-as interpret-as="cardinal">{number}</say-as> {name}'
                          for number, name in spoken)
        return cls._raw(markup, words)

    @classmethod
    def emphasis(cls, *parts: str | Speech, level: EmphasisLevel = "moderate") -> Speech:
        """Say ``parts`` with emphasis."""
        if level not in ("strong", "moderate", "reduced"):
            raise ValueError(f"emphasis level {level!r} is not strong, moderate or reduced")
        inner = Speech(*parts)
        return cls._raw(f'<emphasis level="{level}">{inner._markup}</emphasis>', inner.text)

    @classmethod
    def prosody(cls, *parts: str | Speech, rate: ProsodyRate | None = None,
                pitch: ProsodyPitch | None = None, volume: ProsodyVolume | None = None
                ) -> Speech:
        """Say ``parts`` slower or faster, higher or lower, softer or louder."""
        attributes = ""
        for name, value, allowed in (
            ("rate", rate, ("x-slow", "slow", "medium", "fast", "x-fast")),
            ("pitch", pitch, ("x-low", "low", "medium", "high", "x-high")),
            ("volume", volume, ("silent", "x-soft", "soft", "medium", "loud", "x-loud")),
        ):
            if value is None:
                continue
            if value not in allowed:
                raise ValueError(f"prosody {name} {value!r} is not one of {', '.join(allowed)}")
            attributes += f" {name}={quoteattr(value)}"
        if not attributes:
            raise ValueError("prosody() needs a rate, a pitch or a volume")
        inner = Speech(*parts)
        return cls._raw(f"<prosody{attributes}>{inner._markup}</prosody>", inner.text)
