-- cranewatch: the group roles each part of a port's deployment logs in through, least privilege.
-- Run as the database owner (the role whose first command created cranewatch's tables), after
-- that first command and again after an upgrade that adds tables; it can be run any number of
-- times. Login roles are then made members, e.g.
--   CREATE ROLE sensor_sts07 LOGIN PASSWORD '...' IN ROLE cranewatch_sensor;
--   CREATE ROLE console LOGIN PASSWORD '...' IN ROLE cranewatch_console;
--
--   cranewatch_viewer   reads the store (reports, read-only tools); no password hashes
--   cranewatch_sensor   records runs, findings, incidents, hosts, conversations, heartbeats;
--                       may record only cranewatch's own reopenings, never a person's disposition
--   cranewatch_console  reads; triage and dispositions, gate decisions, life-cycle moves,
--                       rulesets, the console's users and sessions

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cranewatch_viewer') THEN
        CREATE ROLE cranewatch_viewer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cranewatch_sensor') THEN
        CREATE ROLE cranewatch_sensor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cranewatch_console') THEN
        CREATE ROLE cranewatch_console NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM cranewatch_viewer, cranewatch_sensor, cranewatch_console;
GRANT USAGE ON SCHEMA public TO cranewatch_viewer, cranewatch_sensor, cranewatch_console;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cranewatch_viewer, cranewatch_sensor, cranewatch_console;
-- password hashes and session digests: the console's alone
REVOKE SELECT ON users, sessions FROM cranewatch_viewer, cranewatch_sensor;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO cranewatch_sensor, cranewatch_console;

-- a sensor and the analysis station record runs (a run recorded again replaces the earlier one)
GRANT INSERT, UPDATE, DELETE ON runs, run_inputs, run_findings, run_artifacts, run_incidents,
    run_hosts, run_conversations TO cranewatch_sensor;
GRANT INSERT, UPDATE ON findings, incidents, monitor_heartbeats TO cranewatch_sensor;
GRANT INSERT ON finding_dispositions, audit_events TO cranewatch_sensor;

-- the console: triage, dispositions, gate sign-off, life cycle, rulesets, its users
GRANT INSERT ON finding_dispositions, audit_events, gate_decisions, crane_history, rulesets
    TO cranewatch_console;
GRANT UPDATE ON findings, cranes, runs TO cranewatch_console;
GRANT INSERT, UPDATE, DELETE ON users, sessions TO cranewatch_console;

-- Row-level security: what a sensor may write into the evidence's history. A finding seen
-- again after it was remediated is reopened by cranewatch itself (who 'cranewatch', state
-- 'open'); nothing else. The owner is not bound by these policies (it migrates).
ALTER TABLE finding_dispositions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS cw_read ON finding_dispositions;
DROP POLICY IF EXISTS cw_console ON finding_dispositions;
DROP POLICY IF EXISTS cw_sensor_reopen ON finding_dispositions;
CREATE POLICY cw_read ON finding_dispositions FOR SELECT USING (true);
CREATE POLICY cw_console ON finding_dispositions FOR INSERT TO cranewatch_console WITH CHECK (true);
CREATE POLICY cw_sensor_reopen ON finding_dispositions FOR INSERT TO cranewatch_sensor
    WITH CHECK (state = 'open' AND who = 'cranewatch');

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS cw_read ON audit_events;
DROP POLICY IF EXISTS cw_console ON audit_events;
DROP POLICY IF EXISTS cw_sensor ON audit_events;
CREATE POLICY cw_read ON audit_events FOR SELECT USING (true);
CREATE POLICY cw_console ON audit_events FOR INSERT TO cranewatch_console WITH CHECK (true);
CREATE POLICY cw_sensor ON audit_events FOR INSERT TO cranewatch_sensor
    WITH CHECK (action IN ('reopen', 're-record'));
