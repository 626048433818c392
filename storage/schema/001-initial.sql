-- 001-initial.sql - Parley's first schema: users, SCRAM credentials and the
-- IM tables of the session manager, plus the three roles.
--
-- Applied by storage_migrate (storage/migrate.c) inside one transaction, as
-- a role that may create roles (the cluster's superuser on first install).
-- Must not contain BEGIN/COMMIT. Every JID column holds a prepped bare JID.
-- Objects are created as parley_admin (SET LOCAL ROLE below), so it owns
-- the schema whoever runs the migration. Later migrations start with the
-- same SET LOCAL ROLE.

-- Roles: created NOLOGIN if missing; parleyctl gives them LOGIN and a
-- password. Least privilege: each daemon gets only its own role.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'parley_admin') THEN
        CREATE ROLE parley_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'parley_c2s') THEN
        CREATE ROLE parley_c2s NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'parley_sm') THEN
        CREATE ROLE parley_sm NOLOGIN;
    END IF;
    -- PostgreSQL 15 no longer lets every role create in public.
    IF NOT has_schema_privilege('parley_admin', 'public', 'CREATE') THEN
        GRANT CREATE, USAGE ON SCHEMA public TO parley_admin;
    END IF;
    IF NOT has_schema_privilege('parley_c2s', 'public', 'USAGE') THEN
        GRANT USAGE ON SCHEMA public TO parley_c2s;
    END IF;
    IF NOT has_schema_privilege('parley_sm', 'public', 'USAGE') THEN
        GRANT USAGE ON SCHEMA public TO parley_sm;
    END IF;
END
$roles$;

-- The version table was made by storage_migrate as the connecting role.
ALTER TABLE parley_schema OWNER TO parley_admin;
SET LOCAL ROLE parley_admin;

CREATE TABLE users (
    jid text PRIMARY KEY,
    domain text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_domain ON users (domain);

-- SCRAM salted keys only (RFC 5802/7677); never a password.
CREATE TABLE credentials (
    jid text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    mechanism text NOT NULL CHECK (mechanism IN ('SCRAM-SHA-1', 'SCRAM-SHA-256')),
    salt bytea NOT NULL,
    iterations int NOT NULL CHECK (iterations > 0),
    stored_key bytea NOT NULL,
    server_key bytea NOT NULL,
    PRIMARY KEY (jid, mechanism)
);

CREATE TABLE roster_items (
    owner text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    jid text NOT NULL,
    name text,
    subscription text NOT NULL DEFAULT 'none'
        CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask text CHECK (ask IS NULL OR ask = 'subscribe'),
    approved boolean NOT NULL DEFAULT false,
    PRIMARY KEY (owner, jid)
);

CREATE TABLE roster_groups (
    owner text NOT NULL,
    jid text NOT NULL,
    grp text NOT NULL,
    PRIMARY KEY (owner, jid, grp),
    FOREIGN KEY (owner, jid) REFERENCES roster_items (owner, jid) ON DELETE CASCADE
);

-- XEP-0237 roster versioning: bumped by every change to the owner's roster.
CREATE TABLE roster_version (
    owner text PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    version bigint NOT NULL DEFAULT 0
);

CREATE TABLE offline (
    seq bigserial PRIMARY KEY,
    owner text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    stamp timestamptz NOT NULL DEFAULT now(),
    stanza text NOT NULL
);
CREATE INDEX offline_owner_seq ON offline (owner, seq);

CREATE TABLE vcards (
    owner text PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    vcard text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- XEP-0049 private XML storage, one fragment per namespace.
CREATE TABLE private_xml (
    owner text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    ns text NOT NULL,
    xml text NOT NULL,
    PRIMARY KEY (owner, ns)
);

CREATE TABLE blocklist (
    owner text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    jid text NOT NULL,
    PRIMARY KEY (owner, jid)
);

CREATE TABLE last_activity (
    owner text PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    stamp timestamptz NOT NULL,
    status text
);

-- For XEP-0313 (MAM) later: queried by owner and time, optionally by peer.
CREATE TABLE archive (
    id bigserial PRIMARY KEY,
    owner text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    stanza_id text NOT NULL,
    with_jid text NOT NULL,
    stamp timestamptz NOT NULL,
    stanza text NOT NULL,
    UNIQUE (owner, stanza_id)
);
CREATE INDEX archive_owner_stamp ON archive (owner, stamp);
CREATE INDEX archive_owner_with_stamp ON archive (owner, with_jid, stamp);

-- Grants: nothing beyond what each daemon needs (parley_schema: none).
GRANT SELECT, INSERT ON users, credentials TO parley_c2s;
GRANT SELECT ON users TO parley_sm;
GRANT SELECT, INSERT, UPDATE, DELETE ON roster_items, roster_groups, roster_version, offline,
    vcards, private_xml, blocklist, last_activity, archive TO parley_sm;
GRANT USAGE ON SEQUENCE offline_seq_seq, archive_id_seq TO parley_sm;
