"""Prints what one bash tool call may use, as seen from inside the sandbox: run it on a
worker host (`.venv/bin/python scripts/sandbox_limits.py`) to check the isolation and
limits that host really gives (memory, processes, /tmp, seccomp, user namespaces, and
whether the workspace's quota holds against a burst of fallocate)."""

from __future__ import annotations

import asyncio
import os

import django

PROBE = """ulimit -a | grep -E 'file size|cpu time|processes|virtual'
df -h /tmp /dev/shm | tail -2
grep -E 'NoNewPrivs|Seccomp:' /proc/self/status
unshare -Urn true 2>&1 | head -1
python3 -c "
held = []
try:
    while len(held) < 16:
        held.append(bytearray(64 * 1024 * 1024))
    print('held', len(held) * 64, 'MiB')
except MemoryError:
    print('memory refused after', len(held) * 64, 'MiB')
"
(for i in $(seq 1 100); do sleep 2 & done) 2>&1 | tail -1
for i in $(seq 1 100); do fallocate -l 4M fill$i 2>/dev/null || break; done
echo "workspace after asking for 100 x 4 MiB: $(du -sm . | cut -f1) MiB"; rm -f fill*
pwd"""


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
    django.setup()
    from tools_app import registry
    from tools_app.sandbox import describe_limits, isolation
    from tools_app.workspace import Workspace

    workspace = Workspace.for_session("sess_sandbox_limits_probe")
    tool = registry.get("bash").build(workspace)
    result = asyncio.run(tool.execute({"command": PROBE, "timeout": 20}))
    print(f"isolation: {isolation()}\nlimits: {describe_limits()}\n{result.output}")


if __name__ == "__main__":
    main()
