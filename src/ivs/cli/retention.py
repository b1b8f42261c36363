"""`ivs hub prune`, and the retention options `ivs hub serve` shares with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ivs.cli.app import fail, hub_app
from ivs.errors import IvsError

KEEP_MESSAGES = "Delete raw messages (events, frame records) older than this many days."
KEEP_ROLLUPS = "Delete hourly count rollups older than this many days (at least --keep-messages-days)."
KEEP_AUDIT = "Delete audit log entries older than this many days."
MAX_MESSAGES = "Keep at most this many raw messages: the oldest beyond it are deleted."
KEEP_EVIDENCE = "Delete evidence (snapshots, clips) older than this many days (needs --evidence-dir)."
MAX_EVIDENCE = "Keep at most this many MB of evidence: the oldest beyond it are deleted (needs --evidence-dir)."


def evidence_retention(folder: Path | None, days: float | None, mb: float | None) -> Any:
    from ivs.hub.retention import EvidenceRetention

    if days is None and mb is None:
        return None
    if folder is None:
        raise fail("--keep-evidence-days/--max-evidence-mb without --evidence-dir: expected the folder too", 2)
    if (days is not None and days <= 0) or (mb is not None and mb <= 0):
        raise fail(f"--keep-evidence-days {days}, --max-evidence-mb {mb}: expected numbers > 0", 2)
    return EvidenceRetention(folder, days, mb)


def retention_of(messages: float | None, rollups: float | None, audit: float | None, most: int | None) -> Any:
    """The `Retention` of the --keep-* options; exits 2 saying what is wrong."""
    from ivs.hub.store import Retention

    try:
        return Retention(messages, rollups, audit, most)
    except ValueError as err:
        why = str(err)
        for field, option in (("messages_days", "--keep-messages-days"), ("rollups_days", "--keep-rollups-days"),
                              ("audit_days", "--keep-audit-days"), ("max_messages", "--max-messages")):  # fmt: skip
            why = why.replace(field, option)
        raise fail(why, 2) from None


@hub_app.command("prune")
def hub_prune(
    db: Annotated[str, typer.Option(help="SQLAlchemy URL of the hub's database.")] = "sqlite:///ivs-hub.db",
    keep_messages_days: Annotated[float | None, typer.Option(help=KEEP_MESSAGES)] = None,
    keep_rollups_days: Annotated[float | None, typer.Option(help=KEEP_ROLLUPS)] = None,
    keep_audit_days: Annotated[float | None, typer.Option(help=KEEP_AUDIT)] = None,
    max_messages: Annotated[int | None, typer.Option(help=MAX_MESSAGES)] = None,
    evidence_dir: Annotated[Path | None, typer.Option(help="The hub's evidence folder.")] = None,
    keep_evidence_days: Annotated[float | None, typer.Option(help=KEEP_EVIDENCE)] = None,
    max_evidence_mb: Annotated[float | None, typer.Option(help=MAX_EVIDENCE)] = None,
) -> None:
    """Apply retention once (from cron or a systemd timer; `ivs hub serve` takes the same options
    and does it every hour), and say what was deleted and how big the database is."""
    retention = retention_of(keep_messages_days, keep_rollups_days, keep_audit_days, max_messages)
    evidence = evidence_retention(evidence_dir, keep_evidence_days, max_evidence_mb)
    if not retention.active and evidence is None:
        raise fail("nothing to prune: expected --keep-messages-days, --keep-rollups-days, --keep-audit-days,"
                   " --max-messages, --keep-evidence-days or --max-evidence-mb", 2)  # fmt: skip
    from ivs.hub.store import Store

    try:
        store = Store(db)
    except IvsError as err:
        raise fail(str(err), 1) from None
    try:
        pruned = store.prune(retention)
        evidence_deleted = evidence.run(store) if evidence is not None else 0
        size, left = store.database_bytes(), store.message_count()
    finally:
        store.close()
    typer.echo(
        f"deleted {pruned.messages} messages, {pruned.rollups} rollup rows, {pruned.audit} audit entries,"
        f" {evidence_deleted} evidence files;"
        f" {left} messages left, {size / 2**20:.1f} MiB of data"
    )
