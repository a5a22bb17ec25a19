// The browser voice client: a session from our server, WebRTC audio straight to the
// realtime model, the conversation and tool activity on the page.
// No build step: a plain ES module, served as a static file.

// What the page says when the server ends the conversation, by its end reason.
const ENDED_BECAUSE = {
  max_duration: "The conversation reached its time limit.",
  staff: "Our support team ended this conversation.",
  maintenance: "The conversation was ended for maintenance.",
};
const $ = (id) => document.getElementById(id);
const app = $("app");
const STATS_EVERY_MS = Number(app.dataset.statsIntervalSeconds || 10) * 1000;
const RELAY_EVERY_MS = 1000;
// The realtime events the server builds transcripts from: its list, not a copy.
const RELAYED_TYPES = new Set((app.dataset.relayedTypes || "").split(" ").filter(Boolean));
// Signed-in callers own their sessions: a dropped call comes back as its continuation.
const SIGNED_IN = app.dataset.signedIn === "true";

let call = null; // the live conversation, see start()

// A start that did not work, in words for the page; retry: whether trying again soon may.
class StartFailed extends Error {
  constructor(message, { retry = false } = {}) {
    super(message);
    this.retry = retry;
  }
}

// --- page state -----------------------------------------------------------------------

function setConnection(text) {
  $("connection").textContent = text;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
}

function showBanner(text) {
  $("banner").textContent = text;
  $("banner").hidden = false;
}

function setControls(live) {
  $("start").disabled = live;
  document.querySelectorAll("#recent-list button").forEach((button) => {
    button.disabled = live || button.dataset.resumable !== "true";
  });
  $("stop").disabled = !live;
  for (const id of ["mute", "ptt-mode", "text", "send"]) $(id).disabled = !live;
  $("talk").disabled = !(live && $("ptt-mode").checked);
  $("record").disabled = live;
}

// --- our API --------------------------------------------------------------------------

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(path, { method = "POST", body, token, contentType = "application/json", keepalive = false } = {}) {
  const headers = { "X-CSRFToken": csrfToken() };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = contentType;
  const payload = body === undefined || contentType !== "application/json" ? body : JSON.stringify(body);
  const response = await fetch(path, { method, headers, body: payload, keepalive, credentials: "same-origin" });
  const isJson = (response.headers.get("Content-Type") || "").startsWith("application/json");
  return { response, data: isJson ? await response.json() : await response.text() };
}

function describeFailure(response, data) {
  const message = data && data.error ? data.error.message : `The server answered ${response.status}.`;
  // The operator's own words and when service should be back: said as they are.
  if (data && data.error && data.error.code === "maintenance") return message;
  const retryAfter = response.headers.get("Retry-After");
  if (response.status === 429 || response.status === 503) {
    const wait = retryAfter ? ` Try again in ${retryAfter} second${retryAfter === "1" ? "" : "s"}.` : " Try again later.";
    const what = response.status === 429 ? "Too many requests." : "The service is unavailable right now.";
    return `${what} ${message}${wait}`;
  }
  return message;
}

// --- recent conversations (signed-in users) ---------------------------------------------

function describeStart(row) {
  const started = new Date(row.started_at);
  const when = started.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  const seconds = row.duration_seconds;
  let minutes = "";
  if (seconds) minutes = seconds < 60 ? " · under a minute" : ` · ${Math.round(seconds / 60)} min`;
  return `${when}${minutes}${row.resumable ? "" : " · still going on"}`;
}

function recentEntry(row) {
  const entry = document.createElement("li");
  entry.dataset.sessionId = row.session_id;
  const about = document.createElement("div");
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = row.title || "(nothing was said)";
  const when = document.createElement("div");
  when.className = "when";
  when.textContent = describeStart(row);
  about.append(title, when);
  const resume = document.createElement("button");
  resume.type = "button";
  resume.textContent = "Resume";
  resume.dataset.resumable = String(row.resumable);
  resume.disabled = Boolean(call) || !row.resumable;
  resume.setAttribute("aria-label", `Resume “${title.textContent}”`);
  resume.addEventListener("click", () => begin({ resume: row.session_id }, { separator: `Continuing “${title.textContent}”` }));
  entry.append(about, resume);
  return entry;
}

async function loadRecent() {
  const section = $("recent");
  if (!section) return; // anonymous: nothing to list
  const status = $("recent-status");
  let response;
  let data;
  try {
    response = await fetch(section.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    data = await response.json();
  } catch (error) {
    status.textContent = `Your recent conversations could not be loaded: ${error.message}`;
    return;
  }
  if (!response.ok) {
    status.textContent = `Your recent conversations could not be loaded: ${describeFailure(response, data)}`;
    return;
  }
  $("recent-list").replaceChildren(...data.sessions.map(recentEntry));
  status.textContent = data.sessions.length ? "" : "No earlier conversations yet.";
  status.hidden = data.sessions.length > 0;
}

// --- transcript -----------------------------------------------------------------------

function markCallStart(label) {
  // Each call's lines start under a line of their own; earlier calls' lines stay.
  const now = new Date();
  const entry = document.createElement("li");
  entry.className = "call-start";
  const time = document.createElement("time");
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const words = document.createElement("span");
  words.append(`${label} · `, time);
  entry.append(words);
  $("transcript").append(entry);
}

function transcriptEntry(itemId, role) {
  let entry = document.querySelector(`#transcript li[data-item-id="${CSS.escape(itemId)}"]`);
  if (!entry) {
    entry = document.createElement("li");
    entry.dataset.itemId = itemId;
    entry.className = `${role} partial`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You:" : "Assistant:";
    const text = document.createElement("span");
    text.className = "text";
    entry.append(who, text);
    $("transcript").append(entry);
  }
  return entry;
}

function showText(itemId, role, text, final) {
  if (!itemId) return;
  const entry = transcriptEntry(itemId, role);
  const span = entry.querySelector(".text");
  if (final) {
    span.textContent = text;
    entry.classList.remove("partial");
    $("announcer").textContent = `${role === "user" ? "You" : "Assistant"}: ${text}`;
  } else if (entry.classList.contains("partial")) {
    span.textContent += text; // deltas until the final replaces them
  }
}

function userText(item) {
  return (item.content || [])
    .filter((part) => part && part.type === "input_text")
    .map((part) => part.text)
    .join(" ");
}

// --- tools ----------------------------------------------------------------------------

function toolEntry(callId) {
  let entry = document.querySelector(`#tools li[data-call-id="${CSS.escape(callId)}"]`);
  if (!entry) {
    entry = document.createElement("li");
    entry.dataset.callId = callId;
    entry.innerHTML = '<strong class="name"></strong> <code class="args"></code> — <span class="state"></span>' +
      '<span class="progress"></span><pre class="output"></pre>';
    entry.querySelector(".progress").textContent = earlyProgress.get(callId) || "";
    $("tools").append(entry);
  }
  return entry;
}

function showTool(callId, name, args, status, output) {
  const entry = toolEntry(callId);
  entry.querySelector(".name").textContent = name;
  if (args !== undefined) {
    entry.querySelector(".args").textContent = typeof args === "string" ? args : JSON.stringify(args);
  }
  const state = entry.querySelector(".state");
  state.textContent = status;
  state.className = `state state-${status}`;
  entry.dataset.status = status;
  if (output) entry.querySelector(".output").textContent = String(output).slice(0, 500);
  entry.querySelector(".progress").hidden = status !== "running";
}

async function runToolInBrowserRelay(item) {
  const current = call;
  // Only when the server does not hold the call's sideband: relay, then answer the model.
  let args = {};
  try {
    args = JSON.parse(item.arguments || "{}");
  } catch {
    args = {};
  }
  const { response, data } = await api(`/tools/${encodeURIComponent(item.name)}`, {
    body: { call_id: item.call_id, arguments: args },
    token: current.session.session_token,
  });
  let output;
  if (response.status === 202 && data.task_id) {
    // It goes on in the background: its card follows it (live events, or a fresh read).
    showTool(item.call_id, item.name, args, "running");
    updateTask(current.session, data);
    refreshTask(data.task_id).catch(() => {});
    output = `Started task ${data.task_id}. It runs in the background; its result will show on the user's page.`;
  } else if (response.ok) {
    showTool(item.call_id, item.name, args, data.status, data.status === "failed" ? data.error : data.output);
    output = data.status === "failed" ? `Error: ${data.error}` : data.output;
  } else {
    const reason = describeFailure(response, data);
    showTool(item.call_id, item.name, args, "failed", reason);
    output = `Error: ${reason}`;
  }
  if (call !== current || current.channel.readyState !== "open") return; // that call is over
  current.channel.send(JSON.stringify({ type: "conversation.item.create", item: { type: "function_call_output", call_id: item.call_id, output } }));
  current.channel.send(JSON.stringify({ type: "response.create" }));
}

function onFunctionCall(item) {
  showTool(item.call_id, item.name, item.arguments, "running");
  if (!call.serverHandlesTools) {
    runToolInBrowserRelay(item).catch((error) => showMessage(`The tool call failed: ${error.message}`));
  }
}

// --- background tasks -------------------------------------------------------------------
// A call that runs long becomes a task: a card with what it is, how long it has run, its
// latest progress line, a Stop button, and in the end its result.

const RESULT_CHARS = 4000; // of a task's result on its card (the admin has it whole)
const EARLY_PROGRESS_KEPT = 100;
const tasks = new Map(); // task id -> { session, data (its last known to_dict), progress, stopping }
const earlyProgress = new Map(); // call id -> its latest progress line, heard before any task

function taskUrl(template, session, taskId) {
  return template.replace("SESSION_ID", encodeURIComponent(session.session_id)).replace("TASK_ID", encodeURIComponent(taskId));
}

function clock(seconds) {
  const whole = Math.max(0, Math.floor(seconds));
  const [h, m, s] = [Math.floor(whole / 3600), Math.floor((whole % 3600) / 60), whole % 60];
  const mmss = `${String(m).padStart(h ? 2 : 1, "0")}:${String(s).padStart(2, "0")}`;
  return h ? `${h}:${mmss}` : mmss;
}

function taskSeconds(data) {
  const began = Date.parse(data.created_at);
  if (Number.isNaN(began)) return 0;
  const ended = data.finished_at ? Date.parse(data.finished_at) : Date.now();
  return (ended - began) / 1000;
}

function taskCard(taskId) {
  let card = document.querySelector(`#tasks li[data-task-id="${CSS.escape(taskId)}"]`);
  if (!card) {
    card = document.createElement("li");
    card.className = "task-card";
    card.dataset.taskId = taskId;
    card.innerHTML = '<div class="task-head"><strong class="task-what"></strong><span class="badge"></span></div>' +
      '<p class="task-meta"><span class="task-kind"></span> · <span class="task-elapsed" role="timer" aria-live="off"></span>' +
      '<span class="task-by"></span></p><p class="task-progress"></p>' +
      '<pre class="task-result" tabindex="0" aria-label="Result" hidden></pre>' +
      '<button type="button" class="task-stop">Stop</button>';
    card.querySelector(".task-stop").addEventListener("click", () => stopTask(taskId));
    $("tasks").prepend(card); // the newest first
    $("tasks-section").hidden = false;
  }
  return card;
}

function showTask(taskId) {
  const known = tasks.get(taskId);
  const { data } = known;
  const card = taskCard(taskId);
  const running = data.status === "running";
  const stopping = running && (known.stopping || Boolean(data.cancelled_by));
  const what = data.summary || data.tool || "Task";
  card.dataset.callId = data.call_id || "";
  card.dataset.sessionId = known.session.session_id;
  card.dataset.status = data.status;
  card.dataset.stopping = String(stopping);
  card.querySelector(".task-what").textContent = what;
  const badge = card.querySelector(".badge");
  badge.textContent = stopping ? "stopping…" : data.status;
  badge.className = `badge badge-${stopping ? "stopping" : data.status}`;
  const steps = data.agent && data.steps ? ` · ${data.steps} step${data.steps === 1 ? "" : "s"}` : "";
  card.querySelector(".task-kind").textContent = (data.agent ? `agent ${data.agent}` : data.tool || "") + steps;
  card.querySelector(".task-elapsed").textContent = clock(taskSeconds(data));
  const by = data.cancelled_by ? ` · ${running ? "stop asked by" : "stopped by"} ${data.cancelled_by}` : "";
  card.querySelector(".task-by").textContent = by;
  const progress = card.querySelector(".task-progress");
  progress.textContent = known.progress;
  progress.hidden = !known.progress;
  const said = running ? "" : (data.status === "succeeded" ? data.output : data.error || data.output) || "";
  const result = card.querySelector(".task-result");
  result.textContent = said.length > RESULT_CHARS ? `${said.slice(0, RESULT_CHARS)}…` : said;
  result.hidden = !said;
  result.classList.toggle("failed", data.status === "failed");
  const stop = card.querySelector(".task-stop");
  stop.hidden = !running;
  stop.disabled = stopping;
  stop.setAttribute("aria-label", `Stop: ${what}`);
}

function updateTask(session, data) {
  if (!data || !data.task_id) return;
  let known = tasks.get(data.task_id);
  if (!known) {
    known = { session, data: {}, progress: earlyProgress.get(data.call_id) || "", stopping: false };
    earlyProgress.delete(data.call_id);
    tasks.set(data.task_id, known);
  }
  const before = known.data.status;
  if (before && before !== "running" && data.status === "running") return; // a late, older word
  known.data = { ...known.data, ...data };
  if (data.progress) known.progress = data.progress;
  if (data.status !== "running") known.stopping = false;
  showTask(data.task_id);
  if (before !== data.status && data.status !== "running") {
    $("announcer").textContent = `Task ${known.data.summary || known.data.tool}: ${data.status}`;
  }
}

function showProgress(callId, line) {
  if (!callId || typeof line !== "string") return;
  const entry = document.querySelector(`#tools li[data-call-id="${CSS.escape(callId)}"]`);
  if (entry) entry.querySelector(".progress").textContent = line;
  for (const [taskId, known] of tasks) {
    if (known.data.call_id === callId) {
      known.progress = line;
      showTask(taskId);
      return;
    }
  }
  // Not a task (yet): kept for the card it may become.
  earlyProgress.delete(callId);
  earlyProgress.set(callId, line);
  if (earlyProgress.size > EARLY_PROGRESS_KEPT) earlyProgress.delete(earlyProgress.keys().next().value);
}

async function refreshTask(taskId) {
  const known = tasks.get(taskId);
  if (!known) return;
  const { response, data } = await api(taskUrl(app.dataset.taskUrl, known.session, taskId), {
    method: "GET", token: known.session.session_token,
  });
  if (response.ok) updateTask(known.session, data);
}

function refreshTasks(session) {
  // What the socket may have missed while it was away: a fresh read of each running task.
  for (const [taskId, known] of tasks) {
    if (known.session === session && known.data.status === "running") refreshTask(taskId).catch(() => {});
  }
}

async function stopTask(taskId) {
  const known = tasks.get(taskId);
  if (!known || known.data.status !== "running" || known.stopping) return;
  known.stopping = true;
  showTask(taskId);
  const fail = (reason) => {
    known.stopping = false;
    showTask(taskId);
    showMessage(`The task could not be stopped: ${reason}`);
  };
  try {
    const { response, data } = await api(taskUrl(app.dataset.taskCancelUrl, known.session, taskId), {
      token: known.session.session_token,
    });
    if (response.ok) updateTask(known.session, data);
    else if (response.status === 409) await refreshTask(taskId); // it ended, or is ending, already
    else fail(describeFailure(response, data));
  } catch (error) {
    fail(error.message);
  }
}

function tickTasks(session) {
  for (const [taskId, known] of tasks) {
    if (known.session === session && known.data.status === "running") {
      const elapsed = document.querySelector(`#tasks li[data-task-id="${CSS.escape(taskId)}"] .task-elapsed`);
      if (elapsed) elapsed.textContent = clock(taskSeconds(known.data));
    }
  }
}

// --- realtime events ------------------------------------------------------------------

function send(event) {
  if (call && call.channel.readyState === "open") call.channel.send(JSON.stringify(event));
}

function relay(event) {
  if (!call.serverHandlesTools && RELAYED_TYPES.has(event.type)) call.relayQueue.push(event);
}

async function flushRelay() {
  const current = call;
  if (!current || current.relayQueue.length === 0) return;
  const events = current.relayQueue.splice(0, 500);
  await api(current.session.urls.events, { body: { events }, token: current.session.session_token }).catch(() => {});
}

function onServerEvent(event) {
  relay(event);
  switch (event.type) {
    case "conversation.item.input_audio_transcription.delta":
      showText(event.item_id, "user", event.delta || "", false);
      break;
    case "conversation.item.input_audio_transcription.completed":
      showText(event.item_id, "user", event.transcript || "", true);
      break;
    case "conversation.item.added":
      if (event.item && event.item.role === "user" && userText(event.item)) {
        showText(event.item.id, "user", userText(event.item), true);
      }
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta":
      showText(event.item_id, "assistant", event.delta || "", false);
      break;
    case "response.output_audio_transcript.done":
      showText(event.item_id, "assistant", event.transcript || "", true);
      break;
    case "response.output_text.done":
      showText(event.item_id, "assistant", event.text || "", true);
      break;
    case "response.output_item.done":
      if (event.item && event.item.type === "function_call") onFunctionCall(event.item);
      break;
    case "input_audio_buffer.speech_started":
      speech("user", true);
      break;
    case "input_audio_buffer.speech_stopped":
      speech("user", false);
      break;
    case "output_audio_buffer.started":
      speech("assistant", true);
      break;
    case "output_audio_buffer.stopped":
    case "output_audio_buffer.cleared":
      speech("assistant", false);
      break;
    case "error":
      showMessage(`The assistant reported an error: ${(event.error && event.error.message) || "unknown error"}`);
      break;
    default:
      break; // every other event type is fine to ignore
  }
}

// --- our live events (WebSocket) ------------------------------------------------------

// How long the page waits before opening the live-event socket again; closes the server
// means for good (the session ended, or the token is refused) are not retried.
const EVENTS_RETRY_MS = [1000, 2000, 4000, 8000];
const FINAL_CLOSES = new Set([1000, 4400, 4401, 4403, 4410]);

function openEvents(session) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // The token travels as a subprotocol, never in the URL (proxies log query strings);
  // the server answers with "voiceplatform.v1" and never echoes the token.
  const socket = new WebSocket(`${scheme}//${location.host}${session.urls.ws}`,
    ["voiceplatform.v1", `bearer.${session.session_token}`]);
  socket.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!call || call.events !== socket) return;
    if (event.type === "session.state") {
      call.serverHandlesTools = Boolean(event.sideband_connected);
      call.eventsRetries = 0;
      refreshTasks(session);
    } else if (event.type === "sideband.attached") call.serverHandlesTools = true;
    else if (event.type === "sideband.detached") call.serverHandlesTools = false;
    else if (event.type === "tool.update") {
      const output = event.status === "failed" ? event.error || event.output : event.output;
      showTool(event.call_id, event.tool, event.arguments, event.status, output);
    } else if (event.type === "task.update") updateTask(session, event);
    else if (event.type === "task.progress") showProgress(event.call_id, event.progress);
    else if (event.type === "session.ended" && !call.ending) {
      if (event.reason === "call_ended") dropped(); // the call went away under us
      else finish(ENDED_BECAUSE[event.reason] || "The conversation ended.");
    }
  };
  socket.onclose = (closed) => {
    const current = call;
    if (!current || current.events !== socket || current.ending || FINAL_CLOSES.has(closed.code)) return;
    const wait = EVENTS_RETRY_MS[Math.min(current.eventsRetries, EVENTS_RETRY_MS.length - 1)];
    current.eventsRetries += 1;
    setTimeout(() => {
      if (call === current && !current.ending) current.events = openEvents(session);
    }, wait);
  };
  return socket;
}

// --- quality stats --------------------------------------------------------------------

async function reportStats() {
  const current = call; // the call may end while we wait for its stats
  if (!current || current.ending) return;
  const report = await current.pc.getStats();
  if (current.ending) return;
  const stats = {};
  report.forEach((entry) => {
    if (entry.type === "candidate-pair" && entry.nominated && entry.currentRoundTripTime !== undefined) {
      stats.rtt_seconds = entry.currentRoundTripTime;
    }
    if (entry.type === "inbound-rtp" && entry.kind === "audio") {
      if (entry.jitter !== undefined) stats.jitter_seconds = entry.jitter;
      if (entry.packetsLost !== undefined) stats.packets_lost = Math.max(0, entry.packetsLost);
      if (entry.packetsReceived !== undefined) stats.packets_received = entry.packetsReceived;
      if (entry.audioLevel !== undefined) stats.audio_level = entry.audioLevel;
    }
  });
  await api(current.session.urls.events, {
    body: { events: [{ type: "client.stats", stats }] },
    token: current.session.session_token,
  }).catch(() => {});
}

// --- recording (optional, with consent) -----------------------------------------------

function startRecording(micStream) {
  const context = new AudioContext();
  const mix = context.createMediaStreamDestination();
  const micSource = context.createMediaStreamSource(micStream);
  micSource.connect(mix);
  const recorder = new MediaRecorder(mix.stream, { mimeType: "audio/webm" });
  const chunks = [];
  recorder.ondataavailable = (event) => event.data.size && chunks.push(event.data);
  recorder.start(1000);
  return { context, mix, micSource, recorder, chunks };
}

function recordingStatus(text, failed = false) {
  const status = $("recording-status");
  status.textContent = text;
  status.classList.toggle("failed", failed);
  status.hidden = !text;
}

async function uploadRecording(recording, session) {
  recordingStatus("Uploading the recording…");
  const stopped = new Promise((resolve) => (recording.recorder.onstop = resolve));
  recording.recorder.stop();
  await stopped;
  recording.context.close();
  const blob = new Blob(recording.chunks, { type: "audio/webm" });
  let failure = null;
  try {
    const { response, data } = await api(session.urls.recording, { body: blob, contentType: "audio/webm", token: session.session_token });
    if (!response.ok) failure = describeFailure(response, data);
  } catch (error) {
    failure = `the server could not be reached (${error.message}).`;
  }
  if (failure) recordingStatus(`The recording was not saved: ${failure}`, true);
  else recordingStatus("The recording was uploaded and saved.");
}

// --- who is speaking --------------------------------------------------------------------
// A level for each side (the microphone's stream, the assistant's) and, in words, who is
// speaking: the realtime events say when speech starts and stops; the levels fill in
// where no event comes (push to talk has no voice activity detection).

const LEVEL_EVERY_MS = 100;
const SPEAKING_LEVEL = 35; // of 100, i.e. about -39 dBFS
const SPEAKING_HOLD_MS = 700; // a pause between words is not the end of speaking
const SAYS_WHO = {
  both: "You and the assistant are speaking",
  user: "You are speaking",
  assistant: "Assistant is speaking",
  "": "",
};

function levelMeter(context, stream) {
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  const source = context.createMediaStreamSource(stream);
  source.connect(analyser);
  return { analyser, source, samples: new Float32Array(analyser.fftSize) };
}

function levelOf(meter) {
  if (!meter) return 0;
  meter.analyser.getFloatTimeDomainData(meter.samples);
  let sum = 0;
  for (const sample of meter.samples) sum += sample * sample;
  const decibels = 20 * Math.log10(Math.sqrt(sum / meter.samples.length) || 1e-9);
  return Math.round(Math.min(100, Math.max(0, ((decibels + 60) / 60) * 100))); // -60..0 dBFS
}

function showLevel(id, level) {
  const meter = $(id);
  if (meter.getAttribute("aria-valuenow") === String(level)) return;
  meter.setAttribute("aria-valuenow", String(level));
  meter.querySelector(".meter-bar").style.transform = `scaleX(${level / 100})`;
}

function showSpeaking(levels) {
  const now = performance.now();
  const speaks = (side) => levels.speaking[side] || now - levels.heard[side] < SPEAKING_HOLD_MS;
  const [user, assistant] = [speaks("user"), speaks("assistant")];
  const who = user && assistant ? "both" : user ? "user" : assistant ? "assistant" : "";
  const box = $("speaking");
  if (box.dataset.who === who) return;
  box.dataset.who = who;
  box.textContent = SAYS_WHO[who];
}

function startLevels(current) {
  const context = new AudioContext();
  context.resume().catch(() => {});
  current.levels = {
    context, mic: levelMeter(context, current.mic), assistant: null,
    speaking: { user: false, assistant: false }, heard: { user: -Infinity, assistant: -Infinity },
  };
  current.timers.push(setInterval(() => tickLevels(current), LEVEL_EVERY_MS));
  $("levels").hidden = false;
}

function tickLevels(current) {
  const { levels } = current;
  const now = performance.now();
  const heard = { user: levelOf(levels.mic), assistant: levelOf(levels.assistant) };
  showLevel("mic-level", heard.user);
  showLevel("assistant-level", heard.assistant);
  for (const side of ["user", "assistant"]) if (heard[side] >= SPEAKING_LEVEL) levels.heard[side] = now;
  showSpeaking(levels);
}

function speech(side, speaking) {
  // What the realtime events say: speech started or stopped.
  if (!call || !call.levels) return;
  call.levels.speaking[side] = speaking;
  call.levels.heard[side] = performance.now();
  showSpeaking(call.levels);
}

function stopLevels(ended) {
  if (ended.levels) ended.levels.context.close().catch(() => {});
  $("levels").hidden = true;
  showLevel("mic-level", 0);
  showLevel("assistant-level", 0);
  $("speaking").dataset.who = "";
  $("speaking").textContent = "";
}

// --- the microphone ---------------------------------------------------------------------
// The caller's choice is remembered in this browser; switching during a call replaces the
// track the connection sends, on the same connection.

const MICROPHONE_KEY = "voiceplatform.microphone";

function chosenMicrophone() {
  try {
    return localStorage.getItem(MICROPHONE_KEY) || "";
  } catch {
    return ""; // storage refused (a privacy setting): the system's default
  }
}

function rememberMicrophone(deviceId) {
  try {
    if (deviceId) localStorage.setItem(MICROPHONE_KEY, deviceId);
    else localStorage.removeItem(MICROPHONE_KEY);
  } catch {
    // Not remembered: the choice still holds on this page.
  }
}

function stopTracks(stream) {
  stream.getTracks().forEach((track) => track.stop());
}

function microphoneRefusal(error) {
  if (error.name === "NotAllowedError" || error.name === "SecurityError") {
    return "Microphone access was refused. Allow the microphone for this page to talk, or type instead once it is allowed.";
  }
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
    return "No microphone was found. Connect one and try again.";
  }
  return `The microphone could not be opened: ${error.message}`;
}

async function openMicrophone(deviceId = chosenMicrophone()) {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: deviceId ? { deviceId: { exact: deviceId } } : true });
  } catch (error) {
    // The chosen one is gone (unplugged, another machine): the system's default instead.
    if (deviceId && (error.name === "OverconstrainedError" || error.name === "NotFoundError")) return openMicrophone("");
    throw new StartFailed(microphoneRefusal(error));
  }
}

async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  // Until the microphone is allowed, browsers list devices without ids or names.
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((device) =>
    device.kind === "audioinput" && device.deviceId && !["default", "communications"].includes(device.deviceId));
  const select = $("microphone");
  const wanted = chosenMicrophone();
  select.replaceChildren(new Option("System default", ""),
    ...devices.map((device, index) => new Option(device.label || `Microphone ${index + 1}`, device.deviceId)));
  select.value = devices.some((device) => device.deviceId === wanted) ? wanted : "";
}

async function switchMicrophone() {
  const deviceId = $("microphone").value;
  rememberMicrophone(deviceId);
  const current = call;
  if (!current || current.ending) return; // the next call opens it
  let stream;
  try {
    stream = await openMicrophone(deviceId);
    if (call !== current || current.ending) return stopTracks(stream);
    const [track] = stream.getAudioTracks();
    const [before] = current.mic.getAudioTracks();
    track.enabled = before ? before.enabled : true; // muted, or push to talk: still so
    await current.sender.replaceTrack(track);
  } catch (error) {
    if (stream) stopTracks(stream);
    showMessage(`The microphone could not be switched: ${error.message}`);
    return;
  }
  if (call !== current || current.ending) return stopTracks(stream);
  stopTracks(current.mic);
  current.mic = stream;
  if (current.levels) {
    current.levels.mic.source.disconnect();
    current.levels.mic = levelMeter(current.levels.context, stream);
  }
  const { recording } = current;
  if (recording) {
    recording.micSource.disconnect();
    recording.micSource = recording.context.createMediaStreamSource(stream);
    recording.micSource.connect(recording.mix);
  }
  $("announcer").textContent = `Now using ${stream.getAudioTracks()[0].label || "the chosen microphone"}.`;
}

// --- the conversation -----------------------------------------------------------------

function retriable(response, data) {
  // Busy or down for a moment: another try may work. Maintenance and refusals will not.
  const code = data && data.error ? data.error.code : "";
  return response.status === 429 || (response.status >= 500 && code !== "maintenance");
}

async function start(body = {}, { separator = "New conversation", reconnecting = null } = {}) {
  // While reconnecting, the status says which attempt it is, not each step of it.
  const say = reconnecting ? () => {} : setConnection;
  const cancelled = () => reconnecting !== null && reconnecting !== reconnection;
  if (!reconnecting) {
    clearMessage();
    recordingStatus("");
  }
  $("reconnect").hidden = true;
  $("start").disabled = true;
  say("Opening the microphone…");
  const started = performance.now();
  const mic = await openMicrophone();
  listMicrophones().catch(() => {}); // allowed now: the devices have names
  if (cancelled()) {
    stopTracks(mic);
    throw new StartFailed("Reconnecting was cancelled.");
  }
  say("Starting a session…");
  let created;
  try {
    created = await api("/session", { body });
  } catch (error) {
    stopTracks(mic);
    throw new StartFailed(`Could not reach the server: ${error.message}`, { retry: true });
  }
  const { response, data: session } = created;
  if (!response.ok || cancelled()) {
    stopTracks(mic);
    if (response.ok) api(session.urls.end, { token: session.session_token, keepalive: true }).catch(() => {});
    throw response.ok
      ? new StartFailed("Reconnecting was cancelled.")
      : new StartFailed(describeFailure(response, session), { retry: retriable(response, session) });
  }
  if (session.degradation_level >= 2) {
    showBanner("Tools are unavailable right now: I can't execute tasks, but I can still help with questions.");
  }
  const pc = new RTCPeerConnection();
  const channel = pc.createDataChannel("oai-events");
  const current = {
    session, pc, channel, mic, timers: [], relayQueue: [], serverHandlesTools: false, eventsRetries: 0,
    expiresAt: Date.parse(session.expires_at), ending: false, recording: null, levels: null,
    reconnecting, connected: false,
  };
  call = current;
  current.events = openEvents(session);
  current.sender = pc.addTrack(mic.getAudioTracks()[0], mic);
  if ($("record").checked) current.recording = startRecording(mic);
  startLevels(current);
  pc.ontrack = (event) => {
    const voice = event.streams[0] || new MediaStream([event.track]);
    $("remote-audio").srcObject = voice;
    if (current.ending) return;
    if (current.recording) current.recording.context.createMediaStreamSource(voice).connect(current.recording.mix);
    current.levels.assistant = levelMeter(current.levels.context, voice);
  };
  pc.onconnectionstatechange = () => {
    if (call !== current || current.ending) return;
    // "disconnected" often heals by itself; "failed" does not.
    if (pc.connectionState === "failed") dropped();
  };
  channel.onmessage = (message) => {
    try {
      onServerEvent(JSON.parse(message.data));
    } catch (error) {
      console.warn("ignored an event", error);
    }
  };
  channel.onopen = () => {
    if (call !== current || current.ending) return;
    if (cancelled()) return abandon();
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    current.connected = true;
    setConnection("Connected");
    app.dataset.connectSeconds = seconds;
    setControls(true);
    markCallStart(separator);
    applyMicrophoneModes(); // mute and push to talk carry over from a previous call
    current.timers.push(setInterval(tick, 1000), setInterval(reportStats, STATS_EVERY_MS),
      setInterval(flushRelay, RELAY_EVERY_MS));
    tick();
    if (reconnecting) reconnected(current);
  };
  channel.onclose = () => {
    if (call === current && !current.ending) dropped();
  };
  say("Connecting…");
  await pc.setLocalDescription(await pc.createOffer());
  const answer = await api(session.urls.sdp, {
    body: pc.localDescription.sdp, contentType: "application/sdp", token: session.session_token,
  });
  if (!answer.response.ok) {
    if (call === current) abandon();
    throw new StartFailed(describeFailure(answer.response, answer.data), { retry: retriable(answer.response, answer.data) });
  }
  await pc.setRemoteDescription({ type: "answer", sdp: answer.data });
}

function tick() {
  if (!call) return;
  const left = Math.max(0, Math.round((call.expiresAt - Date.now()) / 1000));
  $("time-left").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left`;
  tickTasks(call.session);
  if (left === 0) stop("The conversation reached its 15-minute limit.");
}

function teardown(state) {
  if (!call) return;
  const current = call;
  call = null;
  current.ending = true;
  current.timers.forEach(clearInterval);
  current.events.close();
  current.pc.close();
  stopTracks(current.mic);
  stopLevels(current);
  $("time-left").textContent = "";
  setConnection(state);
  setControls(false);
  return current;
}

async function finish(reason) {
  await concluded(teardown("Conversation ended"), reason);
}

async function concluded(ended, reason) {
  setConnection("Conversation ended");
  if (reason) showMessage(reason);
  loadRecent(); // the conversation just ended is the newest
  if (ended && ended.recording) await uploadRecording(ended.recording, ended.session);
}

async function stop(reason) {
  if (!call || call.ending) return;
  call.ending = true; // the hangup closes the connection: that is not a drop
  call.timers.forEach(clearInterval); // nothing more to report for an ending session
  const session = call.session;
  let failure = null;
  try {
    await flushRelay();
    const { response, data } = await api(session.urls.end, { token: session.session_token });
    if (!response.ok) failure = describeFailure(response, data);
  } catch (error) {
    failure = `Could not reach the server to end the session: ${error.message}`;
  } finally {
    await finish(reason);
  }
  if (failure) showMessage(failure);
}

function abandon() {
  // A start that failed after the server made a session: end it, free the microphone.
  const failed = teardown("Not connected");
  if (failed) api(failed.session.urls.end, { token: failed.session.session_token, keepalive: true }).catch(() => {});
}

async function dropped() {
  const lost = teardown("Connection lost");
  if (!lost) return; // its drop is being handled already
  // The server may have ended it on purpose (staff, maintenance, the time limit) and
  // hung up before its word arrived: the end answers how it ended, and the page says
  // that instead of reconnecting. A server too slow to say is no reason to wait longer.
  const asked = api(lost.session.urls.end, { token: lost.session.session_token, keepalive: true })
    .then(({ response, data }) => (response.ok && data ? data.end_reason : null))
    .catch(() => null); // offline: it is lost
  const reason = await Promise.race([asked, new Promise((resolve) => setTimeout(resolve, END_REASON_WAIT_MS, null))]);
  if (ENDED_BECAUSE[reason]) {
    stopReconnecting();
    return concluded(lost, ENDED_BECAUSE[reason]);
  }
  if (lost.recording) uploadRecording(lost.recording, lost.session).catch(() => {});
  if (lost.reconnecting) {
    // An attempt that did not hold: the next one (unless reconnecting was cancelled).
    if (lost.reconnecting === reconnection) nextAttempt(lost.reconnecting);
    return;
  }
  if (Date.now() < lost.expiresAt) reconnectAutomatically(lost);
  else lostForGood("The connection to the assistant was lost.");
}

// --- reconnecting -----------------------------------------------------------------------
// A call that drops (not ended on purpose) comes back by itself while its session has
// time left: a few attempts, each after a longer wait, each a new session; a signed-in
// caller's resumes the lost one (the server resumes only what a caller owns). Cancel
// stops it; after the last attempt the Reconnect button is there, as before.

const RECONNECT_WAITS_MS = [1000, 2000, 4000];
const END_REASON_WAIT_MS = 5000; // for the server to say how a dropped call ended
const RECONNECT_CONNECT_MS = 15000; // an attempt not connected by then has failed
let reconnection = null; // { body, expiresAt, attempt, timer, failure }

function reconnectAutomatically(lost) {
  clearMessage();
  reconnection = {
    body: SIGNED_IN ? { resume: lost.session.session_id } : {},
    expiresAt: lost.expiresAt, attempt: 0, timer: null, failure: "",
  };
  $("reconnect-cancel").hidden = false;
  $("reconnect-cancel").focus();
  nextAttempt(reconnection);
}

function nextAttempt(attempts) {
  if (attempts !== reconnection) return;
  if (attempts.attempt >= RECONNECT_WAITS_MS.length || Date.now() >= attempts.expiresAt) {
    lostForGood(attempts.failure
      ? `The connection to the assistant was lost, and reconnecting did not work: ${attempts.failure}`
      : "The connection to the assistant was lost, and reconnecting did not work.");
    return;
  }
  const wait = RECONNECT_WAITS_MS[attempts.attempt];
  attempts.attempt += 1;
  setControls(false); // no call meanwhile: Start begins a fresh one instead
  setConnection(`Reconnecting… (attempt ${attempts.attempt} of ${RECONNECT_WAITS_MS.length})`);
  attempts.timer = setTimeout(() => reconnect(attempts), wait);
}

async function reconnect(attempts) {
  if (attempts !== reconnection) return;
  try {
    await start(attempts.body, { separator: "Reconnected", reconnecting: attempts });
  } catch (error) {
    if (call && call.reconnecting === attempts) abandon();
    if (attempts !== reconnection) return; // cancelled meanwhile
    attempts.failure = error.message;
    if (error instanceof StartFailed && !error.retry) {
      lostForGood(`The connection to the assistant was lost, and reconnecting did not work: ${error.message}`);
    } else {
      nextAttempt(attempts);
    }
    return;
  }
  attempts.timer = setTimeout(() => {
    if (attempts === reconnection && call && call.reconnecting === attempts && !call.connected) dropped();
  }, RECONNECT_CONNECT_MS);
}

function reconnected(current) {
  const hadFocus = document.activeElement === $("reconnect-cancel");
  stopReconnecting();
  current.reconnecting = null; // an ordinary call from now on
  clearMessage();
  if (hadFocus) $("stop").focus(); // its Cancel button is gone
}

function stopReconnecting() {
  if (!reconnection) return;
  clearTimeout(reconnection.timer);
  reconnection = null;
  $("reconnect-cancel").hidden = true;
}

function lostForGood(message) {
  stopReconnecting();
  setControls(false);
  setConnection("Connection lost");
  showMessage(message);
  $("reconnect").hidden = false;
  $("reconnect").focus();
}

function cancelReconnecting() {
  const attempts = reconnection;
  if (!attempts) return;
  stopReconnecting();
  if (call && call.reconnecting === attempts) abandon();
  lostForGood("Reconnecting was cancelled.");
}

// --- controls ---------------------------------------------------------------------------

function setMicrophone(on) {
  if (call) call.mic.getAudioTracks().forEach((track) => (track.enabled = on));
}

function isMuted() {
  return $("mute").getAttribute("aria-pressed") === "true";
}

function applyMicrophoneModes() {
  const ptt = $("ptt-mode").checked;
  // Push to talk: no voice activity detection; the turn ends when the key is released.
  send({ type: "session.update", session: { type: "realtime", audio: { input: { turn_detection: ptt ? null : { type: "server_vad" } } } } });
  $("talk").disabled = !ptt;
  setMicrophone(!ptt && !isMuted());
}

function begin(body, options) {
  stopReconnecting(); // the caller starts one themselves
  start(body, options).catch((error) => {
    showMessage(error instanceof StartFailed ? error.message : `Could not connect: ${error.message}`);
    abandon();
    setConnection("Not connected");
    setControls(false);
  });
}

$("start").addEventListener("click", () => begin({}));
$("stop").addEventListener("click", () => stop());
$("reconnect").addEventListener("click", () => $("start").click());
$("reconnect-cancel").addEventListener("click", cancelReconnecting);
$("microphone").addEventListener("change", () => switchMicrophone());
if (navigator.mediaDevices) {
  navigator.mediaDevices.addEventListener("devicechange", () => listMicrophones().catch(() => {}));
}
$("mute").addEventListener("click", () => {
  const muted = !isMuted();
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute microphone" : "Mute microphone";
  if (!$("ptt-mode").checked) setMicrophone(!muted);
});
$("ptt-mode").addEventListener("change", applyMicrophoneModes);

function talk(down) {
  if (!call || !$("ptt-mode").checked) return;
  if (down) {
    send({ type: "input_audio_buffer.clear" });
    setMicrophone(true);
    $("talk").setAttribute("aria-pressed", "true");
  } else {
    setMicrophone(false);
    $("talk").setAttribute("aria-pressed", "false");
    send({ type: "input_audio_buffer.commit" });
    send({ type: "response.create" });
  }
}

$("talk").addEventListener("pointerdown", (event) => {
  $("talk").setPointerCapture(event.pointerId);
  talk(true);
});
for (const ending of ["pointerup", "pointercancel", "lostpointercapture"]) {
  $("talk").addEventListener(ending, () => $("talk").getAttribute("aria-pressed") === "true" && talk(false));
}
$("talk").addEventListener("keydown", (event) => event.key === "Enter" && !event.repeat && talk(true));
$("talk").addEventListener("keyup", (event) => event.key === "Enter" && talk(false));
function spaceTalks(event) {
  // Space talks unless another control has the focus (it must still work there).
  const focused = document.activeElement;
  const onOtherControl = focused && focused !== $("talk") && focused.matches("button, input, select, textarea");
  return event.code === "Space" && $("ptt-mode").checked && !onOtherControl;
}
document.addEventListener("keydown", (event) => {
  if (spaceTalks(event) && !event.repeat) {
    event.preventDefault();
    talk(true);
  }
});
document.addEventListener("keyup", (event) => {
  if (spaceTalks(event)) {
    event.preventDefault();
    talk(false);
  }
});

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !call) return;
  send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  send({ type: "response.create" });
  $("text").value = "";
});

window.addEventListener("pagehide", () => {
  if (!call) return;
  // keepalive lets the request outlive the page; a beacon could not carry the token.
  api(call.session.urls.end, { token: call.session.session_token, keepalive: true }).catch(() => {});
});

loadRecent();
listMicrophones().catch(() => {});
