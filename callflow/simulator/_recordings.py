"""Recordings as real WAV files (8 kHz, mono, 16-bit) made with the stdlib `wave` module."""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Sequence

__all__ = ("make_wav", "wav_duration")

RATE = 8000


def make_wav(duration: float, talk: Sequence[tuple[float, float]] = ()) -> bytes:
    """A WAV of `duration` seconds: a 440 Hz tone where the caller talked, silence elsewhere.

    `talk` holds (start, end) offsets in seconds from the start of the recording.
    """
    frames = max(0, round(duration * RATE))
    samples = bytearray(frames * 2)
    for start, end in talk:
        first = max(0, round(start * RATE))
        last = min(frames, round(end * RATE))
        for i in range(first, last):
            value = int(8000 * math.sin(2 * math.pi * 440 * i / RATE))
            struct.pack_into("<h", samples, i * 2, value)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(samples))
    return buffer.getvalue()


def wav_duration(data: bytes) -> float | None:
    """The length in seconds of a WAV file, or None if it is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            return wav.getnframes() / float(wav.getframerate())
    except (wave.Error, EOFError, ValueError, ZeroDivisionError):
        return None
