"""The containers' health check: `python -m voiceplatform.healthcheck web|worker|beat`.

Exit 0 when healthy, 1 otherwise, with one line saying why (Docker keeps it in
`docker inspect`; Kubernetes in the pod's events).

- web: GET /health/live on this container's own port answers 200. It asks for
  127.0.0.1, a Host outside ALLOWED_HOSTS, which the probe paths accept
  (voiceplatform.middleware.ProbeHostMiddleware).
- worker, beat: their heartbeat file (voiceplatform.heartbeat) was touched within
  HEARTBEAT_MAX_AGE_SECONDS.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from django.conf import settings

from voiceplatform.heartbeat import age, heartbeat_path

PROCESSES = ("web", "worker", "beat")


def check_web(port: int, timeout: float = 4.0) -> str | None:
    url = f"http://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only)
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def check_heartbeat(process: str, max_age: float) -> str | None:
    seconds = age(process)
    if seconds is None:
        return f"{heartbeat_path(process)} does not exist: {process} has not started its loop"
    if seconds > max_age:
        return f"{process} last touched its heartbeat {seconds:.0f} s ago (limit {max_age:.0f} s)"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PROCESSES:
        print(f"usage: python -m voiceplatform.healthcheck {'|'.join(PROCESSES)}", file=sys.stderr)
        return 2
    process = argv[0]
    if process == "web":
        problem = check_web(settings.PORT)
    else:
        problem = check_heartbeat(process, settings.HEARTBEAT_MAX_AGE_SECONDS)
    print(problem or f"{process}: healthy")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
