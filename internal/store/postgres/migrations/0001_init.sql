-- 0001: the whole schema as the SQLite store has it after its 0005, in one
-- step, since PostgreSQL starts here.
--
-- Times are BIGINT unix nanoseconds in UTC, as in the SQLite store, so the
-- two keep every bit of a Go time alike and compare as numbers; NULL is
-- Go's zero time.

CREATE TABLE sessions (
	id          TEXT PRIMARY KEY,
	owner       TEXT NOT NULL,
	profile     TEXT NOT NULL,
	state       TEXT NOT NULL,
	reason      TEXT NOT NULL,
	persistent  BOOLEAN NOT NULL,
	cpus        INTEGER NOT NULL,
	memory_mb   BIGINT NOT NULL,
	lifetime    BIGINT NOT NULL, -- nanoseconds
	created     BIGINT NOT NULL,
	started     BIGINT,
	ended       BIGINT,
	last_seen   BIGINT,
	backend     TEXT NOT NULL,
	backend_ref TEXT NOT NULL,
	node        TEXT NOT NULL,
	endpoints   TEXT,             -- JSON object, connector name → address; NULL when none
	tls_sha256  TEXT NOT NULL
);

-- ListSessions is newest first by owner, by state or unfiltered; each
-- index ends in that order so a first page needs no sort.
CREATE INDEX sessions_owner_created ON sessions (owner, created DESC, id DESC);
CREATE INDEX sessions_state_created ON sessions (state, created DESC, id DESC);
CREATE INDEX sessions_created ON sessions (created DESC, id DESC);
-- CountActive runs on every launch; active sessions stay few while ended
-- ones pile up, so it reads this small partial index.
CREATE INDEX sessions_active_owner ON sessions (owner) WHERE state <> 'ended';

CREATE TABLE users (
	name        TEXT PRIMARY KEY,
	admin       BOOLEAN NOT NULL,
	created     BIGINT NOT NULL,
	method      TEXT NOT NULL DEFAULT '',
	user_groups TEXT NOT NULL DEFAULT '',  -- one per line, sorted
	email       TEXT NOT NULL DEFAULT ''
);

CREATE TABLE tokens (
	id        TEXT PRIMARY KEY,
	username  TEXT NOT NULL REFERENCES users (name),
	name      TEXT NOT NULL,
	created   BIGINT NOT NULL,
	last_used BIGINT,
	revoked   BOOLEAN NOT NULL,
	hash      BYTEA NOT NULL UNIQUE -- SHA-256 of the secret
);

CREATE INDEX tokens_user ON tokens (username, created DESC, id DESC);

CREATE TABLE shares (
	id         TEXT PRIMARY KEY,
	session_id TEXT NOT NULL REFERENCES sessions (id),
	mode       TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created    BIGINT NOT NULL,
	expires    BIGINT,
	revoked    BOOLEAN NOT NULL,
	hash       BYTEA NOT NULL UNIQUE
);

CREATE INDEX shares_session ON shares (session_id, created DESC, id DESC);

-- id orders events that share a timestamp in the order they were appended.
CREATE TABLE audit (
	id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time        BIGINT NOT NULL,
	actor       TEXT NOT NULL,
	action      TEXT NOT NULL,
	session_id  TEXT NOT NULL,
	remote_addr TEXT NOT NULL,
	detail      TEXT NOT NULL
);

CREATE INDEX audit_time ON audit (time DESC, id DESC);
CREATE INDEX audit_actor ON audit (actor, time DESC, id DESC);
CREATE INDEX audit_session ON audit (session_id, time DESC, id DESC);

-- The audit log is evidence: the store has no API to change it, and this
-- trigger refuses a change from a psql shell or a buggy migration short
-- of dropping it. TRUNCATE is refused too: it fires no row trigger.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit log is append-only';
END;
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
	FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
	FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE logins (
	id       TEXT PRIMARY KEY,
	username TEXT NOT NULL REFERENCES users (name),
	created  BIGINT NOT NULL,
	expires  BIGINT NOT NULL,
	hash     BYTEA NOT NULL UNIQUE,
	provider TEXT NOT NULL DEFAULT '',
	id_token TEXT NOT NULL DEFAULT ''
);

CREATE INDEX logins_user ON logins (username);
CREATE INDEX logins_expires ON logins (expires);

CREATE TABLE terms (
	username TEXT NOT NULL,
	profile  TEXT NOT NULL,
	hash     TEXT NOT NULL,
	accepted BIGINT NOT NULL,
	PRIMARY KEY (username, profile)
);

CREATE TABLE totp (
	username   TEXT PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
	secret     BYTEA NOT NULL,
	last_step  BIGINT NOT NULL,
	created    BIGINT NOT NULL,
	failures   INTEGER NOT NULL DEFAULT 0,
	fail_since BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE totp_recovery (
	username TEXT NOT NULL REFERENCES totp (username) ON DELETE CASCADE,
	hash     BYTEA NOT NULL,
	PRIMARY KEY (username, hash)
);

CREATE TABLE pending_logins (
	hash     BYTEA PRIMARY KEY,
	username TEXT NOT NULL,
	admin    BOOLEAN NOT NULL,
	method   TEXT NOT NULL,
	groups   TEXT NOT NULL, -- JSON array
	email    TEXT NOT NULL,
	created  BIGINT NOT NULL,
	expires  BIGINT NOT NULL
);

-- What every gateway must hold alike (the master key, the RDP CAs, a
-- self-signed certificate): the first gateway stores its own, the others
-- take it. Whoever can read this table can forge tickets and cookies: the
-- database's credentials are as secret as the master key.
CREATE TABLE secrets (
	name  TEXT PRIMARY KEY,
	value BYTEA NOT NULL
);

-- Single-use things spent at one gateway, refused at every other (a
-- browser RDP ticket's nonce), until they expire.
CREATE TABLE spent (
	key     TEXT PRIMARY KEY,
	expires BIGINT NOT NULL
);
CREATE INDEX spent_expires ON spent (expires);

-- Failed-login buckets every gateway counts against (auth/ratelimit's
-- Shared): tat is the GCRA theoretical arrival time, unix nanoseconds.
CREATE TABLE login_buckets (
	key TEXT PRIMARY KEY,
	tat BIGINT NOT NULL
);
CREATE INDEX login_buckets_tat ON login_buckets (tat);

-- One-time things handed from the gateway that made them to whichever
-- gateway they come back to (e-mailed login links), bound to a browser.
CREATE TABLE handoffs (
	key     BYTEA PRIMARY KEY, -- SHA-256 of the secret
	bind    BYTEA NOT NULL,    -- SHA-256 of the asking browser's cookie
	value   BYTEA NOT NULL,
	expires BIGINT NOT NULL
);
CREATE INDEX handoffs_expires ON handoffs (expires);

-- Leases: which gateway runs a piece of background work (polling a
-- backend, expiring sessions) while several share this database. A
-- holder renews before expires; another may take it once it has passed.
CREATE TABLE leases (
	name    TEXT PRIMARY KEY,
	holder  TEXT NOT NULL,
	expires BIGINT NOT NULL
);
