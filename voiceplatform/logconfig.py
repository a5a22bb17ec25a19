"""Structured JSON logs: every line carries the request id and session id in context."""

from __future__ import annotations

import logging

import structlog

# The thread the embedded default runs its periodic work on (voiceplatform.periodic).
PERIODIC_THREAD = "periodic"

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # The one field a stdlib record is given here (ServingLine's url).
    structlog.stdlib.ExtraAdder(allow=("url",)),
]


def json_formatter() -> logging.Formatter:
    """The formatter for stdlib and structlog records alike."""
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        foreign_pre_chain=_SHARED,
    )


class ServingLine(logging.Filter):
    """On daphne.server: of daphne's start-up lines, only the address it listens on, as
    one `serving` line with the URL (warnings and errors pass as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.msg != "Listening on TCP address %s:%s" or len(record.args or ()) != 2:
            return False
        host, port = record.args
        host = f"[{host}]" if ":" in str(host) else host
        record.msg, record.args = "serving", ()
        record.url = f"http://{host}:{port}/"
        return True


class QuietPeriodicRuns(logging.Filter):
    """On celery.app.trace: no INFO line per task run on the embedded default's periodic
    thread ("Task ... succeeded" every 30 s); voiceplatform.periodic says what a run did,
    and failures still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.threadName != PERIODIC_THREAD


structlog.configure(
    processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)
