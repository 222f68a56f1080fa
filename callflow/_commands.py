"""Platform-neutral call-control commands.

A flow's verbs become these values; a platform adapter renders them on the wire.
``Say`` and ``Play`` double as prompts for ``gather``, ``record`` and ``menu``.
Blocking commands carry the ``step`` the session waits on, so the adapter can
route the platform's answer back to the right ``await``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = (
    "BlockingCommand",
    "Command",
    "Conference",
    "ConferenceOptions",
    "Dequeue",
    "Dial",
    "Enqueue",
    "Gather",
    "Hangup",
    "Pause",
    "Play",
    "Prompt",
    "Record",
    "Resume",
    "Say",
    "SendDigits",
    "SpeechInput",
    "StartRecording",
    "StopRecording",
    "Transfer",
    "Voice",
)

Voice: TypeAlias = Literal["female", "male"]
"""The portable voices; ``voice=`` also takes a provider's own voice name ("Polly.Joanna")."""
HangupReason: TypeAlias = Literal["rejected", "busy"]
SpeechInput: TypeAlias = Literal["dtmf", "speech", "dtmf speech"]
"""What a ``gather`` listens for: keys, speech, or either (Twilio's own spelling)."""
DTMF_OUT = frozenset("0123456789*#w")
"""What ``send_digits`` sends: keys, and ``w`` for half a second's pause."""


@dataclass(frozen=True, slots=True)
class Say:
    """Speak ``text`` to the caller with text to speech.

    ``ssml`` is the same message as an SSML document (built by ``Speech``) for the
    platforms that take one; ``text`` is its plain reading.  ``language`` (BCP 47,
    "es-ES") None is the platform's default.
    """

    text: str
    voice: str = "female"
    repeat: int = 1
    language: str | None = None
    ssml: str | None = None


@dataclass(frozen=True, slots=True)
class Play:
    """Play the audio file at ``url`` (MP3 or WAV)."""

    url: str
    repeat: int = 1


Prompt: TypeAlias = Say | Play


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence for ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Gather:
    """Play ``prompt`` then collect keys or speech; answered by input or a timeout.

    ``input`` says what to listen for; ``hints`` are words and phrases the caller is
    likely to say; ``language`` (BCP 47) the one they speak.  ``barge_in``: True, a
    key or speech stops the prompt; False, the prompt plays out first; None, the
    platform's own default.
    """

    step: int
    prompt: Prompt | None = None
    num_digits: int = 0
    finish_on_key: str = "#"
    valid_digits: str = "0123456789*#"
    timeout: float = 5.0
    retries: int = 1
    input: SpeechInput = "dtmf"
    hints: tuple[str, ...] = ()
    language: str | None = None
    barge_in: bool | None = None


@dataclass(frozen=True, slots=True)
class SendDigits:
    """Send DTMF tones down the line (to another IVR); ``w`` waits half a second."""

    digits: str


@dataclass(frozen=True, slots=True)
class Record:
    """Record the caller; answered with the recording's URL and duration."""

    step: int
    prompt: Prompt | None = None
    max_length: float = 60.0
    silence_timeout: float = 15.0
    beep: bool = False
    finish_on_key: str | None = None


@dataclass(frozen=True, slots=True)
class Dial:
    """Ring one or several numbers at once and bridge the caller to the first to answer."""

    step: int
    numbers: tuple[str, ...]
    caller_id: str | None = None
    timeout: float = 30.0
    on_answer: Prompt | None = None


@dataclass(frozen=True, slots=True)
class ConferenceOptions:
    """A conference room's properties, as the BlueVia protocol names them."""

    beeps_on_enter: Literal[0, 1, 2] = 0
    speak_on_enter: str | None = None
    beeps_on_exit: Literal[0, 1, 2] = 0
    speak_on_exit: str | None = None
    play_on_exit: str | None = None
    end_on_exit: bool = False
    start_on_enter: bool = True
    mute: bool = False
    max_members: int = 41
    time_limit: float = 0.0


@dataclass(frozen=True, slots=True)
class Conference:
    """Put the caller in the conference room ``name`` until they leave it."""

    step: int
    name: str
    options: ConferenceOptions = ConferenceOptions()


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call."""

    reason: HangupReason = "rejected"


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the caller over to ``number`` and leave the call (a blind transfer).

    The call's last command: the caller talks to ``number`` until either hangs up,
    and the flow is over.
    """

    number: str
    caller_id: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Put the caller in queue ``name`` until an agent takes them (or they leave it).

    They hear ``music`` (an audio URL; None: silence) and, every ``announce_every``
    seconds, their position and the expected wait.  ``max_wait`` (0: none) takes them out
    of the queue after that many seconds of waiting.
    """

    step: int
    name: str
    music: str | None = None
    announce_every: float = 30.0
    max_wait: float = 0.0


@dataclass(frozen=True, slots=True)
class Dequeue:
    """Bridge the caller (an agent) to the caller who waited longest in queue ``name``,
    waiting up to ``timeout`` seconds for one to arrive."""

    step: int
    name: str
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Start recording the call in the background; ``id`` names it for ``StopRecording``.

    ``dual`` keeps each party on a channel of its own (stereo) where the platform can.
    """

    id: int
    dual: bool = False


@dataclass(frozen=True, slots=True)
class StopRecording:
    """Stop the background recording ``id``; the platform reports it saved later."""

    id: int


@dataclass(frozen=True, slots=True)
class Resume:
    """Ask the platform to call back once it has run everything before this.

    The session sends it when a slow flow missed the response budget with
    commands already queued: the caller hears them out, uninterrupted, and the
    callback is the next chance to deliver the rest.
    """

    step: int


BlockingCommand: TypeAlias = Gather | Record | Dial | Conference | Enqueue | Dequeue
Command: TypeAlias = (Say | Play | Pause | SendDigits | Gather | Record | Dial | Conference
                      | Hangup | Resume | Transfer | StartRecording | StopRecording | Enqueue
                      | Dequeue)
