"""Every Prometheus metric of the product, named and bucketed as in the seed (8.2)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

voice_session_duration_seconds = Histogram(
    "voice_session_duration_seconds",
    "Duration of voice sessions",
    buckets=[30, 60, 120, 300, 600, 900],
)
# source: web, api or sip (the seed's labels, and where the session came from).
voice_session_created_total = Counter(
    "voice_session_created_total", "Total sessions created", ["region", "status", "source"]
)
voice_openai_latency_seconds = Histogram(
    "voice_openai_latency_seconds",
    "OpenAI API latency",
    ["operation"],
    buckets=[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
)
voice_errors_total = Counter("voice_errors_total", "Total errors", ["error_type", "component"])
# Every component voice_errors_total counts: a failure of the service, never a caller's
# bad input nor a tool's own answer (a refused path is the tool working).
ERROR_COMPONENTS = frozenset(
    {"api", "openai", "tools", "database", "redis", "sideband", "webhooks"}
)
# Every event a sideband connection of this process received (the benchmark's count of
# what arrived, against what the upstream sent).
voice_sideband_events_total = Counter(
    "voice_sideband_events_total", "Events received on calls' sideband connections"
)
voice_tool_execution_duration_seconds = Histogram(
    "voice_tool_execution_duration_seconds",
    "Tool execution time",
    ["tool_name", "status"],
    buckets=[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0],
)
voice_tool_execution_total = Counter(
    "voice_tool_execution_total", "Total tool executions", ["tool_name", "status"]
)
voice_task_total = Counter(
    "voice_task_total", "Background tasks by how they ended", ["kind", "status"]
)
voice_task_duration_seconds = Histogram(
    "voice_task_duration_seconds",
    "Background task time, from its start to its end",
    ["kind"],
    buckets=[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0],
)
voice_session_cost_usd_total = Counter(
    "voice_session_cost_usd_total",
    "Estimated upstream cost of sessions in US dollars (sessions_app.costs)",
    ["model"],
)
voice_webrtc_rtt_seconds = Histogram(
    "voice_webrtc_rtt_seconds",
    "Round-trip time reported by browser clients",
    buckets=[0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6],
)
voice_webrtc_jitter_seconds = Histogram(
    "voice_webrtc_jitter_seconds",
    "Inbound audio jitter reported by browser clients",
    buckets=[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
)
voice_webrtc_packet_loss_ratio = Histogram(
    "voice_webrtc_packet_loss_ratio",
    "Inbound audio packet loss reported by browser clients",
    buckets=[0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
)

voice_api_request_duration_seconds = Histogram(
    "voice_api_request_duration_seconds",
    "API request latency",
    ["endpoint", "method", "status"],
    buckets=[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
)
# Set when /metrics is scraped (ops_app.exporter), from the database and the breakers.
voice_sessions_active = Gauge(
    "voice_sessions_active", "Number of active voice sessions", ["region", "pod"]
)
# Fleet-wide (tasks run on workers, not on a pod): every pod reports the same number,
# so aggregate it with max, not sum.
voice_tasks_running = Gauge(
    "voice_tasks_running", "Background tasks running across the fleet (take max over pods)"
)
voice_sessions_capacity = Gauge(
    "voice_sessions_capacity", "Live sessions this pod takes before refusing", ["pod"]
)
voice_degradation_level = Gauge(
    "voice_degradation_level", "Service level: 1 full, 2 reduced, 3 voice only, 4 maintenance"
)
circuit_breaker_state = Gauge(
    "circuit_breaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open", ["service"]
)
BREAKER_STATE_VALUES = {"closed": 0, "open": 1, "half-open": 2}


def count_error(component: str, error_type: str) -> None:
    """One failure of a component. error_type comes from our code (an error code, an
    exception's class name), never from a caller: it stays a small set."""
    assert component in ERROR_COMPONENTS, component
    voice_errors_total.labels(error_type=error_type[:60], component=component).inc()
