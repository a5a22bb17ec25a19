"""The benchmark harness keeps working: its floor and its peer (amplifier-voice's
handler shape) pass both calls through to the simulator, and its results come out as
JSON with the keys issue 12 names."""

from __future__ import annotations

import json

import httpx
import pytest

from bench import floor, peer, run
from sessions_app.probe import offering_peer


@pytest.fixture
async def floor_http(simulator, monkeypatch):
    monkeypatch.setattr(floor, "UPSTREAM", simulator.url)
    monkeypatch.setattr(floor, "_client", None)
    transport = httpx.ASGITransport(app=floor.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as http:
        yield http
    if floor._client is not None:
        await floor._client.aclose()


async def test_the_floor_passes_a_session_and_an_offer_through_to_the_upstream(
    floor_http, simulator
):
    secret = await floor_http.post("/session")
    peer, _ = await offering_peer()
    try:
        answer = await floor_http.post(
            "/sdp",
            content=peer.localDescription.sdp,
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {secret.json()['value']}",
            },
        )
    finally:
        await peer.close()

    assert secret.status_code == 201 and secret.json()["value"]
    assert answer.status_code == 201 and answer.text.startswith("v=0")
    assert simulator.call(answer.headers["x-call-id"])["call_id"] == answer.headers["x-call-id"]


async def test_the_floor_answers_404_for_anything_else(floor_http):
    assert (await floor_http.get("/session")).status_code == 404


@pytest.fixture
async def peer_http(simulator, monkeypatch):
    monkeypatch.setattr(peer, "UPSTREAM", simulator.url)
    transport = httpx.ASGITransport(app=peer.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://peer") as http:
        yield http


async def test_the_peer_answers_as_amplifier_voice_does_through_the_upstream(peer_http, simulator):
    secret = await peer_http.post("/session", json={"voice": "marin"})
    peer_, _ = await offering_peer()
    try:
        answer = await peer_http.post(
            "/sdp",
            content=peer_.localDescription.sdp,
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {secret.json()['client_secret']['value']}",
            },
        )
    finally:
        await peer_.close()

    assert secret.status_code == 200 and secret.json()["client_secret"]["value"]
    assert answer.status_code == 200 and answer.text.startswith("v=0")
    assert simulator.call(answer.headers["x-call-id"])["call_id"] == answer.headers["x-call-id"]


async def test_the_peer_passes_an_upstream_refusal_on_and_answers_404_for_anything_else(
    peer_http,
):
    refused = await peer_http.post(
        "/sdp", content="v=0", headers={"Authorization": "Bearer not-a-secret"}
    )

    assert refused.status_code >= 400 and "detail" in refused.json()
    assert (await peer_http.get("/session")).status_code == 404
    assert (await peer_http.post("/session", content=b"[")).status_code == 400


def test_the_results_are_written_as_json_with_the_keys_the_issue_names(tmp_path):
    plan = run.QUICK
    latency = {
        clients: {
            name: run.Measured(
                session_ms=[10.0 + base, 12.0 + base],
                sdp_ms=[20.0 + base],
                wall=1.0,
                cpu=0.05,
                requests=4,
                # /session alone, timed at one client only
                alone=run.Measured(cpu=0.01 * (1 + base), requests=2) if clients == 1 else None,
            )
            for name, base in (
                ("simulator", 0),
                ("floor", 1),
                ("peer", 2),
                ("ours-pg", 3),
                ("ours-embedded", 4),
            )
        }
        for clients in plan.clients
    }
    held = {"asked": 100, "held": 100, "rss_per_session_kb": 90.0, "loop_lag_p99_ms": 4.0}
    tools = {
        "inprocess": run.summary([0.3, 0.4]),
        "celery": {1: {**run.summary([8.0, 9.0]), "calls_per_s": 50.0}},
    }
    traffic = [
        {
            "asked": n,
            "held": n,
            "lag_ms": {"p50": 1.0, "p99": lag},
            "cpu_s_per_call_minute": 0.02,
            "rss_per_call_kb": 150.0,
            "events_dropped": dropped,
        }
        for n, lag, dropped in ((500, 10.0, 0), (2000, 40.0, 2))
    ]
    results = {
        "meta": {"mode": "quick"},
        "latency": latency,
        "gc": {},
        "held": [held],
        "traffic": traffic,
        "tools": tools,
        "webhooks": {"per_s": 600.0},
    }

    run.write_json(tmp_path / "out.json", run.as_json(results, plan))

    written = json.loads((tmp_path / "out.json").read_text())
    assert written["session_added_ms"]["1"] == {"p50": 3.0, "p99": 3.0}
    assert written["sdp_added_ms"]["10"] == {"p50": 3.0, "p99": 3.0}
    assert written["session_cpu_ms"] == written["floor_cpu_ms"] == written["peer_cpu_ms"] == 12.5
    assert set(written["targets"]) == {"simulator", "floor", "peer", "ours-pg", "ours-embedded"}
    # Per endpoint: /session timed alone, /sdp the pair's CPU less that.
    floor, ours = written["cpu_ms_by_endpoint"]["floor"], written["cpu_ms_by_endpoint"]["ours-pg"]
    assert floor == {"session": 10.0, "sdp": 15.0, "session_errors": 0}
    assert ours == {"session": 20.0, "sdp": 5.0, "session_errors": 0}
    assert written["sessions_held"] == 100 and written["rss_per_session_kb"] == 90.0
    assert written["tool_dispatch_ms"] == {"p50": 8.0, "p99": 9.0}
    assert written["tool_inprocess_ms"] == 0.3
    assert written["webhooks_per_s"] == 600.0
    # Talking calls: the largest number held, and every event any stage lost.
    assert written["calls_held_traffic"] == 2000
    assert written["lag_ms"] == {"p50": 1.0, "p99": 40.0}
    assert written["cpu_s_per_call_minute"] == 0.02 and written["rss_per_call_kb"] == 150.0
    assert written["events_dropped"] == 2
    lines: list[str] = []
    run.report_latency({**results, "meta": {"database": "pg"}}, plan, lines.append)
    assert "  ours-pg       /session  20.00   /sdp   5.00  (2.0x / 0.3x the floor's)" in lines


async def test_a_stage_that_fails_is_named_and_the_other_stages_keep_their_figures(tmp_path):
    async def webhooks() -> dict:
        return {"per_s": 510.0, "cpu_ms_per_event": 1.9, "outcomes": {"recorded": 10}}

    async def tools() -> dict:
        raise OSError(28, "Workspace storage on this worker is full")

    full = "OSError: [Errno 28] Workspace storage on this worker is full"
    results: dict = {"meta": {"mode": "quick"}}
    await run.stage(results, "tools", lambda message: None, tools)
    await run.stage(results, "webhooks", lambda message: None, webhooks)

    assert results["failed"] == {"tools": full}
    written = run.as_json(results, run.QUICK)
    assert written["webhooks_per_s"] == 510.0 and "tool_dispatch_ms" not in written
    assert written["failed"] == results["failed"]
    lines: list[str] = []
    run.report(results, run.QUICK, lines.append)
    text = "\n".join(lines)
    assert "510 verified events/s" in text
    assert f"== tools: FAILED ({full}) ==" in text


async def test_the_served_probe_names_the_loop_callbacks_that_held_the_loop(monkeypatch):
    import asyncio
    import time

    from bench import served

    monkeypatch.setattr(asyncio.Handle, "_run", asyncio.Handle._run)  # undone after
    probe = served.Probe()
    probe.time_callbacks()

    async def hogs_the_loop() -> None:
        time.sleep(0.03)

    await asyncio.ensure_future(hogs_the_loop())
    asyncio.get_running_loop().call_soon(lambda: None)
    await asyncio.sleep(0)

    stats = probe.stats()
    slow = {s["what"].rsplit(".", 1)[-1]: s for s in stats["slow_callbacks"]}
    assert slow["hogs_the_loop"]["count"] == 1 and slow["hogs_the_loop"]["max_ms"] >= 30
    # What a stage leaves running for the next: this test's own task, no sideband.
    assert stats["tasks"] >= 1 and stats["sidebands_held"] == 0


def test_the_served_probe_reads_how_long_its_thread_waited_for_a_cpu(tmp_path):
    from bench import served

    waited = served._cpu_waited(served._schedstat())
    assert waited >= 0.0 and served._cpu_waited(served._schedstat()) >= waited
    assert served._cpu_waited(str(tmp_path / "no-such-thread")) == 0.0
