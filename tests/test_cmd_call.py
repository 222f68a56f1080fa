"""``callflow call``: a flows file and a simulated network in one process, one call, its
transcript. As a real subprocess (the README's first command), and in-process for the
options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from callflow import ConfigurationError
from callflow.cli._call import read_script
from callflow.cli._main import main
from callflow.cli._simulator import phone_option

REPO = Path(__file__).resolve().parent.parent
IVR = str(REPO / "examples" / "ivr.py")
TIMEOUT = 30.0

pytestmark = pytest.mark.e2e


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callflow", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, env=clean_env(), cwd=REPO)


# -- as the README runs it ------------------------------------------------------------------------


def test_the_readme_command_prints_the_whole_call() -> None:
    done = run_cli("call", "examples/ivr.py", "--press", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("inbound call +34600000001 → +34900000001, flow reception "
                          "(virtual time)\n")
    for text in ('"Welcome to Acme."', "For sales, press 1.", "⌨  1",
                 '"Please hold while we put you through."', "+34910000001 answered",
                 '"Thank you for calling Acme. Goodbye."', "the application hung up"):
        assert text in out
    assert out.rstrip().splitlines()[-1].startswith("call ended after ")
    assert done.stderr == ""  # the app's log lines only with -v


def test_json_output_parses() -> None:
    done = run_cli("call", "examples/ivr.py", "--press", "3", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["ended"] is True
    assert data["caller"] == "+34600000001" and data["callee"] == "+34900000001"
    spoken = [e["text"] for e in data["entries"] if e["kind"] == "speak"]
    assert spoken[0] == "Welcome to Acme."
    assert spoken[-2].startswith("We are open Monday to Friday")
    assert [e["text"] for e in data["entries"] if e["kind"] == "keys"] == ["3"]


def test_a_number_that_is_not_the_apps_is_a_one_line_error() -> None:
    done = run_cli("call", "examples/ivr.py", "--to", "+34999999999")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "callflow: error: --to +34999999999 is not a number of examples/ivr.py (its numbers: "
        "+34900000001), and it has no default flow to answer other numbers\n"
    )


# -- the options, in-process ----------------------------------------------------------------------


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["call", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_press_twice_goes_to_two_prompts(capsys: pytest.CaptureFixture[str]) -> None:
    # "--press 2" after "--press 1" waits for the prompt after the first choice.
    status, out, _ = call(capsys, IVR, "--press", "1", "--press", "2")
    assert status == 0
    assert out.count("⌨") == 1  # nothing listens for keys after the menu
    status, out, _ = call(capsys, IVR, "--step", "press:9", "--press", "3")
    assert status == 0
    assert "⌨  9" in out and "not one of the options" in out  # the menu asks again
    assert "⌨  3" in out and "We are open" in out


def test_busy_phones_and_a_numbers_file(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.toml"
    numbers.write_text('[phones]\n"+34910000003" = "busy"\n'
                       '"+34910000004" = {behaviour = "answer", after = 4, hang_up_after = 3}\n')
    status, out, _ = call(capsys, IVR, "--press", "2", "--numbers", str(numbers),
                          "--phone", "+34910000002=busy")
    assert status == 0
    assert "+34910000002 busy" in out and "+34910000003 busy" in out
    assert "+34910000004 answered" in out
    assert "+34910000004 hung up" in out
    status, out, _ = call(capsys, IVR, "--press", "1", "--phone", "+34910000001=no-answer")
    assert status == 0
    assert "+34910000001 no answer" in out
    assert "all our agents are busy" in out


def test_a_script_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "caller.txt"
    script.write_text(textwrap.dedent("""\
        # leave a message, then keep it
        wait:beep
        talk:3       # say something
        press:#
        press-next:1
    """))
    assert read_script(script) == ["wait:beep", "talk:3", "press:#", "press-next:1"]
    status, out, _ = call(capsys, str(REPO / "examples" / "voicemail.py"), "--script",
                          str(script))
    assert status == 0
    assert '"You said:"' in out and "/recordings/" in out
    assert '"Your message has been saved. Goodbye."' in out


def test_outbound_and_default_flow(capsys: pytest.CaptureFixture[str]) -> None:
    reminder = str(REPO / "examples" / "reminder.py")
    status, out, _ = call(capsys, reminder, "--press", "1")
    assert status == 0
    assert out.startswith("inbound call +34600000001 → +34900000000, flow reminder")
    assert "Your appointment is confirmed" in out
    status, out, _ = call(capsys, reminder, "--outbound", "--press", "2", "--to",
                          "+34600000007")
    assert status == 0
    assert out.startswith("outbound call +34900000000 → +34600000007, flow reminder")
    assert "+34600000007 answered" in out and "has been cancelled" in out
    status, out, _ = call(capsys, reminder, "--flow", "reminder", "--phone",
                          "+34600000001=busy")
    assert status == 1
    assert out.rstrip().endswith("not answered: busy")


def test_verbose_shows_notifications_and_app_logs(capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    status, out, _ = call(capsys, IVR, "--press", "3", "-v")
    assert status == 0
    assert "CalledNumber → http://127.0.0.1:" in out
    assert any("runs flow reception" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to call: give a flows FILE, or --against URL"),
        ([IVR, "--press", "12a"], "--press '12a': press-next: '12a' is not a string of keys"),
        ([IVR, "--step", "dance"], "--step 'dance': unknown script step 'dance'"),
        ([IVR, "--script", "/no/such/file"], "cannot read the script /no/such/file"),
        ([IVR, "--phone", "+34910000001"], "use NUMBER=BEHAVIOUR"),
        ([IVR, "--phone", "+34910000001=explode"], "unknown phone behaviour 'explode'"),
        ([IVR, "--no-app"], "--no-app needs --against URL"),
        ([IVR, "--against", "http://127.0.0.1:9", "--real-time"], "--real-time and --speed"),
        ([IVR, "--against", "http://127.0.0.1:9", "--numbers", "x"], "--numbers configures"),
        ([IVR, "--outbound", "--flow", "nope"], "no flow named 'nope'"),
        (["--against", "http://127.0.0.1:9"], "--to is needed without a flows FILE"),
        (["--against", "http://127.0.0.1:9", "--to", "+34900000001"],
         "cannot reach the simulator at http://127.0.0.1:9"),
        ([IVR, "--numbers", "/no/such.toml"], "cannot read /no/such.toml"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = call(capsys, *args)
    assert status == 2
    assert out == ""
    assert err.startswith("callflow: error: ") and message in err
    assert err.count("\n") == 1


def test_script_file_errors_name_the_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.txt"
    script.write_text("wait:hello\n\n  # fine\nhop:3\n")
    with pytest.raises(ConfigurationError, match=r"bad.txt, line 4: unknown script step 'hop:3'"):
        read_script(script)


def test_phone_option() -> None:
    assert phone_option("+34910000001=busy") == ("+34910000001", "busy")
    assert phone_option("+34910000001=answer,after=2,press=1#,hang-up-after=10") == (
        "+34910000001",
        {"behaviour": "answer", "after": 2.0, "press": "1#", "hang_up_after": 10.0},
    )
    assert phone_option("+34910000001=answer,script=wait:hi;press:1")[1] == {
        "behaviour": "answer", "script": ["wait:hi", "press:1"]}
    for bad in ("=busy", "+34910000001=answer,after", "+34910000001=answer,after=soon",
                "+34910000001=answer,colour=red"):
        with pytest.raises(ConfigurationError):
            phone_option(bad)


# -- exit statuses and the environment ------------------------------------------------------------


def run_cli_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callflow", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, env={**clean_env(), **env}, cwd=REPO)


def test_a_flow_that_raises_exits_1_with_the_error_in_json(tmp_path: Path) -> None:
    flows = tmp_path / "broken.py"
    flows.write_text(textwrap.dedent("""
        import callflow

        app = callflow.App()

        @app.flow(number="+34900000001")
        async def reception(call):
            await call.say("Hello.")
            raise ValueError("the CRM is down")
    """))
    done = run_cli("call", str(flows), "--json")
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["error"] == "ValueError: the CRM is down"
    assert "Hello." in [e["text"] for e in data["entries"] if e["kind"] == "speak"]
    text = run_cli("call", str(flows))
    assert text.returncode == 1
    assert "the flow raised: ValueError: the CRM is down" in text.stdout
    ok = run_cli("call", "examples/ivr.py", "--press", "3", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["error"] is None


def test_call_follows_callflow_platform_and_refuses_an_unknown_one() -> None:
    done = run_cli_env("call", "examples/ivr.py", "--press", "3", CALLFLOW_PLATFORM="telnyx")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("(virtual time, telnyx)")
    bad = run_cli_env("call", "examples/ivr.py", CALLFLOW_PLATFORM="vonage")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("callflow: error: unknown platform 'vonage' "
                                  "(CALLFLOW_PLATFORM); choose one of: bluevia, twilio, telnyx")


def test_a_normal_end_is_not_a_rejection() -> None:
    done = run_cli("call", "examples/ivr.py", "--press", "3")
    last = [line for line in done.stdout.splitlines() if "📴" in line][-1]
    assert last.endswith("📴 the application hung up")
