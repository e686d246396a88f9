"""The store's queries for the operations console (and the CLI commands that share them).

``ConsoleQueries`` is mixed into ``Store``: each method below is a ``Store`` method, on SQLite
and PostgreSQL alike (migration ``0008_console_data`` made their tables and indexes).

API::

    Store.evidence_inputs(crane, finding_id) -> dict[str, RecordedInput]
        capture path as the evidence names it -> where it was recorded (path, absolute
        location, sha256, size) by the newest run that recorded the finding and read it
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cranewatch.store.dialect import Connection


@dataclass(frozen=True, slots=True)
class RecordedInput:
    """An input file as a run recorded it: the path it was given as, where that was on disk
    (None for a run recorded before locations were kept), its sha256 and size."""

    run_id: int
    path: str
    location: str | None
    sha256: str
    size: int


class ConsoleQueries:
    """The console's reads and writes; a mixin of ``Store`` (which gives ``_read``/``_write``)."""

    if TYPE_CHECKING:
        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

    def evidence_inputs(self, crane: str, finding_id: str) -> dict[str, RecordedInput]:
        """Input path -> its record by the newest run that both recorded ``finding_id`` and read it."""
        with self._read() as db:
            rows = db.execute(
                "SELECT i.run_id, i.path, i.location, i.sha256, i.size FROM run_inputs i"
                " JOIN run_findings l ON l.run_id=i.run_id WHERE l.crane=? AND l.finding_id=?"
                " ORDER BY i.run_id",
                (crane, finding_id),
            ).fetchall()
        return {r["path"]: RecordedInput(int(r["run_id"]), r["path"], r["location"], r["sha256"], int(r["size"]))
                for r in rows}
