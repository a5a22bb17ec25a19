"""The simulator as the agents' model: `POST /v1/responses`, scripted and deterministic.

It reads the request's first user message (the agent's instruction) and plays a plan
of tool calls, one a response, judged by how many function_call_output items the
input holds already; then answers in text. Only tools the request offers are called
(unless the instruction says "ignore the tool list"); a plan needing one that is not
offered is answered with a refusal naming it.

- "write|create|save ... <name.ext>" (e.g. "write notes.md about X", "create a file
  called todo.txt with milk"): write_file, then an answer naming the file.
- "run `command`": bash with that command; "list files": bash `ls -la`.
- "search for X": web_search for X.
- "take your time" / "slowly": bash `sleep 2`, three times, before the rest.
- anything else: an answer echoing the first line of the instructions and of the
  user's message, so a test sees what the agent was told.

Call summaries (a request whose text.format is the JSON schema named `call_summary`,
as the product's post-call summaries ask) are answered with that JSON, derived from the
transcript in the first user message, one turn a line ("Caller: ...", "Assistant:
...", "Tool call: ..."):

- summary: the caller's first turn and the assistant's last one, quoted (each cut to
  160 characters): `The caller asked: “…” The assistant's last answer: “…”`.
- outcome, by words the caller said, follow-up words winning: "call back", "call me
  back", "follow up", "later" -> follow_up; "thanks", "thank you", "that works",
  "solved" -> resolved; anything else -> not_resolved.
- topics: the three words said most often (caller and assistant; four letters or more,
  common words left out), ties in the order first said.

Usage is counted roughly (four characters a token) but deterministically.
"""

from __future__ import annotations

import json
import re
import secrets
import time

SLOW = re.compile(r"\b(take your time|slowly)\b", re.IGNORECASE)
RUN = re.compile(r"\brun\s+`([^`]+)`", re.IGNORECASE)
LIST = re.compile(r"\blist (the )?files\b", re.IGNORECASE)
SEARCH = re.compile(r"\bsearch (the web )?for\s+(.+?)(?:[.;\n]|$)", re.IGNORECASE)
WRITE = re.compile(
    r"\b(?:write|create|save)\b.*?([\w][\w./-]*\.[A-Za-z0-9]{1,8})\b", re.IGNORECASE | re.DOTALL
)
CONTENT = re.compile(r"\b(?:with|containing|saying)\s+(.+)$", re.IGNORECASE | re.DOTALL)
IGNORE_TOOLS = re.compile(r"\bignore the tool list\b", re.IGNORECASE)
SLOW_STEPS = 3
SUMMARY_FORMAT = "call_summary"
TURN = re.compile(r"^(Caller|Assistant): *(.*\S)", re.MULTILINE)
FOLLOW_UP = re.compile(r"\b(call (me )?back|follow[ -]?up|later)\b", re.IGNORECASE)
RESOLVED = re.compile(r"\b(thanks|thank you|that works|solved)\b", re.IGNORECASE)
WORD = re.compile(r"[a-z][a-z'-]{3,}")
QUOTE_CHARS = 160
TOPICS = 3
COMMON_WORDS = frozenset(
    re.findall(
        r"\S+",
        """
        about after again also because been before being below between both call can't
        cannot could does doing done down during each even every from further going good
        have having hello here into just know like little make many more most much must need
        only other over please really right said same says should some such sure than thank
        thanks that that's their them then there these they this those through under until
        very want well were what when where which while will with would yeah your you're
        yours it's i'll i've i'd don't didn't doesn't isn't what's there's let's
        """,
    )
)


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _first_user_text(items: list) -> str:
    for item in items:
        if isinstance(item, dict) and item.get("role") == "user":
            return _text(item.get("content"))
    return ""


def _outputs(items: list) -> list[str]:
    return [
        str(item.get("output", ""))
        for item in items
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]


def plan(instruction: str) -> list[tuple[str, dict]]:
    """The tool calls an instruction asks for, in order."""
    steps: list[tuple[str, dict]] = []
    if SLOW.search(instruction):
        steps += [("bash", {"command": "sleep 2"})] * SLOW_STEPS
    if match := RUN.search(instruction):
        steps.append(("bash", {"command": match.group(1)}))
    elif LIST.search(instruction):
        steps.append(("bash", {"command": "ls -la"}))
    if match := SEARCH.search(instruction):
        steps.append(("web_search", {"query": match.group(2).strip()[:200]}))
    if match := WRITE.search(instruction):
        name = match.group(1).rstrip(".")
        after = instruction[match.end() :]
        content = CONTENT.search(after)
        body = content.group(1).strip() if content else f"# Notes\n\n{instruction.strip()}\n"
        steps.append(("write_file", {"file_path": name, "content": body}))
    return steps


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _answer(instruction: str, instructions: str, done: list[tuple[str, dict]], outputs: list[str]):
    if not done:
        return (
            f"Done. My instructions begin: {_first_line(instructions) or '(none)'} "
            f"You asked: {_first_line(instruction)}"
        )
    parts = []
    for (name, arguments), output in zip(done, outputs, strict=False):
        if name == "write_file":
            parts.append(f"I wrote {arguments['file_path']}.")
        else:
            parts.append(f"{name} said: {output.strip()[:200]}")
    return "Done. " + " ".join(parts)


def summary_requested(request: dict) -> bool:
    text = request.get("text")
    shape = text.get("format") if isinstance(text, dict) else None
    return (
        isinstance(shape, dict)
        and shape.get("type") == "json_schema"
        and shape.get("name") == SUMMARY_FORMAT
    )


def _quoted(text: str) -> str:
    text = text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1].rstrip() + "…"
    return f"\u201c{text}\u201d"


def call_summary(transcript: str) -> dict:
    """The call summary of a transcript (see the module's docstring)."""
    turns = TURN.findall(transcript)
    said = [text for who, text in turns if who == "Caller"]
    answers = [text for who, text in turns if who == "Assistant"]
    summary = f"The caller asked: {_quoted(said[0]) if said else '(nothing)'}"
    if answers:
        summary += f" The assistant's last answer: {_quoted(answers[-1])}"
    caller = "\n".join(said)
    if FOLLOW_UP.search(caller):
        outcome = "follow_up"
    elif RESOLVED.search(caller):
        outcome = "resolved"
    else:
        outcome = "not_resolved"
    counts: dict[str, int] = {}  # in the order first said
    for _, text in turns:
        for word in WORD.findall(text.lower()):
            if word not in COMMON_WORDS:
                counts[word] = counts.get(word, 0) + 1
    topics = sorted(counts, key=lambda word: -counts[word])[:TOPICS]
    return {"summary": summary, "outcome": outcome, "topics": topics}


def _usage(request: dict, text: str) -> dict:
    inputs = max(1, len(json.dumps(request.get("input", ""))) // 4)
    inputs += len(str(request.get("instructions") or "")) // 4
    outputs = max(1, len(text) // 4) + 10
    return {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + outputs,
    }


def respond(request: dict) -> dict:
    """The Responses API's answer to request (already checked to be an object)."""
    items = request.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    items = items if isinstance(items, list) else []
    instructions = request.get("instructions") or ""
    instruction = _first_user_text(items)
    offered = {
        tool.get("name")
        for tool in request.get("tools") or []
        if isinstance(tool, dict) and tool.get("type") == "function"
    }
    steps = plan(instruction)
    outputs = _outputs(items)
    output: list[dict] = []
    if summary_requested(request):
        text = json.dumps(call_summary(instruction))
    elif len(outputs) < len(steps):
        name, arguments = steps[len(outputs)]
        if name in offered or IGNORE_TOOLS.search(instruction):
            text = json.dumps(arguments)
            output.append(
                {
                    "type": "function_call",
                    "id": "fc_" + secrets.token_hex(8),
                    "call_id": "call_" + secrets.token_hex(8),
                    "name": name,
                    "arguments": text,
                    "status": "completed",
                }
            )
        else:
            text = f"I cannot do that: the tool {name} is not available to me."
    else:
        text = _answer(instruction, str(instructions), steps, outputs)
    if not output:
        output.append(
            {
                "type": "message",
                "id": "msg_" + secrets.token_hex(8),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    return {
        "id": "resp_" + secrets.token_hex(12),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": str(request.get("model") or ""),
        "instructions": instructions if isinstance(instructions, str) else None,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": request.get("tools") or [],
        "error": None,
        "incomplete_details": None,
        "usage": _usage(request, text),
    }
