"""Prompts, input and keys: speech input, voices and SSML, DTMF out, hotkeys.

Four layers, fastest first: the pure parts (``Speech``, the recogniser, each adapter's
rendering and parsing), flows under ``FakeCall``, the start-up check, and the
``reception`` example end to end through the simulator on every platform that carries
speech (real sockets, as in ``test_platforms_e2e.py``).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import callflow
from callflow import (
    Call,
    Gather,
    GatherResult,
    HotkeyPressed,
    Say,
    SendDigits,
    Speech,
    UnsupportedFeature,
)
from callflow._journal import decode_command, decode_result, encode_command, encode_result
from callflow._loader import load_app
from callflow._recognise import recognise
from callflow.cli._main import main
from callflow.platforms import BlueVia, Telnyx, Twilio, Webhook
from callflow.simulator import Simulator, Transcript, serve_asgi, serve_simulator
from callflow.testing import FakeCall

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CALLER = "+34600000001"
RECEPTION = "+34900000005"


def url_for(step: int) -> str:
    return f"https://app.example/events?step={step}"


# -- Speech: a portable SSML subset -----------------------------------------------------------


def test_speech_escapes_text_and_reads_marks_in_plain_words() -> None:
    speech = Speech("Tom & <Jerry> ", Speech.pause(0.5), "code ", Speech.digits("4711"),
                    ", due ", Speech.date(datetime.date(2026, 12, 3)), ": ",
                    Speech.currency(Decimal("19.50"), "EUR"))
    assert speech.ssml == (
        "<speak>Tom &amp; &lt;Jerry&gt; <break time=\"500ms\"/>code "
        "<say-as interpret-as=\"digits\">4711</say-as>, due "
        "<say-as interpret-as=\"date\" format=\"ymd\">2026-12-03</say-as>: "
        "<say-as interpret-as=\"cardinal\">19</say-as> euros "
        "<say-as interpret-as=\"cardinal\">50</say-as> cents</speak>")
    ET.fromstring(speech.ssml)  # well-formed, whatever the user text held
    assert speech.text == ("Tom & <Jerry> , code 4 7 1 1, due 3 December 2026: "
                           "19 euros 50 cents")


def test_speech_nests_emphasis_and_prosody_and_joins_with_plus() -> None:
    speech = "Press " + Speech.emphasis(Speech.prosody("zero", rate="slow"), level="strong")
    assert speech.ssml == ('<speak>Press <emphasis level="strong"><prosody rate="slow">zero'
                           "</prosody></emphasis></speak>")
    assert speech.text == "Press zero"
    assert speech == Speech("Press ", Speech.emphasis(Speech.prosody("zero", rate="slow"),
                                                      level="strong"))


def test_a_whole_amount_is_not_read_with_cents() -> None:
    assert Speech.currency(19, "EUR").text == "19 euros"
    assert Speech.currency("1.01", "usd").text == "1 dollar 1 cent"
    assert Speech("Hello.", Speech.pause(1), "Bye.").text == "Hello. Bye."


@pytest.mark.parametrize(("build", "error"), [
    (lambda: Speech.pause(11), ValueError),
    (lambda: Speech.digits("12a"), ValueError),
    (lambda: Speech.currency(19.5, "EUR"), TypeError),
    (lambda: Speech.currency("19", "XXX"), ValueError),
    (lambda: Speech.currency("-1", "EUR"), ValueError),
    (lambda: Speech.emphasis("x", level="loud"), ValueError),
    (lambda: Speech.prosody("x"), ValueError),
    (lambda: Speech.prosody("x", rate="warp"), ValueError),
    (lambda: Speech(3), TypeError),
    (lambda: Speech.date("2026-12-03"), TypeError),
])
def test_speech_refuses_what_it_cannot_say(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_the_simulated_engines_read_ssml_as_words() -> None:
    from callflow.simulator._reading import spoken_words

    speech = Speech("Code ", Speech.digits("12"), ".", Speech.pause(1), "Bye ",
                    Speech.emphasis("now"))
    assert spoken_words(ET.fromstring(speech.ssml)) == "Code 1 2. Bye now"


# -- the recogniser -------------------------------------------------------------------------


def test_the_recogniser_snaps_to_the_closest_hint() -> None:
    assert recognise("support please", ["sales", "support"]) == ("support", 0.9)
    text, confidence = recognise("suport", ["sales", "support"])
    assert text == "support" and 0.75 <= confidence < 1
    assert recognise("Sales!", ["sales"]) == ("sales", 1.0)


def test_the_recogniser_passes_unexpected_words_through() -> None:
    assert recognise("  the   weather ", ["sales", "support"]) == ("the weather", 0.5)
    assert recognise("the weather") == ("the weather", 0.8)
    assert recognise("...") == ("", 0.0)


# -- Twilio: TwiML out, SpeechResult in -------------------------------------------------------


def twiml(*commands: Any, language: str = "en-US") -> ET.Element:
    return ET.fromstring(Twilio(language=language).render(list(commands), url_for=url_for))


def test_twilio_gathers_speech_with_hints_and_language() -> None:
    root = twiml(Gather(3, prompt=Say("Which one?"), input="dtmf speech",
                        hints=("sales", "support"), language="es-ES"))
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("input") == "dtmf speech"
    assert gather.get("hints") == "sales, support"
    assert gather.get("language") == "es-ES"
    assert gather.get("speechTimeout") == "auto"
    assert [child.tag for child in gather] == ["Say"]
    keys_only = twiml(Gather(3)).find("Gather")
    assert keys_only is not None and keys_only.get("input") is None


def test_twilio_plays_a_prompt_out_before_a_gather_without_barge_in() -> None:
    root = twiml(Gather(3, prompt=Say("Listen."), barge_in=False, retries=2))
    assert [child.tag for child in root] == ["Say", "Gather", "Say", "Gather", "Redirect"]
    assert all(len(child) == 0 for child in root if child.tag == "Gather")


def test_twilio_nests_ssml_in_say_for_neural_voices_only() -> None:
    speech = Speech("Code ", Speech.digits("12"))
    root = twiml(Say(speech.text, voice="Polly.Joanna", ssml=speech.ssml, language="en-GB"))
    say = root.find("Say")
    assert say is not None
    assert say.get("voice") == "Polly.Joanna" and say.get("language") == "en-GB"
    assert say.text == "Code "
    assert [(c.tag, c.get("interpret-as"), c.text) for c in say] == [
        ("say-as", "digits", "12")]
    basic = twiml(Say(speech.text, ssml=speech.ssml)).find("Say")
    assert basic is not None and basic.get("voice") == "woman"
    assert basic.text == "Code 1 2" and len(basic) == 0  # the basic voices read text only


def test_twilio_sends_digits_with_play() -> None:
    root = twiml(SendDigits("1234w#"))
    play = root.find("Play")
    assert play is not None and play.get("digits") == "1234w#" and not play.text


def test_twilio_refuses_a_voice_it_does_not_have() -> None:
    with pytest.raises(UnsupportedFeature, match=r"say\(voice=\.\.\.\)"):
        Twilio().check(Say("Hi", voice="Azure.en-US-Jenny"))
    Twilio().check(Say("Hi", voice="Google.en-US-Standard-C"))


def test_twilio_reads_speech_results() -> None:
    body = b"CallSid=CA1&From=%2B34600000001&To=%2B34900000005&SpeechResult=support&Confidence=0.91"
    [event] = Twilio().parse(Webhook("POST", "https://app.example/events?step=3",
                                     query={"step": "3"}, body=body))
    assert (event.kind, event.step, event.speech, event.confidence) == (
        "digits", 3, "support", 0.91)


# -- BlueVia: keys and plain text only --------------------------------------------------------


@pytest.mark.parametrize(("command", "option"), [
    (SendDigits("12"), None),
    (Gather(1, input="speech"), "input"),
    (Gather(1, barge_in=True), "barge_in"),
    (Say("Hola", language="es-ES"), "language"),
    (Say("Hi", voice="Polly.Joanna"), "voice"),
    (Gather(1, prompt=Say("Hi", voice="Polly.Joanna")), "voice"),
])
def test_bluevia_refuses_speech_tones_and_foreign_voices(command: Any, option: str | None
                                                         ) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        BlueVia().check(command)
    assert caught.value.option == option


def test_bluevia_speaks_the_plain_reading_of_ssml() -> None:
    speech = Speech("Your code is ", Speech.digits("4711"))
    body = BlueVia().render_commands([Say(speech.text, ssml=speech.ssml)], url_for=url_for,
                                     first=False)
    assert body == {"commands": [{"speak": {"text": "Your code is 4 7 1 1", "voice": "female",
                                            "repeat": 1}}]}
    BlueVia().check(Gather(1, barge_in=False))  # what getDigits does anyway
    BlueVia().check(Gather(1, language="es-ES"))  # a language for keys means nothing


# -- Telnyx: payload_type ssml, send_dtmf, call.transcription ----------------------------------


def test_telnyx_speaks_ssml_with_its_payload_type() -> None:
    telnyx = Telnyx(language="en-US")
    speech = Speech("Hi ", Speech.pause(0.2))
    body = telnyx._voice(Say(speech.text, voice="Polly.Joanna", ssml=speech.ssml,
                             language="es-ES"))
    assert body == {"payload": speech.ssml, "payload_type": "ssml", "voice": "Polly.Joanna",
                    "language": "es-ES"}
    assert telnyx._voice(Say("Hi")) == {"payload": "Hi", "voice": "female",
                                        "language": "en-US"}
    with pytest.raises(UnsupportedFeature):
        telnyx.check(Say("Hi", voice="woman"))


def test_telnyx_reads_final_transcriptions_only() -> None:
    def event(data: dict[str, Any]) -> Any:
        body = json.dumps({"data": {"event_type": "call.transcription", "id": "e1",
                                    "payload": {"call_control_id": "v3:1",
                                                "transcription_data": data}}})
        [parsed] = Telnyx().parse(Webhook("POST", "https://app.example/", body=body.encode()))
        return parsed.speech, parsed.confidence

    assert event({"transcript": "sales", "confidence": 0.97, "is_final": True}) == ("sales", 0.97)
    assert event({"transcript": "sal", "confidence": 0.5, "is_final": False}) == (None, None)
    assert event({"transcript": "sales", "confidence": "high"}) == ("sales", None)


# -- the history keeps the new commands and results -------------------------------------------


def test_speech_commands_and_results_survive_the_history() -> None:
    gather = Gather(4, prompt=Say("Hi", voice="Polly.Joanna", language="en-GB",
                                  ssml="<speak>Hi</speak>"),
                    input="speech", hints=("a", "b"), language="en-GB", barge_in=True)
    assert decode_command(json.loads(json.dumps(encode_command(gather)))) == gather
    tones = SendDigits("1w#")
    assert decode_command(json.loads(json.dumps(encode_command(tones)))) == tones
    result = GatherResult(transcript="sales", confidence=0.9)
    assert decode_result(json.loads(json.dumps(encode_result(result)))) == result


# -- flows under FakeCall -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_caller_answers_by_voice() -> None:
    async def flow(call: Call) -> None:
        call.data["answer"] = await call.gather(prompt="Sales or support?", input="speech",
                                                hints=["sales", "support"])

    fake = await FakeCall(flow).say("sails").run()
    answer = fake.call.data["answer"]
    assert answer.spoken and answer.transcript == "sales" and answer.confidence > 0.75
    assert answer.digits == "" and not answer.timed_out


@pytest.mark.anyio
async def test_words_at_a_gather_that_wants_keys_are_not_heard() -> None:
    async def flow(call: Call) -> None:
        call.data["answer"] = await call.gather(prompt="Press a key.")

    fake = await FakeCall(flow).say("one").run()
    assert fake.call.data["answer"] == GatherResult(timed_out=True)


@pytest.mark.anyio
async def test_gather_refuses_a_wrong_input_and_hints_as_one_string() -> None:
    async def flow(call: Call) -> None:
        with pytest.raises(ValueError, match="input"):
            await call.gather(input="voice")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="hints"):
            await call.gather(input="speech", hints="sales")

    fake = await FakeCall(flow).run()
    assert fake.error is None


@pytest.mark.anyio
async def test_send_digits_queues_tones_and_validates_them() -> None:
    async def flow(call: Call) -> None:
        await call.send_digits("201w#")
        with pytest.raises(ValueError, match="'x'"):
            await call.send_digits("20x")
        with pytest.raises(ValueError):
            await call.send_digits("")
        await call.gather(prompt="Done?")

    fake = await FakeCall(flow).run()
    assert fake.error is None
    assert any(line.what == "sends tones 201w#" for line in fake.transcript)


@pytest.mark.anyio
async def test_the_platform_refuses_what_it_cannot_carry_from_the_verb() -> None:
    async def flow(call: Call) -> None:
        with pytest.raises(UnsupportedFeature, match="send_digits"):
            await call.send_digits("1")
        with pytest.raises(UnsupportedFeature, match="input"):
            await call.gather(input="speech")
        await call.say(Speech("Fine ", Speech.digits("1")))

    fake = await FakeCall(flow, platform=BlueVia()).run()
    assert fake.error is None and fake.heard == ["Fine 1"]


async def operator(call: Call) -> None:
    call.data.setdefault("handled", []).append("operator")
    await call.say("Connecting you to the operator.")


@pytest.mark.anyio
async def test_a_hotkey_leaves_its_block_and_runs_its_handler() -> None:
    async def flow(call: Call) -> None:
        async with call.hotkeys({"0": operator}) as keys:
            await call.menu("One or two?", {"1": "one", "2": "two"})
            call.data["after menu"] = True
        call.data["pressed"] = keys.pressed

    fake = await FakeCall(flow).press("0").run()
    assert fake.error is None
    assert fake.call.data == {"handled": ["operator"], "pressed": "0"}
    assert fake.heard[-1] == "Connecting you to the operator."


@pytest.mark.anyio
async def test_other_answers_pass_through_a_hotkeys_block() -> None:
    async def flow(call: Call) -> None:
        async with call.hotkeys({"0": operator, "*": None}) as keys:
            call.data["pin"] = (await call.gather(prompt="PIN?", num_digits=4)).digits
            call.data["said"] = (await call.gather(prompt="Name?", input="speech")).transcript
            call.data["menu"] = await call.menu("One?", {"1": "one"})
        call.data["pressed"] = keys.pressed

    fake = await FakeCall(flow).press("0123").say("Ada").press("1").run()
    assert fake.call.data == {"pin": "0123", "said": "Ada", "menu": "one", "pressed": None}


@pytest.mark.anyio
async def test_the_innermost_hotkeys_win_and_a_star_starts_an_answer() -> None:
    async def back(call: Call) -> None:
        call.data.setdefault("handled", []).append("back")

    async def flow(call: Call) -> None:
        async with call.hotkeys({"*": operator}) as outer:
            async with call.hotkeys({"*": back}) as inner:
                await call.gather(prompt="Account number?")
            call.data["inner"] = inner.pressed
            await call.gather(prompt="Again?", finish_on_key="*")
        call.data["outer"] = outer.pressed

    fake = await FakeCall(flow).press("*12#").press("*").run()
    assert fake.error is None
    assert fake.call.data == {"handled": ["back", "operator"], "inner": "*", "outer": "*"}


@pytest.mark.anyio
async def test_hotkeys_unwind_past_except_exception() -> None:
    async def flow(call: Call) -> None:
        async with call.hotkeys({"9": None}) as keys:
            try:
                await call.gather(prompt="Go on.")
            except Exception:  # a flow's broad handler must not eat the hotkey
                call.data["swallowed"] = True
        call.data["pressed"] = keys.pressed

    fake = await FakeCall(flow).press("9").run()
    assert fake.call.data == {"pressed": "9"}
    assert issubclass(HotkeyPressed, BaseException) and not issubclass(HotkeyPressed, Exception)


def test_hotkeys_refuse_what_is_not_one_key() -> None:
    call = Call("c", caller=CALLER, callee=RECEPTION)
    for keys in ({}, {"10": None}, {"a": None}):
        with pytest.raises(ValueError):
            call.hotkeys(keys)


# -- the reception example ---------------------------------------------------------------------


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
async def test_reception_by_voice_by_key_and_by_hotkey() -> None:
    reception = load("reception").reception
    by_voice = await FakeCall(reception, callee=RECEPTION).say("support please").run()
    assert by_voice.call.data["department"] == "support"
    assert by_voice.call.data["heard"] == ("support", 0.9)
    by_key = await FakeCall(reception, callee=RECEPTION).press("3").run()
    assert by_key.call.data["department"] == "billing"
    assert "Our monthly plan costs 19 euros 50 cents." in by_key.heard
    operator_ = await FakeCall(reception, callee=RECEPTION).press("0").run()
    assert operator_.call.data["department"] == "operator"
    assert operator_.call.data["dial"].number == "+34910000000"
    unclear = await FakeCall(reception, callee=RECEPTION).say("weather").say("pizza").run()
    assert unclear.call.data["department"] is None
    assert unclear.heard.count("Sorry, I did not get that.") == 2


def test_the_start_up_check_names_the_verb_and_the_platform(tmp_path: Path) -> None:
    app = load_app(EXAMPLES / "reception.py")
    app.configure(callflow.Settings(platform="bluevia"))
    warnings = app.check_platform()
    assert any("reception.py" in w and "bluevia does not support gather(input=...)" in w
               for w in warnings), warnings
    app.configure(callflow.Settings(platform="twilio", twilio_account_sid="AC1",
                                    twilio_auth_token="t"))
    assert app.check_platform() == []


@asynccontextmanager
async def served(example: str, platform: str) -> AsyncIterator[Simulator]:
    app = load_app(EXAMPLES / f"{example}.py")
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            for number in app.numbers:
                sim.add_account_number(number)
            await app.configure_numbers()
            yield sim


async def place(platform: str, *script: str) -> Transcript:
    async with served("reception", platform) as sim:
        call = await sim.place_inbound_call(CALLER, RECEPTION, script=list(script))
        with anyio.fail_after(15):
            return await call.wait_ended()


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_reception_end_to_end_by_voice(platform: str) -> None:
    transcript = await place(platform, "say-next:support please")
    assert transcript.texts("said") == ["support please"]
    assert transcript.texts("recognised") == ["support"]
    assert "Putting you through to support." in transcript.spoken
    assert transcript.texts("error") == []


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_reception_end_to_end_by_key_with_an_amount_and_a_hotkey(platform: str) -> None:
    billing = await place(platform, "press-next:3")
    assert "Our monthly plan costs 19 euros 50 cents." in billing.spoken
    operator_ = await place(platform, "press-next:0")
    assert "Connecting you to the operator." in operator_.spoken
    assert billing.texts("error") == operator_.texts("error") == []


@pytest.mark.anyio
@pytest.mark.e2e
async def test_reception_on_bluevia_apologises_at_the_speech_gather() -> None:
    transcript = await place("bluevia", "say-next:support please")
    assert transcript.texts("recognised") == []
    assert "Putting you through to support." not in transcript.spoken


TONES = '''
import callflow
app = callflow.App()

@app.flow(number="+34900000009")
async def extension(call: callflow.Call) -> None:
    await call.say("Dialling the extension.")
    await call.send_digits("201w#")
    await call.say(callflow.Speech("Sent ", callflow.Speech.digits("201"), "."))
'''


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_send_digits_end_to_end(platform: str, tmp_path: Path) -> None:
    flows = tmp_path / "tones.py"
    flows.write_text(TONES)
    app = load_app(flows)
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number("+34900000009")
            await app.configure_numbers()
            call = await sim.place_inbound_call(CALLER, "+34900000009")
            with anyio.fail_after(15):
                transcript = await call.wait_ended()
    sent = [e for e in transcript.entries if e.kind == "keys" and e.data.get("sent")]
    assert [e.text for e in sent] == ["201w#"]
    assert transcript.spoken[-1] == "Sent 2 0 1."  # SSML on Telnyx, its reading on Twilio
    assert transcript.texts("error") == []


def test_callflow_call_say(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["call", str(EXAMPLES / "reception.py"), "--platform", "twilio",
                   "--say", "billing"])
    out = capsys.readouterr().out
    assert status == 0
    assert '🗣  "billing"' in out and "📝 billing" in out
    assert "19 euros 50 cents" in out


KEYS_FLOW = '''
import callflow
app = callflow.App()

async def operator(call: callflow.Call) -> None:
    await call.say("Operator.")

@app.flow(number="+34900000008")
async def codes(call: callflow.Call) -> None:
    async with call.hotkeys({"0": operator}) as keys:
        code = await call.gather(prompt="Enter your code.", num_digits=4, barge_in=False)
        await call.say(callflow.Speech("You entered ", callflow.Speech.digits(code.digits), "."))
        await call.menu("Press 1 to confirm.", {"1": "yes"})
        await call.say("Confirmed.")
    if keys.pressed is None:
        await call.say("Goodbye.")
'''


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.parametrize("platform", ["bluevia", "twilio", "telnyx"])
async def test_hotkeys_and_prompts_played_out_on_every_platform(platform: str,
                                                                tmp_path: Path) -> None:
    flows = tmp_path / "codes.py"
    flows.write_text(KEYS_FLOW)

    async def place(*script: str) -> Transcript:
        app = load_app(flows)
        sim = Simulator(platform=platform)
        async with serve_simulator(sim) as sim_url:
            app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                            **sim.app_settings()))
            async with serve_asgi(app) as app_url:
                app.settings.public_url = app_url
                sim.add_account_number("+34900000008")
                await app.configure_numbers()
                call = await sim.place_inbound_call(CALLER, "+34900000008", script=list(script))
                with anyio.fail_after(15):
                    return await call.wait_ended()

    confirmed = await place("press-next:1234", "press-next:1")
    assert confirmed.spoken[1:] == ["You entered 1 2 3 4.", "Press 1 to confirm.", "Confirmed.",
                                    "Goodbye."]
    to_operator = await place("press-next:1234", "press-next:0")
    assert to_operator.spoken[-2:] == ["Press 1 to confirm.", "Operator."]
    assert confirmed.texts("error") == to_operator.texts("error") == []


def test_a_twilio_whisper_keeps_its_voice_language_and_ssml() -> None:
    from urllib.parse import parse_qs, urlsplit

    speech = Speech("A caller for ", Speech.emphasis("sales"))
    whisper = Say(speech.text, voice="Polly.Joanna", language="en-GB", ssml=speech.ssml)
    root = twiml(callflow.Dial(2, numbers=("+34910000001",), on_answer=whisper))
    number = root.find("Dial/Number")
    assert number is not None
    url = number.get("url", "")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    reply = Twilio().direct_reply(Webhook("POST", url, query=query))
    assert reply is not None
    say = ET.fromstring(reply.body).find("Say")
    assert say is not None and say.get("voice") == "Polly.Joanna"
    assert say.get("language") == "en-GB" and [c.tag for c in say] == ["emphasis"]
    handmade = twiml(Say("plain", voice="Polly.Joanna", ssml="<speak>broken")).find("Say")
    assert handmade is not None and handmade.text == "plain"


def test_the_start_up_check_finds_send_digits(tmp_path: Path) -> None:
    flows = tmp_path / "tones.py"
    flows.write_text(TONES)
    app = load_app(flows)
    app.configure(callflow.Settings(platform="bluevia"))
    assert any("bluevia does not support send_digits()" in w for w in app.check_platform())
