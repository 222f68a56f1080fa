"""Answering-machine detection: what an outbound call may ask for, and who answered.

``App.call(..., machine_detection="detect")`` asks the platform who picked up; the flow
starts once it knows, with ``call.answered_by`` set.  ``"wait_for_beep"`` also waits,
when a machine answered, until its greeting is over (the beep), so that what the flow
says next lands in the mailbox.  Each platform says it in its own terms:

==================  ==========================================  ===========================
neutral             Twilio (Calls API ``MachineDetection``)     Telnyx (dial's
                                                                ``answering_machine_detection``)
==================  ==========================================  ===========================
``detect``          ``Enable``: ``AnsweredBy`` on the ``Url``   ``detect``:
                    request                                     ``call.machine.detection.ended``
``wait_for_beep``   ``DetectMessageEnd``: the ``Url`` request   ``greeting_end``: then also
                    comes after the greeting                    ``call.machine.greeting.ended``
==================  ==========================================  ===========================

BlueVia has no detection: ``App.call`` refuses the option there.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = ("AnsweredBy", "MachineDetection")

MachineDetection: TypeAlias = Literal["detect", "wait_for_beep"]
AnsweredBy: TypeAlias = Literal["human", "machine", "unknown"]
