"""deploy/nginx/nginx.conf rendered for a local topology: the upstreams on loopback
ports, the listener on one, and every path nginx writes (pid, logs, temp) under one
directory, so an nginx master of our own runs beside (never instead of) the system's.

Used by scripts/cluster.sh and the multi-pod drill (tests/deploy/test_cluster_drill.py):

    python scripts/render_nginx.py --listen 8080 --upstream web-1=8001 \
        --upstream web-2=8002 --prefix var/cluster/nginx > var/cluster/nginx/nginx.conf
    nginx -p var/cluster/nginx -c nginx.conf -e error.log -g 'daemon off;'

The access log names the upstream that served each request (`$upstream_addr`), which
is how the drill tells which pod a request reached."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "nginx.conf"
LOG_FORMAT = (
    '    log_format upstreams \'$request_method $request_uri $status "$upstream_addr" '
    '"$upstream_status" "$http_x_voice_session_id" "$cookie_VOICE_AFFINITY"\';\n'
)


def render(text: str, *, listen: int, upstreams: dict[str, int], prefix: Path) -> str:
    """The config with `server <name>:8000` as `server 127.0.0.1:<port>`, `listen` on
    127.0.0.1:<listen>, and pid, logs and temp paths under prefix."""
    for name, port in upstreams.items():
        text = re.sub(rf"\bserver {re.escape(name)}:\d+", f"server 127.0.0.1:{port}", text)
    unknown = re.findall(r"^\s*server (?!127\.0\.0\.1:)(\S+);", text, re.MULTILINE)
    if unknown:
        raise ValueError(f"no local port given for upstream servers {sorted(set(unknown))}")
    text = re.sub(r"^(\s*)listen \S+;", rf"\1listen 127.0.0.1:{listen};", text, flags=re.M)
    text = re.sub(r"^worker_processes \S+;", "worker_processes 1;", text, flags=re.M)
    text = re.sub(r"^pid \S+;", f"pid {prefix}/nginx.pid;", text, flags=re.M)
    text = re.sub(
        r"^(\s*)(\w+_temp_path) /tmp/(\w+);", rf"\1\2 {prefix}/\3;", text, flags=re.MULTILINE
    )
    text = re.sub(r"^(\s*)error_log \S+", rf"\1error_log {prefix}/error.log", text, flags=re.M)
    text = re.sub(
        r"^(\s*)access_log /dev/stdout;",
        rf"\1access_log {prefix}/access.log upstreams;",
        text,
        flags=re.MULTILINE,
    )
    return text.replace("http {\n", "http {\n" + LOG_FORMAT, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--prefix", type=Path, required=True)
    parser.add_argument(
        "--upstream", action="append", default=[], metavar="NAME=PORT", required=True
    )
    args = parser.parse_args()
    upstreams = {}
    for pair in args.upstream:
        name, _, port = pair.partition("=")
        upstreams[name] = int(port)
    print(
        render(
            CONF.read_text(),
            listen=args.listen,
            upstreams=upstreams,
            prefix=args.prefix.resolve(),
        ),
        end="",
    )


if __name__ == "__main__":
    main()
