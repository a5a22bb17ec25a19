// The session page's recording. A browser's MediaRecorder writes WebM that does not say
// how long it is, so the player shows no length and cannot seek. Asking it to seek far
// past the end makes it read the file through and learn the length; then it goes back
// to the start, and the page says the length in words too.
const audio = document.getElementById("recording");
const said = document.getElementById("recording-length");

function clock(seconds) {
  const whole = Math.floor(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function known() {
  return Number.isFinite(audio.duration) && audio.duration > 0;
}

function tell() {
  if (known() && said) said.textContent = `Length ${clock(audio.duration)}`;
}

function learn() {
  if (known()) return tell();
  const back = () => {
    if (!known()) return;
    audio.removeEventListener("durationchange", back);
    audio.currentTime = 0;
    tell();
  };
  audio.addEventListener("durationchange", back);
  audio.currentTime = Number.MAX_SAFE_INTEGER;
}

if (audio) {
  if (audio.readyState >= HTMLMediaElement.HAVE_METADATA) learn();
  else audio.addEventListener("loadedmetadata", learn, { once: true });
}
