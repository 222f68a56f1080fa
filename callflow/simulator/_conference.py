"""Named conferences (`dial` with `conferenceName`) and call-to-call bridges (`dial callId`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._wire import ConferenceProperties, Dial

if TYPE_CHECKING:
    from ._engine import SimCall

__all__ = ("Conferences",)


@dataclass(eq=False)
class _Member:
    call: SimCall
    props: ConferenceProperties
    kicked: bool = False


@dataclass
class _Room:
    name: str
    members: list[_Member] = field(default_factory=list)
    started: bool = False


class Conferences:
    """Every conference room on the simulated platform, created on first join."""

    def __init__(self) -> None:
        self.rooms: dict[str, _Room] = {}

    def members(self, name: str) -> list[str]:
        """The call ids currently in a conference."""
        room = self.rooms.get(name)
        return [m.call.call_id for m in room.members] if room else []

    def _announce(self, room: _Room, text: str, kind: str, exclude: _Member | None = None) -> None:
        for other in room.members:
            if other is exclude:
                continue
            call = other.call
            if kind == "speak":
                call._log("speak", text, call.main, conference=room.name)
                call.main.heard.append(text)
            elif kind == "play":
                call._log("play", text, call.main, conference=room.name)
                call.main.heard.append(text)
            else:
                call._log("beep", text, call.main, conference=room.name)
            call.changed.notify()

    def _wake(self, room: _Room) -> None:
        for member in room.members:
            member.call.changed.notify()

    async def join(self, call: SimCall, dial: Dial) -> None:
        """Put the call's caller in a conference until they leave, are kicked or interrupted."""
        assert dial.conference is not None
        name, props = dial.conference, dial.conference_properties
        room = self.rooms.setdefault(name, _Room(name))
        limit = min([props.max_members, *(m.props.max_members for m in room.members)])
        if len(room.members) >= limit:
            call._log("failed", f"conference {name} is full", call.main, conference=name)
            return
        member = _Member(call, props)
        if props.beeps_on_enter:
            self._announce(room, "beep " * props.beeps_on_enter, "beep")
        room.members.append(member)
        call._log("conference-joined", f"{call.main.party} joined conference {name}",
                  call.main, conference=name, mute=props.mute)
        if props.speak_on_enter:
            self._announce(room, props.speak_on_enter, "speak")
        if props.start_on_enter:
            room.started = True
        self._wake(room)
        clock = call.clock
        ends = clock.now() + props.time_limit if props.time_limit > 0 else None
        on_music = False
        try:
            while not member.kicked and call.main.live:
                alone = len(room.members) < 2 or not room.started
                if alone and not on_music:
                    call._log("music", "hold music", call.main, conference=name)
                on_music = alone
                remaining = None if ends is None else ends - clock.now()
                if remaining is not None and remaining <= 0:
                    break
                await call.changed.wait(remaining)
        finally:
            self._leave(room, member)

    def _leave(self, room: _Room, member: _Member) -> None:
        if member not in room.members:
            return
        room.members.remove(member)
        call, props = member.call, member.props
        call._log("conference-left", f"{call.main.party} left conference {room.name}",
                  call.main, conference=room.name)
        if props.beeps_on_exit:
            self._announce(room, "beep " * props.beeps_on_exit, "beep")
        if props.speak_on_exit:
            self._announce(room, props.speak_on_exit, "speak")
        if props.play_on_exit:
            self._announce(room, props.play_on_exit, "play")
        if props.end_on_exit:
            for other in room.members:
                other.kicked = True
        if not any(m.props.start_on_enter for m in room.members):
            room.started = False
        if not room.members:
            self.rooms.pop(room.name, None)
        self._wake(room)

    async def bridge_call(self, call: SimCall, dial: Dial) -> None:
        """Bridge the caller to another live call's caller, until either leaves.

        The other call's running command is interrupted and its queue replaced, as with
        setcommands; when the bridge ends, each call continues with its own queue.
        """
        assert dial.call_id is not None
        other = call.sim.calls.get(dial.call_id)
        if other is None or other.terminated or other is call:
            call._log("failed", f"cannot bridge to call {dial.call_id}", call.main)
            return
        name = f"bridge:{call.call_id}:{other.call_id}"
        props = ConferenceProperties(end_on_exit=True)
        other.set_commands([Dial(conference=name, conference_properties=props)])
        call._log("bridged", f"{call.main.party} ⇄ {other.main.party}", call.main,
                  callId=other.call_id)
        await self.join(call, Dial(conference=name, conference_properties=props))
