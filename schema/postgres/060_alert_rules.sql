-- Alerts written by ingestd's alert rules (ingestd/alerts, docs/alerts.md) beside the ones
-- Deep Eyes writes itself. A row with rule IS NULL is Deep Eyes' own: ingestd never touches it.

ALTER TABLE alerts
    -- the rule's name; null for Deep Eyes' own alerts
    ADD COLUMN rule text,
    -- the alert's identifying labels (alertname, severity, rule labels, application, series)
    ADD COLUMN labels jsonb,
    -- 16 hex digits of SHA-256 over (rule, application, series attributes)
    ADD COLUMN fingerprint text,
    ADD CONSTRAINT alerts_rule_has_fingerprint CHECK ((rule IS NULL) = (fingerprint IS NULL));

-- At most one open (ACTIVE or ACKNOWLEDGED) row per rule, application and series, whatever
-- the evaluators do; NULLS NOT DISTINCT so alerts about no application (null) count too.
CREATE UNIQUE INDEX alerts_rule_open_key ON alerts (rule, applicationId, fingerprint)
    NULLS NOT DISTINCT
    WHERE rule IS NOT NULL AND status IN ('ACTIVE', 'ACKNOWLEDGED');

-- Pending and firing series, so a restart or a new leader neither re-fires nor forgets a
-- pending `for`. A series without a row here has no state.
CREATE TABLE ingestd.alert_states (
    rule text NOT NULL,
    fingerprint text NOT NULL,
    applicationId text,
    labels jsonb NOT NULL,
    phase text NOT NULL CHECK (phase IN ('pending', 'firing')),
    activeSince timestamptz NOT NULL,
    lastTrueAt timestamptz NOT NULL,
    firingSince timestamptz,
    -- first evaluation since a firing condition stopped holding (keep_firing_for_s runs)
    keepFiringSince timestamptz,
    value double precision,
    alertId uuid,
    PRIMARY KEY (rule, fingerprint)
);

-- When each rule was last evaluated (so a new leader keeps the schedule) and how it went.
CREATE TABLE ingestd.alert_rules (
    rule text PRIMARY KEY,
    -- null until the first evaluation that completed
    lastEvaluatedAt timestamptz,
    lastOutcome text NOT NULL,
    lastError text,
    lastMs integer NOT NULL DEFAULT 0,
    series integer NOT NULL DEFAULT 0
);

-- Notifications, written in the transaction of the state change they announce and delivered
-- afterwards (at least once, in id order per fingerprint and receiver).
CREATE TABLE ingestd.alert_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- fingerprint:transition:startsAt (epoch seconds): the same on every retry
    idempotencyKey text NOT NULL,
    receiver text NOT NULL,
    fingerprint text NOT NULL,
    payload jsonb NOT NULL,
    createdAt timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    nextAttemptAt timestamptz NOT NULL DEFAULT now(),
    lastError text,
    deliveredAt timestamptz,
    UNIQUE (idempotencyKey, receiver)
);
CREATE INDEX alert_outbox_undelivered_idx ON ingestd.alert_outbox (nextAttemptAt)
    WHERE deliveredAt IS NULL;
