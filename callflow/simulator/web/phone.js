// The browser phone (callflow/simulator/_web.py serves it). No build step, no libraries:
// the server sends each transcript entry and the phone's state as server-sent events
// (GET events); each button POSTs one action (api/<action>) and shows the answer.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;
let firstState = true;

async function act(action, body = {}) {
  let answer;
  try {
    const response = await fetch(`api/${action}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    answer = await response.json();
  } catch (error) {
    answer = { error: `the simulator is not answering (${error})` };
  }
  showStatus(answer.error || answer.message || "", Boolean(answer.error));
  return answer;
}

function showStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// -- the transcript --------------------------------------------------------------------

function addLine(text, kind, className) {
  const list = $("transcript");
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.dataset.kind = kind;
  if (className) item.className = className;
  list.append(item);
  list.scrollTop = list.scrollHeight;
  return item;
}

function showEntry(entry, live) {
  const item = addLine(`[${entry.call}] ${entry.line}`, entry.kind);
  if (entry.audio) {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = entry.audio;
    audio.setAttribute("aria-label", `audio of call ${entry.call}: ${entry.text}`);
    item.append(audio);
    if (live && entry.kind === "play" && entry.mine) audio.play().catch(() => {});
  }
  if (live && entry.mine && entry.kind === "speak") speak(entry.text);
  if (live && entry.mine && entry.kind === "hangup") stopSpeaking();
}

function speak(text) {
  if (!$("speak").checked || !("speechSynthesis" in window)) return;
  speechSynthesis.speak(new SpeechSynthesisUtterance(text));
}

function stopSpeaking() {
  if ("speechSynthesis" in window) speechSynthesis.cancel();
}

// -- the phone's state -----------------------------------------------------------------

function showState(next) {
  state = next;
  if (firstState) {
    firstState = false;
    $("title").textContent = next.title;
    $("from").value = next.number;
    $("to").value = next.to;
    $("callout-to").value = next.number;
    $("phone-outcome").replaceChildren(...next.outcomes.map((outcome) => new Option(outcome)));
  }
  const clock = next.clock === "scaled" ? `${next.speed}× real time` : `${next.clock} time`;
  $("network").textContent = `${next.platform} · ${clock} · your phone is ${next.number}`;

  const display = $("display");
  display.classList.toggle("ringing", Boolean(next.ringing));
  display.classList.toggle("live", next.on_call);
  if (next.ringing) display.textContent = `Ringing: a call from ${next.ringing}`;
  else if (next.on_call) display.textContent = next.holding || next.listening
    ? `On call ${next.call}: the app waits for your keys` : `On call ${next.call}`;
  else display.textContent = "Idle";

  $("call").disabled = next.on_call;
  $("answer").hidden = !next.ringing;
  $("hangup").textContent = next.ringing && !next.on_call ? "Reject" : "Hang up";
  $("hangup").disabled = !next.on_call && !next.ringing;
  $("talk").disabled = !next.on_call;
  $("skip").hidden = next.clock !== "virtual";
  $("skip").disabled = !next.holding;
  for (const key of document.querySelectorAll("#keypad button")) key.disabled = !next.on_call;

  const speech = next.speech_input;
  $("say-text").disabled = !speech || !next.on_call;
  $("say").disabled = !speech || !next.on_call;
  $("say-text").placeholder = speech ? "what the caller says" : "not supported yet";
  $("say-text").title = speech ? "" : "this simulator does not take speech input yet";
  $("callout-form").hidden = !next.call_out;
  showPhones(next.phones, next.outcomes);
}

function showPhones(phones, outcomes) {
  const list = $("phones");
  list.replaceChildren(...Object.entries(phones).map(([number, outcome]) => {
    const item = document.createElement("li");
    const select = document.createElement("select");
    select.setAttribute("aria-label", `when ${number} is called`);
    select.replaceChildren(...outcomes.map((o) => new Option(o, o, false, o === outcome)));
    select.addEventListener("change", () => act("phone", { number, outcome: select.value }));
    item.append(number, select);
    return item;
  }));
}

// -- what the person does ----------------------------------------------------------------

function press(key) {
  const button = document.querySelector(`#keypad button[data-key="${CSS.escape(key)}"]`);
  if (button) {
    button.classList.add("pressed");
    setTimeout(() => button.classList.remove("pressed"), 150);
  }
  act("keys", { keys: key });
}

$("dial-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("call", { from: $("from").value, to: $("to").value });
});
$("answer").addEventListener("click", () => act("answer"));
$("hangup").addEventListener("click", () => { stopSpeaking(); act("hangup"); });
$("talk").addEventListener("click", () => act("talk", { seconds: 3 }));
$("skip").addEventListener("click", () => act("skip"));
$("keypad").addEventListener("click", (event) => {
  const key = event.target.closest("button")?.dataset.key;
  if (key) press(key);
});
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, select, textarea");
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if (/^[0-9*#]$/.test(event.key) && state?.on_call) {
    event.preventDefault();
    press(event.key);
  }
});
$("notifications").addEventListener("change", (event) => {
  $("transcript").classList.toggle("notifications", event.target.checked);
});
$("say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("say", { text: $("say-text").value }).then((answer) => {
    if (!answer.error) $("say-text").value = "";
  });
});
$("phone-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("phone", { number: $("phone-number").value, outcome: $("phone-outcome").value });
});
$("callout-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("callout", { to: $("callout-to").value });
});

// -- the event stream ----------------------------------------------------------------------

const events = new EventSource("events");
events.addEventListener("open", () => {
  // (Re)connected: the server sends every call so far again (as backlog), then live events.
  $("transcript").replaceChildren();
});
events.addEventListener("error", () => showStatus("lost the simulator: reconnecting…", true));
events.addEventListener("message", (message) => {
  const event = JSON.parse(message.data);
  if (event.type === "state") showState(event);
  else if (event.type === "entry") showEntry(event, !event.backlog); // speak only new ones
  else if (event.type === "end") addLine(`[${event.call}] ${event.line}`, null, "end");
  else if (event.type === "notice") addLine(event.line, null, "notice");
});
