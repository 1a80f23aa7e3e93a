-- 0001: the gateway's first schema.
--
-- Times are INTEGER unix nanoseconds in UTC; NULL is Go's zero time.
-- Booleans are INTEGER 0/1. Tables are STRICT so a wrong type from a bug
-- fails the statement instead of being stored and read back as something
-- else.

CREATE TABLE sessions (
	id          TEXT PRIMARY KEY,
	owner       TEXT NOT NULL,
	profile     TEXT NOT NULL,
	state       TEXT NOT NULL,
	reason      TEXT NOT NULL,
	persistent  INTEGER NOT NULL,
	cpus        INTEGER NOT NULL,
	memory_mb   INTEGER NOT NULL,
	lifetime    INTEGER NOT NULL, -- nanoseconds
	created     INTEGER NOT NULL,
	started     INTEGER,
	ended       INTEGER,
	last_seen   INTEGER,
	backend     TEXT NOT NULL,
	backend_ref TEXT NOT NULL,
	node        TEXT NOT NULL,
	endpoints   TEXT,             -- JSON object, connector name → address; NULL when none
	tls_sha256  TEXT NOT NULL
) STRICT;

-- ListSessions is newest first, by owner (a user's own list), by state (the
-- admin's "what is running") or unfiltered (the admin's first page); id
-- breaks ties so pages are stable. Each index ends in the sort order, so
-- the first page is read straight off the index with no sort.
CREATE INDEX sessions_owner_created ON sessions (owner, created DESC, id DESC);
CREATE INDEX sessions_state_created ON sessions (state, created DESC, id DESC);
CREATE INDEX sessions_created ON sessions (created DESC, id DESC);
-- CountActive runs on every launch to enforce limits. Ended sessions pile
-- up over the years while active ones stay few, so the count reads a
-- small partial index instead of the whole table.
CREATE INDEX sessions_active_owner ON sessions (owner) WHERE state <> 'ended';

CREATE TABLE users (
	name    TEXT PRIMARY KEY,
	admin   INTEGER NOT NULL,
	created INTEGER NOT NULL
) STRICT;

-- A token belongs to a user that exists; sessions and audit events do not
-- reference users, since an external identity provider may name users the
-- store has never seen.
CREATE TABLE tokens (
	id        TEXT PRIMARY KEY,
	username  TEXT NOT NULL REFERENCES users (name),
	name      TEXT NOT NULL,
	created   INTEGER NOT NULL,
	last_used INTEGER,
	revoked   INTEGER NOT NULL,
	hash      BLOB NOT NULL UNIQUE -- SHA-256 of the secret; the lookup key of every API call
) STRICT;

CREATE INDEX tokens_user ON tokens (username, created DESC, id DESC);

CREATE TABLE shares (
	id         TEXT PRIMARY KEY,
	session_id TEXT NOT NULL REFERENCES sessions (id),
	mode       TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created    INTEGER NOT NULL,
	expires    INTEGER,
	revoked    INTEGER NOT NULL,
	hash       BLOB NOT NULL UNIQUE
) STRICT;

CREATE INDEX shares_session ON shares (session_id, created DESC, id DESC);

-- id orders events that share a timestamp in the order they were appended.
CREATE TABLE audit (
	id          INTEGER PRIMARY KEY,
	time        INTEGER NOT NULL,
	actor       TEXT NOT NULL,
	action      TEXT NOT NULL,
	session_id  TEXT NOT NULL,
	remote_addr TEXT NOT NULL,
	detail      TEXT NOT NULL
) STRICT;

CREATE INDEX audit_time ON audit (time DESC, id DESC);
CREATE INDEX audit_actor ON audit (actor, time DESC, id DESC);
CREATE INDEX audit_session ON audit (session_id, time DESC, id DESC);

-- The audit log is evidence: the store has no API to change it, and these
-- triggers refuse a change from anything else that opens the file (a
-- sqlite3 shell, a buggy migration) short of dropping them.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
	SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
	SELECT RAISE(ABORT, 'audit log is append-only');
END;
