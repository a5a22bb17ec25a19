// One call's live view: its facts swapped in as sections (feed.js), its timeline
// updated entry by entry as the server sends them (live.timeline), following the end
// of the conversation unless the reader scrolled up.
import { fragment, setStatus, startFeed } from "./feed.js";

const timeline = document.getElementById("timeline");
const empty = document.getElementById("timeline-empty");

function following() {
  return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
}

function applyTimeline(update) {
  const stayAtEnd = following();
  for (const [key, html] of update.entries || []) {
    const entry = fragment(html).firstElementChild;
    const old = document.getElementById(key);
    if (old) old.replaceWith(entry);
    else timeline.append(entry);
  }
  if (update.order) {
    const wanted = new Set(update.order);
    for (const entry of [...timeline.children]) if (!wanted.has(entry.id)) entry.remove();
    for (const key of update.order) {
      const entry = document.getElementById(key);
      if (entry) timeline.append(entry);
    }
  }
  empty.hidden = timeline.children.length > 0;
  if (stayAtEnd && timeline.lastElementChild) timeline.lastElementChild.scrollIntoView({ block: "end" });
}

startFeed((update) => {
  if (update.type === "live.timeline") applyTimeline(update);
  else if (update.type === "live.ended") {
    setStatus("The call has ended: this page shows how it went.", "ended");
    return "over";
  }
  return undefined;
});
