"""The realtime simulator: a local stand-in for OpenAI's Realtime API.

Wire-compatible with the official SDK: client secrets, WebRTC calls answered by a real
aiortc peer, hangup/accept/reject, the sideband WebSocket, signed webhooks, and a
scripted, deterministic conversation on the `oai-events` data channel. Failure modes
(5xx, 429, slow) are switched on through its control endpoints.
"""
