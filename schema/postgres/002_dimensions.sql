-- Dimension tables the writer upserts in a batch's transaction the first time a process sees
-- an id (docs/design.md). Columns are fixed by that contract; identifiers are unquoted
-- camelCase, so PostgreSQL folds them to lower case.

CREATE TABLE resources (
    id bigint PRIMARY KEY,
    attributes jsonb,
    droppedAttributesCount integer,
    schemaUrl text,
    firstSeenAt timestamptz DEFAULT now()
);

CREATE TABLE scopes (
    id bigint PRIMARY KEY,
    name text,
    version text,
    attributes jsonb,
    droppedAttributesCount integer,
    schemaUrl text,
    firstSeenAt timestamptz DEFAULT now()
);

CREATE TABLE applications (
    id text PRIMARY KEY,
    name text,
    namespace text,
    environment text,
    createdAt timestamptz DEFAULT now(),
    lastSeenAt timestamptz DEFAULT now()
);

CREATE TABLE metric_descriptions (
    applicationId text,
    name text,
    type text,
    unit text,
    description text,
    updatedAt timestamptz DEFAULT now(),
    PRIMARY KEY (applicationId, name)
);
