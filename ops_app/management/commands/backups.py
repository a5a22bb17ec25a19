"""`manage.py backups push FILE... | prune | fetch-newest DIR | newest [--max-age-hours H]`:
the PostgreSQL dumps of deploy/scripts/backup-postgres.sh in the "backups" storage
(object storage with BACKUP_BUCKET, else BACKUP_DIR), pruned after BACKUP_RETENTION_DAYS.
The backup CronJob and compose's backup service push then prune; the restore drill
fetches the newest; compose's health check asks for the newest.

A dump is named voiceplatform-<UTC time>.dump (its row counts beside it, .counts), so
names sort by age and pruning reads the time from the name, not from the storage."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

NAME = re.compile(r"^voiceplatform-(\d{8}T\d{6}Z)\.(dump|counts)$")


def _taken_at(name: str) -> datetime | None:
    match = NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _names() -> list[str]:
    storage = storages["backups"]
    try:
        _dirs, files = storage.listdir("")
    except FileNotFoundError:
        return []
    return sorted(name for name in files if NAME.match(name))


class Command(BaseCommand):
    help = "PostgreSQL dumps in object storage: push, prune, fetch-newest."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        push = actions.add_parser("push", help="store dumps (and their .counts)")
        push.add_argument("files", nargs="+")
        actions.add_parser("prune", help="delete dumps older than BACKUP_RETENTION_DAYS")
        fetch = actions.add_parser("fetch-newest", help="copy the newest dump into DIR")
        fetch.add_argument("directory")
        newest = actions.add_parser("newest", help="name the newest dump (a health check)")
        newest.add_argument("--max-age-hours", type=float, default=None)

    def handle(self, *args, action: str, **options):
        getattr(self, f"_{action.replace('-', '_')}")(**options)

    def _push(self, files: list[str], **options) -> None:
        storage = storages["backups"]
        for path in map(Path, files):
            if not NAME.match(path.name):
                raise CommandError(f"{path.name}: not a dump of backup-postgres.sh")
            if storage.exists(path.name):
                storage.delete(path.name)
            with path.open("rb") as content:
                storage.save(path.name, File(content))
            self.stdout.write(f"stored {path.name}")

    def _prune(self, **options) -> None:
        storage = storages["backups"]
        cutoff = timezone.now() - timedelta(days=settings.BACKUP_RETENTION_DAYS)
        names = _names()
        dumps = [name for name in names if name.endswith(".dump")]
        # The newest dump is kept whatever its age: pruning never leaves none.
        newest = dumps[-1].removesuffix(".dump") if dumps else None
        for name in names:
            if name.rsplit(".", 1)[0] != newest and _taken_at(name) < cutoff:
                storage.delete(name)
                self.stdout.write(f"deleted {name}")

    def _newest(self, max_age_hours: float | None, **options) -> None:
        dumps = [name for name in _names() if name.endswith(".dump")]
        if not dumps:
            raise CommandError("no dump in the backups storage")
        age = timezone.now() - _taken_at(dumps[-1])
        if max_age_hours is not None and age > timedelta(hours=max_age_hours):
            raise CommandError(f"the newest dump, {dumps[-1]}, is {age} old")
        self.stdout.write(dumps[-1])

    def _fetch_newest(self, directory: str, **options) -> None:
        storage = storages["backups"]
        dumps = [name for name in _names() if name.endswith(".dump")]
        if not dumps:
            raise CommandError("no dump in the backups storage")
        newest = dumps[-1]
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for name in (newest, newest.removesuffix(".dump") + ".counts"):
            if not storage.exists(name):
                continue
            with storage.open(name, "rb") as source, (target / name).open("wb") as copy:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    copy.write(chunk)
        self.stdout.write(str(target / newest))
