-- The application's own tables: alerts and users (written by Deep Eyes, not by ingestd).

-- An enum sorts by declaration order, so `ORDER BY severity DESC` puts CRITICAL first.
CREATE TYPE alert_severity AS ENUM ('INFO', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL');

CREATE TABLE alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- null for alerts about no single application (ingestd itself, the database)
    applicationId text REFERENCES applications (id) ON DELETE CASCADE,
    name text NOT NULL,
    message text NOT NULL DEFAULT '',
    severity alert_severity NOT NULL,
    status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (status IN ('ACTIVE', 'ACKNOWLEDGED', 'RESOLVED')),
    createdAt timestamptz NOT NULL DEFAULT now(),
    updatedAt timestamptz NOT NULL DEFAULT now(),
    resolvedAt timestamptz,
    CONSTRAINT alerts_resolvedat_only_when_resolved
        CHECK (resolvedAt IS NULL OR status = 'RESOLVED')
);
-- Serves `WHERE status = 'ACTIVE' ORDER BY severity DESC, createdAt DESC` from the index alone.
CREATE INDEX alerts_status_severity_idx ON alerts (status, severity DESC, createdAt DESC);
CREATE INDEX alerts_applicationid_idx ON alerts (applicationId, createdAt DESC);
CREATE TRIGGER alerts_touch_updated_at BEFORE UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION ingestd.touch_updated_at();

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (email LIKE '%_@_%'),
    name text NOT NULL,
    role text NOT NULL DEFAULT 'viewer' CHECK (role <> ''),
    -- A password hash in modular crypt format ($argon2id$..., $2b$... for bcrypt), or null for
    -- users who sign in elsewhere (SSO). Never a plain password: the check refuses anything
    -- that does not look like a crypt string.
    passwordHash text CHECK (passwordHash ~ '^\$[a-z0-9-]+\$.{20,}$'),
    createdAt timestamptz NOT NULL DEFAULT now(),
    updatedAt timestamptz NOT NULL DEFAULT now()
);
-- Unique regardless of case: Alice@x.org and alice@x.org are one person.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION ingestd.touch_updated_at();
