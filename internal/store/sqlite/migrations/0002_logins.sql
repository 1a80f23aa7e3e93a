-- Which authenticator vouched for a user at their last login: the gateway
-- asks that one, on every request, whether the user still exists.
ALTER TABLE users ADD COLUMN method TEXT NOT NULL DEFAULT '';

-- Browser logins live here so that logging out ends them: the cookie holds
-- a random secret, this table its SHA-256.
CREATE TABLE logins (
	id       TEXT PRIMARY KEY,
	username TEXT NOT NULL REFERENCES users (name),
	created  INTEGER NOT NULL,
	expires  INTEGER NOT NULL,
	hash     BLOB NOT NULL UNIQUE
) STRICT;

CREATE INDEX logins_user ON logins (username);
CREATE INDEX logins_expires ON logins (expires);
