-- The groups an authenticator (LDAP, OIDC) said a user is in at their last
-- login, one per line, sorted: they decide which profiles the user may
-- launch. Re-written at every login, so a group taken away at the
-- provider is gone at the next one.
ALTER TABLE users ADD COLUMN user_groups TEXT NOT NULL DEFAULT '';

-- The user's e-mail address as their last login's method knew it (OIDC,
-- a login link), for "your session is ready" mails.
ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';

-- An OIDC login keeps its provider and ID token for logging out there too
-- (RP-initiated logout with id_token_hint).
ALTER TABLE logins ADD COLUMN provider TEXT NOT NULL DEFAULT '';
ALTER TABLE logins ADD COLUMN id_token TEXT NOT NULL DEFAULT '';
