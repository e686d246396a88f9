"""The store's schema as named migrations, applied in order, each in one transaction.

A migration is never edited once released: a schema change is a new migration appended to
``MIGRATIONS``. ``schema_migrations`` records which ran and when, so an old database is
brought up to date by running only the ones it lacks.

The same list serves SQLite and PostgreSQL: statements are written in SQLite's DDL and
``cranewatch.store.dialect.statements_for`` gives PostgreSQL its form (a migration whose SQL
cannot be translated word for word states its PostgreSQL statements in ``postgres``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: a stable name and the SQL statements that make it."""

    name: str
    statements: tuple[str, ...]
    postgres: tuple[str, ...] | None = None  # only when the SQLite DDL does not translate


# the table that records the others; made before the first migration runs
SCHEMA_MIGRATIONS_TABLE = Migration(
    "schema_migrations",
    ("CREATE TABLE IF NOT EXISTS schema_migrations ("
     "seq INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, applied_at REAL NOT NULL)",),
)


USER_ROLES = ("viewer", "analyst", "officer", "admin")
AUDIT_ACTIONS = ("disposition", "reopen", "supersede", "re-record", "note", "assign")
_AUDIT_ACTIONS = ", ".join(f"'{a}'" for a in AUDIT_ACTIONS)
_ROLES = ", ".join(f"'{r}'" for r in USER_ROLES)

_CONSOLE_TABLES = (
    f"""CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ({_ROLES})),
        password TEXT NOT NULL,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        changed_at REAL
    )""",
    """CREATE TABLE sessions (
        token_sha256 TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        client TEXT
    )""",
    "CREATE INDEX sessions_user ON sessions(user_name)",
    # the console counts a crane's incidents by severity and pages them worst first, newest first
    "CREATE INDEX incidents_console ON incidents(crane, severity, last_seen, id)",
)

_AUDIT_EVENTS = f"""CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    crane TEXT NOT NULL,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ({_AUDIT_ACTIONS})),
    subject TEXT NOT NULL,
    why TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{{}}'
)"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_fleet",
        (
            """CREATE TABLE cranes (
                name TEXT PRIMARY KEY,
                maker TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL DEFAULT '',
                commissioned TEXT,
                control_vendor TEXT NOT NULL DEFAULT '',
                profile_path TEXT,
                zone TEXT,
                state TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            """CREATE TABLE crane_components (
                crane TEXT NOT NULL REFERENCES cranes(name) ON DELETE CASCADE,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                mac TEXT,
                ip TEXT,
                firmware TEXT,
                PRIMARY KEY (crane, name)
            )""",
            """CREATE TABLE crane_history (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                crane TEXT NOT NULL REFERENCES cranes(name) ON DELETE CASCADE,
                at REAL NOT NULL,
                who TEXT NOT NULL,
                why TEXT NOT NULL,
                from_state TEXT,
                to_state TEXT NOT NULL
            )""",
            "CREATE INDEX crane_history_crane ON crane_history(crane, seq)",
        ),
    ),
    Migration(
        "0002_runs_findings",
        (
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                crane TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('analyze', 'scan-image', 'gate')),
                component TEXT,
                tool_version TEXT NOT NULL,
                started_at REAL NOT NULL,
                finished_at REAL,
                status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
                note TEXT
            )""",
            "CREATE INDEX runs_crane ON runs(crane, kind, status)",
            """CREATE TABLE run_inputs (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                path TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                size INTEGER NOT NULL,
                PRIMARY KEY (run_id, path)
            )""",
            """CREATE TABLE findings (
                crane TEXT NOT NULL,
                id TEXT NOT NULL,
                rule TEXT NOT NULL,
                category TEXT NOT NULL,
                severity TEXT NOT NULL,
                title TEXT NOT NULL,
                first_seen REAL,
                last_seen REAL,
                count INTEGER NOT NULL,
                src TEXT,
                dst TEXT,
                technique TEXT NOT NULL,
                evidence TEXT NOT NULL,
                remedy TEXT NOT NULL,
                PRIMARY KEY (crane, id)
            )""",
            """CREATE TABLE run_findings (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                crane TEXT NOT NULL,
                finding_id TEXT NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (run_id, finding_id)
            )""",
        ),
    ),
    Migration(
        "0003_gate_artifacts",
        (
            """CREATE TABLE run_artifacts (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                content TEXT NOT NULL,
                PRIMARY KEY (run_id, name)
            )""",
            """CREATE TABLE gate_decisions (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                crane TEXT NOT NULL,
                run_id INTEGER REFERENCES runs(id),
                at REAL NOT NULL,
                who TEXT NOT NULL,
                decision TEXT NOT NULL CHECK (decision IN ('cleared', 'rejected', 'needs-review')),
                reasons TEXT NOT NULL,
                policy TEXT NOT NULL
            )""",
            "CREATE INDEX gate_decisions_crane ON gate_decisions(crane, seq)",
        ),
    ),
    Migration(
        "0004_rulesets",
        (
            """CREATE TABLE rulesets (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                crane TEXT NOT NULL,
                purpose TEXT NOT NULL CHECK (purpose IN ('quarantine', 'in-service')),
                at REAL NOT NULL,
                who TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                text TEXT NOT NULL
            )""",
            "CREATE INDEX rulesets_crane ON rulesets(crane, seq)",
        ),
    ),
    # Evidence accumulates: a run says what it was recorded from (fingerprint over its inputs'
    # sha256 and options, so the same input recorded again replaces it), who recorded it and
    # whether a person superseded it; a finding's state changes only by a recorded disposition;
    # every disposition, supersede, re-recording and reopening is an audit event of the crane.
    Migration(
        "0005_evidence_triage",
        (
            "ALTER TABLE runs ADD COLUMN fingerprint TEXT",
            "ALTER TABLE runs ADD COLUMN options TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE runs ADD COLUMN recorded_by TEXT",
            "ALTER TABLE runs ADD COLUMN recordings INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE runs ADD COLUMN superseded_at REAL",
            "ALTER TABLE runs ADD COLUMN superseded_by TEXT",
            "ALTER TABLE runs ADD COLUMN superseded_reason TEXT",
            "CREATE INDEX runs_fingerprint ON runs(crane, fingerprint)",
            "CREATE INDEX run_findings_finding ON run_findings(crane, finding_id)",
            """CREATE TABLE finding_dispositions (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                crane TEXT NOT NULL,
                finding_id TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN
                    ('open', 'acknowledged', 'false-positive', 'accepted-risk', 'remediated')),
                at REAL NOT NULL,
                who TEXT NOT NULL,
                why TEXT NOT NULL,
                until REAL,
                evidence_run INTEGER REFERENCES runs(id),
                CHECK (state != 'accepted-risk' OR until IS NOT NULL),
                CHECK (state != 'remediated' OR evidence_run IS NOT NULL)
            )""",
            "CREATE INDEX finding_dispositions_finding ON finding_dispositions(crane, finding_id, seq)",
            """CREATE TABLE audit_events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                crane TEXT NOT NULL,
                at REAL NOT NULL,
                who TEXT NOT NULL,
                action TEXT NOT NULL CHECK (action IN ('disposition', 'reopen', 'supersede', 're-record')),
                subject TEXT NOT NULL,
                why TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX audit_events_crane ON audit_events(crane, seq)",
        ),
    ),
    # Incidents (cranewatch.incidents): the findings of one cause, keyed like findings by
    # (crane, id) with the whole record as JSON; each run links the incidents it made.
    Migration(
        "0006_incidents",
        (
            """CREATE TABLE incidents (
                crane TEXT NOT NULL,
                id TEXT NOT NULL,
                severity TEXT NOT NULL,
                title TEXT NOT NULL,
                first_seen REAL,
                last_seen REAL,
                record TEXT NOT NULL,
                PRIMARY KEY (crane, id)
            )""",
            """CREATE TABLE run_incidents (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                crane TEXT NOT NULL,
                incident_id TEXT NOT NULL,
                PRIMARY KEY (run_id, incident_id)
            )""",
            "CREATE INDEX run_incidents_incident ON run_incidents(crane, incident_id)",
        ),
    ),
    # The operations console (``cranewatch serve``): its users (a role each; the password only as
    # a scrypt hash, see cranewatch.web.auth) and their server-side sessions (the cookie's token
    # only as its sha256, so a copy of the store cannot be used to take over a session); and
    # two more audit actions, a note on a finding and its assignment to a person.
    Migration(
        "0007_console",
        (
            *_CONSOLE_TABLES,
            # SQLite cannot change a CHECK in place: the audit table is copied into a new one
            _AUDIT_EVENTS.replace("CREATE TABLE audit_events", "CREATE TABLE audit_events_0007"),
            "INSERT INTO audit_events_0007(seq, crane, at, who, action, subject, why, detail)"
            " SELECT seq, crane, at, who, action, subject, why, detail FROM audit_events",
            "DROP TABLE audit_events",
            "ALTER TABLE audit_events_0007 RENAME TO audit_events",
            "CREATE INDEX audit_events_crane ON audit_events(crane, seq)",
        ),
        postgres=(
            *(s.replace("REAL", "DOUBLE PRECISION") for s in _CONSOLE_TABLES),
            "ALTER TABLE audit_events DROP CONSTRAINT audit_events_action_check",
            f"ALTER TABLE audit_events ADD CONSTRAINT audit_events_action_check CHECK (action IN ({_AUDIT_ACTIONS}))",
        ),
    ),
    # The console's data (cranewatch.store.console): where each input was on disk when recorded
    # (an evidence pcap is cut from it), a finding's state and source kept on its row (set with
    # every disposition, so tens of thousands filter and sort by index), the hosts and
    # conversations each traffic run saw, and the latest heartbeat of each monitoring sensor.
    Migration(
        "0008_console_data",
        (
            "ALTER TABLE run_inputs ADD COLUMN location TEXT",
            "ALTER TABLE findings ADD COLUMN state TEXT NOT NULL DEFAULT 'open'",
            "ALTER TABLE findings ADD COLUMN state_until REAL",
            "ALTER TABLE findings ADD COLUMN source TEXT NOT NULL DEFAULT 'traffic'",
            # what the console's text search reads: title, rule, category, id, src, dst in lower case
            "ALTER TABLE findings ADD COLUMN search TEXT NOT NULL DEFAULT ''",
            "UPDATE findings SET search=lower(title || '\n' || rule || '\n' || category || '\n' || id || '\n'"
            " || coalesce(src, '') || '\n' || coalesce(dst, ''))",
            """UPDATE findings SET
                state=coalesce((SELECT d.state FROM finding_dispositions d WHERE d.crane=findings.crane
                                AND d.finding_id=findings.id ORDER BY d.seq DESC LIMIT 1), 'open'),
                state_until=(SELECT d.until FROM finding_dispositions d WHERE d.crane=findings.crane
                             AND d.finding_id=findings.id ORDER BY d.seq DESC LIMIT 1)""",
            """UPDATE findings SET source=CASE
                WHEN EXISTS (SELECT 1 FROM run_findings l JOIN runs r ON r.id=l.run_id WHERE l.crane=findings.crane
                             AND l.finding_id=findings.id AND r.kind='scan-image') THEN 'image'
                WHEN EXISTS (SELECT 1 FROM run_findings l JOIN runs r ON r.id=l.run_id WHERE l.crane=findings.crane
                             AND l.finding_id=findings.id AND r.component LIKE 'monitor:%') THEN 'monitor'
                WHEN rule LIKE 'process-%' THEN 'process'
                ELSE 'traffic' END""",
            # covering what the console filters and sorts by: a page and its total are read from
            # the index, never from the rows with their evidence (text and host search scan rows)
            "CREATE INDEX findings_console ON findings(crane, last_seen, id, severity, category, state,"
            " state_until, source, rule)",
            """CREATE TABLE run_hosts (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                crane TEXT NOT NULL,
                mac TEXT,
                ip TEXT,
                first_seen REAL,
                last_seen REAL,
                packets INTEGER NOT NULL,
                bytes INTEGER NOT NULL
            )""",
            "CREATE INDEX run_hosts_crane ON run_hosts(crane, run_id)",
            """CREATE TABLE run_conversations (
                run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                crane TEXT NOT NULL,
                client TEXT NOT NULL,
                server TEXT NOT NULL,
                transport TEXT NOT NULL,
                server_port INTEGER NOT NULL,
                protocol TEXT NOT NULL,
                flows INTEGER NOT NULL,
                packets INTEGER NOT NULL,
                bytes INTEGER NOT NULL,
                first_seen REAL,
                last_seen REAL
            )""",
            "CREATE INDEX run_conversations_crane ON run_conversations(crane, run_id)",
            """CREATE TABLE monitor_heartbeats (
                crane TEXT NOT NULL,
                sensor TEXT NOT NULL,
                at REAL NOT NULL,
                started_at REAL NOT NULL,
                last_packet REAL,
                packets INTEGER NOT NULL,
                findings_24h INTEGER NOT NULL,
                every REAL NOT NULL,
                stopped INTEGER NOT NULL DEFAULT 0,
                beats INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (crane, sensor)
            )""",
        ),
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
