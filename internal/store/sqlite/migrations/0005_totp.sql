-- Second factors (TOTP). secret is sealed by the gateway; last_step is the
-- last accepted time step, so a code is accepted once across every
-- gateway on this file; failures/fail_since bound guessing.
CREATE TABLE totp (
	username   TEXT PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
	secret     BLOB NOT NULL,
	last_step  INTEGER NOT NULL,
	created    INTEGER NOT NULL,
	failures   INTEGER NOT NULL DEFAULT 0,
	fail_since INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Recovery codes by SHA-256; a used one is deleted.
CREATE TABLE totp_recovery (
	username TEXT NOT NULL REFERENCES totp (username) ON DELETE CASCADE,
	hash     BLOB NOT NULL,
	PRIMARY KEY (username, hash)
) STRICT;

-- Browsers between the password and the code. groups is a JSON array.
CREATE TABLE pending_logins (
	hash     BLOB PRIMARY KEY,
	username TEXT NOT NULL,
	admin    INTEGER NOT NULL,
	method   TEXT NOT NULL,
	groups   TEXT NOT NULL,
	email    TEXT NOT NULL,
	created  INTEGER NOT NULL,
	expires  INTEGER NOT NULL
) STRICT;
