"""Test helpers: run flows with a scripted caller and network, in virtual time."""

from ._fake import DialOutcome, FakeCall, Line

__all__ = ("DialOutcome", "FakeCall", "Line")
