-- Registered applications and their ingest keys (docs/deep-eyes.md, "Ingest keys").
--
-- An application is registered when its row has registeredAt: Deep Eyes inserts it, or
-- `ingestd applications add`. Ingest never changes such a row (the writer's upsert skips
-- it); rows ingest derives from service.name keep registeredAt null.
ALTER TABLE applications ADD COLUMN registeredAt timestamptz;

-- One row per key. The key itself is a high-entropy token shown once when it is made; only
-- its SHA-256, as 64 lower-case hex characters, is stored. Deep Eyes creates one with:
--   INSERT INTO application_keys (applicationId, keyHash, prefix)
--   VALUES ('app-id', encode(sha256(convert_to('<token>', 'UTF8')), 'hex'), left('<token>', 12));
-- Revoking sets revokedAt (ingestd stops accepting the key within seconds); deleting the row
-- does the same.
CREATE TABLE application_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    applicationId text NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    keyHash text NOT NULL CHECK (keyHash ~ '^[0-9a-f]{64}$'),
    -- the token's first characters, to tell keys apart in lists (never enough to use it)
    prefix text NOT NULL DEFAULT '' CHECK (length(prefix) <= 12),
    name text NOT NULL DEFAULT '',
    createdAt timestamptz NOT NULL DEFAULT now(),
    revokedAt timestamptz
);
-- The lookup ingest makes for a key it has not seen recently.
CREATE UNIQUE INDEX application_keys_keyhash_key ON application_keys (keyHash);
CREATE INDEX application_keys_applicationid_idx ON application_keys (applicationId);

-- A key makes its application registered, so one INSERT of a key is enough even for an
-- application whose row ingest created.
CREATE FUNCTION ingestd.register_key_application() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.applications SET registeredAt = now()
    WHERE id = NEW.applicationId AND registeredAt IS NULL;
    RETURN NEW;
END;
$$;
CREATE TRIGGER application_keys_register AFTER INSERT ON application_keys
    FOR EACH ROW EXECUTE FUNCTION ingestd.register_key_application();
