"""Recording a call in the background while the flow goes on.

``rec = await call.start_recording(dual=True)`` starts it and returns at once; the flow
speaks, gathers and dials as usual; ``await rec.stop()`` (or leaving
``async with call.recording(...)``) stops it.  The platform reports the saved file
later: ``rec.result`` is then a ``RecordResult`` (URL and duration), and every
recording of the call is in ``call.recordings``, for the flow and for the call's record
when it ends.  A recording still running when the call ends is stopped by the platform,
which reports it if the app still holds the call.

==================  ===========================================  =========================
neutral             Twilio (TwiML)                               Telnyx (Call Control)
==================  ===========================================  =========================
start               ``<Start><Recording name channels             ``record_start`` (``channels``
                    recordingStatusCallback>``                   ``single``/``dual``)
stop                ``<Stop><Recording name>``                   ``record_stop``
saved               the ``recordingStatusCallback`` request      ``call.recording.saved``
==================  ===========================================  =========================

BlueVia records only while the flow waits (``record``): the start-up check refuses
``start_recording`` and ``recording`` there.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from ._commands import StopRecording
from ._results import RecordResult

if TYPE_CHECKING:
    from ._session import Session

__all__ = ("Recording",)

UNSAVED_MEMORY = 1000
"""How many ended calls with a recording not yet saved the app remembers (``App``)."""


class Recording:
    """A background recording of the call: ``stop()`` it; ``result`` once it is saved."""

    __slots__ = ("_session", "dual", "id", "result", "stopped")

    def __init__(self, session: Session, id: int, *, dual: bool) -> None:
        self._session = session
        self.id = id
        self.dual = dual
        self.stopped = False
        self.result: RecordResult | None = None
        """The saved recording, once the platform has reported it (None until then)."""

    def __repr__(self) -> str:
        state = "saved" if self.result else "stopped" if self.stopped else "recording"
        return f"<Recording {self.id} {state}{' dual' if self.dual else ''}>"

    async def stop(self) -> None:
        """Stop recording (queued, like ``say``; a second stop does nothing)."""
        if self.stopped:
            return
        self.stopped = True
        self._session.queue(StopRecording(self.id))

    async def __aenter__(self) -> Recording:
        return self

    @staticmethod
    def take(recordings: list[Recording], id: int, result: RecordResult) -> bool:
        """Give recording ``id`` of ``recordings`` its saved file; False if it is not there."""
        found = next((r for r in recordings if r.id == id), None)
        if found is None:
            return False
        found.result = result
        return True

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._session.ended:
            await self.stop()
