"""Simulated telephones: how a number answers, and scripts for the people on the line.

A `Phone` says what happens when the simulator dials a number (answer after a delay, busy,
no answer, unreachable, fail) and, once answered, what its user does (`script`). The same
script steps drive the caller of an inbound call placed with `Simulator.place_inbound_call`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ._clock import Clock, Signal
from ._errors import ConfigError, WireError
from ._wire import normalize_number

__all__ = (
    "DEFAULT_PHONE",
    "HangUp",
    "Line",
    "Machine",
    "NetworkConfig",
    "NumberConfig",
    "Outcome",
    "Phone",
    "Press",
    "Silence",
    "Step",
    "Talk",
    "Utter",
    "WaitFor",
    "load_config",
    "parse_script",
    "parse_step",
    "run_script",
)

# -- script steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitFor:
    """Wait until a prompt containing `text` (case-insensitive) has been heard."""

    text: str
    timeout: float | None = None


@dataclass(frozen=True)
class Press:
    """Press `keys`; unless `now`, first wait until the platform is listening for keys.

    With `after_prompt`, first wait until a prompt has finished after this step began: what
    a person does ("listen to the next thing said, then answer"), and what keeps two presses
    in a row out of the same `getDigits` (`callflow call --press`).
    """

    keys: str
    now: bool = False
    gap: float = 0.2
    after_prompt: bool = False


@dataclass(frozen=True)
class Silence:
    """Do nothing for `seconds`."""

    seconds: float


@dataclass(frozen=True)
class Talk:
    """Speak (into a recording, say) for `seconds`."""

    seconds: float


@dataclass(frozen=True)
class Utter:
    """Say `text` (words, not keys); unless `now`, first wait until the platform listens
    for speech (a gather with speech input), as `Press` waits for a gather; with
    `after_prompt`, first until a prompt has finished after this step began (`--say`)."""

    text: str
    now: bool = False
    after_prompt: bool = False


@dataclass(frozen=True)
class HangUp:
    """Hang up, `after` seconds from now."""

    after: float = 0.0


Step = WaitFor | Press | Utter | Silence | Talk | HangUp

_VALID_KEYS = set("0123456789*#")


def _seconds(text: str, step: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{step}: {text!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{step}: seconds must not be negative")
    return value


def parse_step(text: str) -> Step:
    """Parse one step: `wait:TEXT`, `press:KEYS`, `press-now:KEYS`, `press-next:KEYS`,
    `say:WORDS`, `say-now:WORDS`, `say-next:WORDS`, `silence:S`, `talk:S`, `hang-up` or
    `hang-up:S`.

    The words are FakeCall's (`.press()`, `.say()`, `.silence()`, `.talk()`, `.hang_up()`):
    one vocabulary for scripting a caller. `_` and `-` are the same; `hangup` is the old
    spelling of `hang-up`. A new step is one more `if` here (and its `Step` class).
    """
    name, _, arg = text.partition(":")
    name = name.strip().lower().replace("_", "-")
    if name in ("wait", "wait-for", "expect"):
        if not arg:
            raise ConfigError("wait: needs the text to wait for, e.g. wait:sales")
        return WaitFor(arg)
    if name in ("press", "press-now", "press-next"):
        keys = arg.strip()
        if not keys or set(keys) - _VALID_KEYS:
            raise ConfigError(f"{name}: {keys!r} is not a string of keys 0-9 * #")
        return Press(keys, now=name == "press-now", after_prompt=name == "press-next")
    if name in ("say", "say-now", "say-next"):
        if not arg.strip():
            raise ConfigError(f"{name}: needs the words to say, e.g. say:sales please")
        return Utter(arg.strip(), now=name == "say-now", after_prompt=name == "say-next")
    if name in ("silence", "silent", "pause"):
        return Silence(_seconds(arg or "0", name))
    if name == "talk":
        return Talk(_seconds(arg or "3", name))
    if name in ("hangup", "hang-up"):
        return HangUp(_seconds(arg or "0", name))
    raise ConfigError(f"unknown script step {text!r}")


def parse_script(steps: Iterable[str | Step]) -> tuple[Step, ...]:
    """Parse a script given as strings (CLI form) and/or `Step` objects."""
    return tuple(parse_step(s) if isinstance(s, str) else s for s in steps)


class Line(Protocol):
    """What a script can see and do on its leg of a call (implemented by the engine)."""

    changed: Signal

    @property
    def heard(self) -> list[str]: ...

    @property
    def listening(self) -> bool: ...

    @property
    def live(self) -> bool: ...

    @property
    def hearing(self) -> bool: ...

    def press(self, key: str) -> None: ...

    def say(self, text: str) -> None: ...

    def talk(self, seconds: float) -> None: ...

    def hang_up(self) -> None: ...


async def run_script(clock: Clock, line: Line, steps: Iterable[Step]) -> None:
    """Play a script against a line; returns when it is done or the line is down."""
    cursor = 0
    for step in steps:
        if not line.live:
            return
        if isinstance(step, WaitFor):
            needle = step.text.lower()

            def found(needle: str = needle) -> bool:
                nonlocal cursor
                heard = line.heard
                for index in range(cursor, len(heard)):
                    if needle in heard[index].lower():
                        cursor = index + 1
                        return True
                return not line.live

            if not await line.changed.wait_for(found, step.timeout):
                continue
        elif isinstance(step, Press):
            if step.after_prompt:
                mark = len(line.heard)
                await line.changed.wait_for(
                    lambda mark=mark: len(line.heard) > mark or not line.live  # type: ignore[misc]
                )
            for index, key in enumerate(step.keys):
                if not step.now and not await line.changed.wait_for(
                    lambda: line.listening or not line.live
                ):
                    return
                if not line.live:
                    return
                line.press(key)
                if index + 1 < len(step.keys):
                    await clock.sleep(step.gap)
        elif isinstance(step, Utter):
            if step.after_prompt:
                mark = len(line.heard)
                await line.changed.wait_for(
                    lambda mark=mark: len(line.heard) > mark or not line.live  # type: ignore[misc]
                )
            if not step.now and not await line.changed.wait_for(
                lambda: line.hearing or not line.live
            ):
                return
            if not line.live:
                return
            line.say(step.text)
        elif isinstance(step, Silence):
            await clock.sleep(step.seconds)
        elif isinstance(step, Talk):
            line.talk(step.seconds)
            await clock.sleep(step.seconds)
        else:
            await clock.sleep(step.after)
            if line.live:
                line.hang_up()
            return


# -- phones -----------------------------------------------------------------------------------

Outcome = Literal["answer", "busy", "no-answer", "unreachable", "fail"]
_OUTCOMES: tuple[Outcome, ...] = ("answer", "busy", "no-answer", "unreachable", "fail")

DETECTION_SECONDS = 3.0
"""How long machine detection listens before it tells a person (who said hello and went
quiet) from a machine (still talking): Twilio's and Telnyx's analyses take a few seconds."""


@dataclass(frozen=True)
class Machine:
    """An answering machine: a greeting of `greeting` seconds, a beep if `beep`, then it
    records whatever is said for up to `record` seconds and hangs up."""

    greeting: float = 5.0
    beep: bool = True
    record: float = 30.0

    @property
    def ready_after(self) -> float:
        """Seconds from answering to the end of the greeting (and its beep)."""
        return self.greeting + (0.3 if self.beep else 0.0)


@dataclass(frozen=True)
class Phone:
    """How a simulated number behaves when dialled.

    `after` is how long it rings before the outcome (for `unreachable` and `fail`, how long
    the network takes to find out). A `no-answer` phone rings until the dial times out.
    """

    outcome: Outcome = "answer"
    after: float = 1.0
    script: tuple[Step, ...] = ()
    machine: Machine | None = None
    """Set when an answering machine answers (`Phone.answering_machine`)."""

    @classmethod
    def answers(
        cls,
        after: float = 1.0,
        *,
        hang_up_after: float | None = None,
        press: str | None = None,
        script: Iterable[str | Step] = (),
    ) -> Phone:
        """Answers after `after` s; then presses `press`, runs `script`, hangs up if asked."""
        steps = list(parse_script(script))
        if press:
            steps.insert(0, Press(press))
        if hang_up_after is not None:
            steps.append(HangUp(hang_up_after))
        return cls("answer", after, tuple(steps))

    async def ring(self, clock: Clock, line: Line, timeout: float) -> Outcome:
        """Ring `line` until this phone's outcome; `no-answer` if `timeout` passes first.

        The engine calls it while the line rings (not for `unreachable` or `fail`). A phone
        decided at run time overrides it (`LivePhone`: a person answers).
        """
        if self.outcome == "no-answer" or self.after >= timeout:
            await clock.sleep(timeout)
            return "no-answer"
        await clock.sleep(self.after)
        return self.outcome

    @classmethod
    def answering_machine(cls, after: float = 1.0, *, greeting: float = 5.0,
                          beep: bool = True, record: float = 30.0) -> Phone:
        """An answering machine picks up after `after` s: a `greeting` s long greeting, a
        beep, then it records for `record` s and hangs up (`machine` in a config)."""
        machine = Machine(greeting, beep, record)
        return cls("answer", after, (HangUp(machine.ready_after + record),), machine)

    @classmethod
    def busy(cls, after: float = 1.0) -> Phone:
        return cls("busy", after)

    @classmethod
    def no_answer(cls) -> Phone:
        return cls("no-answer", 0.0)

    @classmethod
    def unreachable(cls, after: float = 0.5) -> Phone:
        return cls("unreachable", after)

    @classmethod
    def failing(cls, after: float = 0.5) -> Phone:
        return cls("fail", after)

    @classmethod
    def from_config(cls, data: str | Mapping[str, Any]) -> Phone:
        """From `"busy"` or a table such as `{behaviour = "answer", after = 2, press = "1#",
        hang_up_after = 10, script = ["wait:hello", "press:1"]}`; `"machine"` or
        `{behaviour = "machine", greeting = 6, beep = true, record = 30}` is an answering
        machine."""
        if isinstance(data, str):
            data = {"behaviour": data}
        known = {"behaviour", "behavior", "after", "press", "hang_up_after", "script",
                 "greeting", "beep", "record"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown phone settings: {', '.join(sorted(unknown))}")
        outcome = str(data.get("behaviour", data.get("behavior", "answer"))).lower()
        outcome = outcome.replace("_", "-").replace("noanswer", "no-answer")
        if outcome == "failed":
            outcome = "fail"
        if outcome in ("machine", "answering-machine", "voicemail"):
            greeting, record = data.get("greeting", 5.0), data.get("record", 30.0)
            after = data.get("after", 1.0)
            if not all(isinstance(v, int | float) for v in (greeting, record, after)):
                raise ConfigError("after, greeting and record must be numbers of seconds")
            return cls.answering_machine(float(after), greeting=float(greeting),
                                         beep=bool(data.get("beep", True)),
                                         record=float(record))
        if outcome not in _OUTCOMES:
            raise ConfigError(f"unknown phone behaviour {outcome!r}; use one of {_OUTCOMES}")
        after = data.get("after", 1.0)
        hang = data.get("hang_up_after")
        if not isinstance(after, int | float) or (
            hang is not None and not isinstance(hang, int | float)
        ):
            raise ConfigError("after and hang_up_after must be numbers of seconds")
        script = data.get("script", [])
        if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
            raise ConfigError("script must be a list of step strings")
        press = data.get("press")
        if outcome == "answer":
            return cls.answers(
                float(after),
                hang_up_after=None if hang is None else float(hang),
                press=None if press is None else str(press),
                script=script,
            )
        return cls(outcome, float(after))


DEFAULT_PHONE = Phone.answers(after=1.0, hang_up_after=30.0)
"""What an unconfigured number does: answers after 1 s and hangs up 30 s later."""


@dataclass(frozen=True)
class NumberConfig:
    """One of the account's numbers (`POST /me/numbers/{number}`)."""

    number: str
    callback_url: str | None = None
    fallback_url: str | None = None
    notification_format: str = "JSON"


@dataclass
class NetworkConfig:
    """Phones and account numbers, as loaded from a config file."""

    phones: dict[str, Phone] = field(default_factory=dict)
    account_numbers: dict[str, NumberConfig] = field(default_factory=dict)


def load_config(path: str | Path) -> NetworkConfig:
    """Load a TOML (`.toml`) or JSON file of `[phones]` and `[numbers]` tables."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse_config(raw)


def parse_config(raw: Any) -> NetworkConfig:
    """Build a `NetworkConfig` from the parsed file contents."""
    if not isinstance(raw, dict) or set(raw) - {"phones", "numbers"}:
        raise ConfigError("the config has two tables: [phones] and [numbers]")
    config = NetworkConfig()
    try:
        for number, spec in dict(raw.get("phones", {})).items():
            config.phones[normalize_number(number)] = Phone.from_config(spec)
        for number, spec in dict(raw.get("numbers", {})).items():
            if not isinstance(spec, dict):
                raise ConfigError(f"numbers.{number} must be a table")
            e164 = normalize_number(number)
            config.account_numbers[e164] = NumberConfig(
                e164,
                callback_url=spec.get("callback_url", spec.get("voiceCallbackUrl")),
                fallback_url=spec.get("fallback_url", spec.get("voiceFallbackUrl")),
            )
    except WireError as exc:
        raise ConfigError(f"invalid phone number in config: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
    return config
