// A staff page's live feed (ops_app.consumers): the server pushes re-rendered
// sections and this swaps them in by id, holding back a section the operator works in.
// Shared by the dashboard (ops.js) and a call's live view (live.js). Plain ES module.

const root = document.getElementById("ops");
const status = document.getElementById("live-status");
const CSRF_TOKEN = root.dataset.csrfToken || "";
const FIRST_RETRY_MS = 1000;
const LAST_RETRY_MS = 30000;

let retryMs = FIRST_RETRY_MS;
const pending = new Map(); // section id -> html held back while the operator works in it

export function setStatus(text, state) {
  status.textContent = text;
  status.dataset.state = state;
}

// A section is held while the operator is in it: focus inside, something typed, or
// the errors of a refused submission on screen.
function isHeld(section) {
  if (section.contains(document.activeElement) || section.querySelector(".errorlist")) return true;
  return [...section.querySelectorAll("input, textarea, select")].some((field) => {
    if (field.type === "hidden") return false;
    if (field.type === "checkbox" || field.type === "radio") return field.checked !== field.defaultChecked;
    if (field.tagName === "SELECT") return [...field.options].some((o) => o.selected !== o.defaultSelected);
    return field.value !== field.defaultValue;
  });
}

// Fragments rendered for the socket carry no CSRF token: forms get this page's.
export function fragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  for (const form of template.content.querySelectorAll('form[method="post"]')) {
    if (form.querySelector('input[name="csrfmiddlewaretoken"]')) continue;
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "csrfmiddlewaretoken";
    input.value = CSRF_TOKEN;
    form.prepend(input);
  }
  return template.content;
}

function swap(id, html) {
  const section = document.getElementById(id);
  if (!section) return;
  if (isHeld(section)) {
    pending.set(id, html);
    return;
  }
  pending.delete(id);
  section.replaceWith(fragment(html));
}

function applyPending() {
  for (const [id, html] of [...pending]) swap(id, html);
}

// Opens the page's feed (data-ws-path), reconnecting with backoff; ops.update messages
// swap sections, others go to onMessage. onMessage returns "over" when the feed ended
// for good (no reconnect).
export function startFeed(onMessage = () => {}) {
  let over = false;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}${root.dataset.wsPath}`);
  socket.addEventListener("open", () => {
    retryMs = FIRST_RETRY_MS;
    setStatus("Live", "live");
  });
  socket.addEventListener("message", (message) => {
    let update;
    try {
      update = JSON.parse(message.data);
    } catch {
      return;
    }
    if (update.type === "ops.update") {
      for (const [id, html] of Object.entries(update.html || {})) swap(id, html);
      applyPending();
    } else if (onMessage(update) === "over") {
      over = true;
    }
  });
  socket.addEventListener("close", () => {
    if (over) return;
    const seconds = Math.round(retryMs / 1000);
    setStatus(`Live updates paused; retrying in ${seconds} s`, "down");
    setTimeout(() => startFeed(onMessage), retryMs);
    retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
  });
}

// Held sections catch up once the operator leaves them.
root.addEventListener("focusout", () => setTimeout(applyPending, 0));
