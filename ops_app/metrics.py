"""Every Prometheus metric of the product, named and bucketed as in the seed (8.2)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

voice_session_duration_seconds = Histogram(
    "voice_session_duration_seconds",
    "Duration of voice sessions",
    buckets=[30, 60, 120, 300, 600, 900],
)
voice_session_created_total = Counter(
    "voice_session_created_total", "Total sessions created", ["region", "status"]
)
voice_openai_latency_seconds = Histogram(
    "voice_openai_latency_seconds",
    "OpenAI API latency",
    ["operation"],
    buckets=[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
)
voice_errors_total = Counter("voice_errors_total", "Total errors", ["error_type", "component"])
voice_tool_execution_duration_seconds = Histogram(
    "voice_tool_execution_duration_seconds",
    "Tool execution time",
    ["tool_name", "status"],
    buckets=[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0],
)
voice_tool_execution_total = Counter(
    "voice_tool_execution_total", "Total tool executions", ["tool_name", "status"]
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
