-- Which text of a profile's terms of use each user accepted last (by its
-- SHA-256): a launch needs the current text's. Every acceptance is also
-- in the audit log.
CREATE TABLE terms (
	username TEXT NOT NULL,
	profile  TEXT NOT NULL,
	hash     TEXT NOT NULL,
	accepted INTEGER NOT NULL,
	PRIMARY KEY (username, profile)
) STRICT;
