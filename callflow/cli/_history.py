"""``callflow history``: the calls a store holds, and one call's history as a transcript.

What a developer reads when a caller complains: which flow ran, what the caller heard
and pressed, what each ``call.step`` returned, how the call ended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from .._exceptions import ConfigurationError
from ..stores import CallSummary, Entry, open_store
from ._main import DEFAULT_STORE, EXIT_ERROR, EXIT_OK, _count, run_async

__all__ = ("add_parser", "render_history")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "history",
        help="list the calls in a store, or show one call's history",
        description="Without CALL_ID, list the most recent calls in the store (newest first).\n"
                    "With CALL_ID, print that call's history as a transcript: what the\n"
                    "caller heard and pressed, each step's outcome, how the call ended.",
        epilog="examples:\n"
               "  callflow history\n"
               "  callflow history 0f25ff91-51d6-41f6-8908-2ee46dbef314\n"
               "  callflow history --store postgresql://postgres@db/calls --limit 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("call_id", metavar="CALL_ID", nargs="?", help="the call to show")
    parser.add_argument(
        "--store", metavar="URL",
        help=f"the store to read (default: CALLFLOW_STORE, else {DEFAULT_STORE})",
    )
    parser.add_argument("--limit", type=_count, default=20, metavar="N",
                        help="how many calls to list (default: 20)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (the summaries, or the raw history entries)")
    parser.set_defaults(run=run_history)


def run_history(args: argparse.Namespace) -> int:
    url = args.store or os.environ.get("CALLFLOW_STORE") or DEFAULT_STORE
    store = open_store(url)
    if store is None:
        raise ConfigurationError("the memory store keeps no history: name a sqlite:/// or "
                                 "postgresql:// store with --store")
    if url.startswith("sqlite:") and args.store is None:
        from ..stores._sqlite import sqlite_path

        if not sqlite_path(url).exists():
            raise ConfigurationError(f"no store at {sqlite_path(url).absolute()}: run this "
                                     "where 'callflow serve' ran, or pass --store")

    async def read() -> int:
        await store.open()
        try:
            if args.call_id is None:
                calls = await store.calls(args.limit)
                print(json.dumps([_summary_json(c) for c in calls], indent=2) if args.json
                      else render_calls(calls))
                return EXIT_OK
            entries = await store.history(args.call_id)
            if entries is None:
                print(f"callflow: error: no call {args.call_id!r} in {store.url}",
                      file=sys.stderr)
                return EXIT_ERROR
            print(json.dumps(entries, indent=2, ensure_ascii=False) if args.json
                  else render_history(args.call_id, entries))
            return EXIT_OK
        finally:
            await store.aclose()

    return run_async(read, "asyncio")


def _summary_json(call: CallSummary) -> dict[str, Any]:
    return {"call_id": call.call_id, "flow": call.flow, "state": call.state,
            "caller": call.caller, "callee": call.callee, "created": call.created,
            "updated": call.updated, "entries": call.entries}


def _time(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def render_calls(calls: list[CallSummary]) -> str:
    if not calls:
        return "no calls in the store yet"
    lines = [f"{'started':<19}  {'state':<7}  {'flow':<12}  {'from → to':<29}  call id"]
    for c in calls:
        lines.append(f"{_time(c.created):<19}  {c.state:<7}  {c.flow:<12.12}  "
                     f"{c.caller + ' → ' + c.callee:<29}  {c.call_id}")
    return "\n".join(lines)


def _command(data: dict[str, Any]) -> str:
    kind = str(data.get("type", "?"))
    if kind == "Say":
        return f"🔊 {data.get('text')!r}"
    if kind == "Play":
        return f"🎵 {data.get('url')}"
    if kind == "Pause":
        return f"⏸ {data.get('seconds')} s"
    if kind == "Gather":
        prompt = data.get("prompt")
        said = f" {_command(prompt)}" if isinstance(prompt, dict) else ""
        return f"⌨ gather (step {data.get('step')}){said}"
    if kind == "Record":
        return f"⏺ record (step {data.get('step')}, up to {data.get('max_length')} s)"
    if kind == "Dial":
        return f"📞 dial {', '.join(data.get('numbers', []))} (step {data.get('step')})"
    if kind == "Conference":
        return f"👥 conference {data.get('name')!r} (step {data.get('step')})"
    if kind == "Hangup":
        return "📴 hang up"
    if kind == "Resume":
        return f"↻ call back (step {data.get('step')})"
    return kind


def _result(data: Any) -> str:
    if not isinstance(data, dict):
        return "done" if data is None else repr(data)
    fields = ", ".join(f"{k}={v!r}" for k, v in data.items() if k != "type"
                       and v not in (None, "", False))
    return f"{data.get('type', '')}({fields})"


def render_history(call_id: str, entries: list[Entry]) -> str:
    """One call's history as lines a person reads (time since the start, then what)."""
    if not entries:
        return f"call {call_id}: empty history"
    start = entries[0]
    t0 = float(start.get("at", 0.0))
    lines = [f"call {call_id}: flow {start.get('flow')}, {start.get('caller')} → "
             f"{start.get('callee')} ({start.get('direction', 'inbound')}, "
             f"{start.get('platform', '?')}), started {_time(t0)}"]
    for entry in entries[1:]:
        at = f"{float(entry.get('at', t0)) - t0:7.1f}s  "
        kind = entry.get("t")
        if kind in ("answer", "push", "held"):
            how = {"answer": "answered", "push": "pushed by REST",
                   "held": "held for a call back"}[str(kind)]
            commands = entry.get("cmds") or []
            if not commands:
                continue
            lines.append(f"{at}→ {how}:")
            lines.extend(f"{' ' * 12}{_command(c)}" for c in commands)
        elif kind == "verb":
            cmd = entry.get("cmd") or {}
            lines.append(f"{at}← {str(cmd.get('type', '')).lower()} (step {entry.get('step')})"
                         f" → {_result(entry.get('result'))}")
        elif kind == "step":
            outcome = (f"raised {entry['error'].get('name')}: {entry['error'].get('message')}"
                       if "error" in entry else f"returned {entry.get('result')!r}")
            lines.append(f"{at}⚙ step {entry.get('name')} {outcome}")
        elif kind == "value":
            lines.append(f"{at}⚙ {entry.get('k')}() = {entry.get('v')!r}")
        elif kind == "event":
            event = entry.get("event") or {}
            lines.append(f"{at}· {event.get('kind')} {event.get('callee') or ''}".rstrip())
        elif kind == "end":
            why = f", {entry['why']}" if entry.get("why") else ""
            lines.append(f"{at}📴 ended by the {entry.get('by', '?')}{why}")
    return "\n".join(lines)
