// Package local keeps airlock's own password file and checks passwords
// against it. It owns the file's format, its atomic rewrites, and the
// argon2id and bcrypt hashes in it; it implements auth.PasswordAuthenticator
// as the method "local".
//
// It must not log or keep passwords, and knows nothing of sessions, HTTP
// or the store: `airlock users add` and the gateway both just open the
// file.
//
// # The file
//
// STATE_DIR/users, mode 0600, one user a line:
//
//	alice:admin:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$...
//	bob:user:$2y$10$...
//
// The fields are the user name (see auth.ValidateUserName), the role
// ("admin" or "user") and the password hash. New passwords are hashed with
// argon2id ([DefaultParams]). bcrypt hashes ($2a$, $2b$, $2y$) are checked
// too, so an htpasswd file made with `htpasswd -B` can be imported by
// inserting the role:
//
//	sed 's/:/:user:/' .htpasswd >> STATE_DIR/users
//
// Lines starting with '#' and empty lines are comments and survive
// rewrites. A file readable or writable by group or others is refused:
// hashes are secrets too, since they can be attacked offline.
//
// Writers (Add, SetPassword, Remove) hold an flock(2) on "users.lock"
// beside the file while they read, change and atomically replace it
// (temporary file, fsync, rename, fsync of the directory), so two
// `airlock users` commands, or one and a running gateway, never lose each
// other's changes, and a reader sees either the old file or the new one.
// The lock file is never removed: removing it would let two writers lock
// different files. A [File] notices changes made by other processes at its
// next Authenticate or List.
package local

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Method is the name this authenticator reports.
const Method = "local"

// MaxPasswordLen is the longest password, in bytes, that is hashed or
// checked. Longer ones are refused, so a megabyte "password" costs nothing.
const MaxPasswordLen = 1024

// Errors, matchable with errors.Is.
var (
	ErrUserExists       = errors.New("user already exists")
	ErrNoUser           = errors.New("no such user")
	ErrPasswordTooShort = errors.New("password too short")
)

// User is one entry of the file, without its hash.
type User struct {
	Name  string
	Admin bool
}

// Config configures a [File]. Only Path is required.
type Config struct {
	// Path of the password file, normally STATE_DIR/users. It need not
	// exist yet: it is created, mode 0600, by the first Add. Its directory
	// must exist.
	Path string
	// MinPasswordLen is the fewest characters (not bytes) a new password
	// may have. Default 8. It applies to Add and SetPassword, not to
	// checking: an imported bcrypt hash of a shorter password still works.
	MinPasswordLen int
	// Params hash new passwords, and the dummy password that unknown
	// users are checked against. Default [DefaultParams].
	Params Params
	// MaxConcurrent bounds password checks in flight, and so the memory
	// they take (Params.Memory each). Default runtime.GOMAXPROCS(0).
	MaxConcurrent int
	// Logger reports reloads and unreadable files. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.MinPasswordLen = cmp.Or(c.MinPasswordLen, 8)
	if c.Params == (Params{}) {
		c.Params = DefaultParams
	}
	c.MaxConcurrent = cmp.Or(c.MaxConcurrent, runtime.GOMAXPROCS(0))
	c.Logger = cmp.Or(c.Logger, slog.Default()).With("component", "auth.local")
	return c
}

func (c Config) validate() error {
	p := c.Params
	switch {
	case c.Path == "":
		return errors.New("no Path")
	case c.MinPasswordLen < 1 || c.MinPasswordLen > MaxPasswordLen:
		return fmt.Errorf("MinPasswordLen %d: must be 1 to %d", c.MinPasswordLen, MaxPasswordLen)
	case p.Threads < 1 || p.Time < 1 || p.Time > maxTime || p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("Params %+v: need 1 to %d passes, at least 1 thread, 8 KiB per thread to %d KiB", p, maxTime, maxMemory)
	case c.MaxConcurrent < 1:
		return fmt.Errorf("MaxConcurrent %d: must be at least 1", c.MaxConcurrent)
	}
	return nil
}

// File is a password file. Its methods are safe for concurrent use, also
// by several Files (in several processes) on the same path.
type File struct {
	cfg Config
	log *slog.Logger

	mu  sync.Mutex // guards cur and id, and serialises this File's writers
	cur *contents  // never changed once published; writers replace it
	id  fileID     // which version of the file cur was read from

	dummy  hash          // checked for unknown users, so they cost the same
	sem    chan struct{} // bounds checks in flight
	hashes atomic.Int64  // password checks run (tests count them)
}

var _ auth.PasswordAuthenticator = (*File)(nil)

// Open opens the password file at path with the default Config.
func Open(path string) (*File, error) {
	return New(Config{Path: path})
}

// New reads the password file cfg.Path (an absent file has no users) and
// returns a File. It hashes one random password to have a dummy to check
// unknown users against, so it takes as long as one login.
func New(cfg Config) (*File, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open users file %s: %w", cfg.Path, err)
	}
	f := &File{cfg: cfg, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxConcurrent)}
	pw := make([]byte, 32)
	rand.Read(pw)
	dummy, err := newArgon2Hash(pw, cfg.Params)
	if err != nil {
		return nil, fmt.Errorf("open users file %s: %w", cfg.Path, err)
	}
	f.dummy = dummy
	f.cur, f.id, err = load(cfg.Path)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Name returns "local".
func (f *File) Name() string { return Method }

// Authenticate checks user's password. An unknown user costs one check of
// a dummy hash, the same as a wrong password. If the file was changed and
// is now unreadable, every login fails with ErrUnavailable (and is logged)
// until it is fixed, rather than going on with an older file that may
// still hold a removed user.
func (f *File) Authenticate(ctx context.Context, user, password string) (auth.Identity, error) {
	// These cost no hash, but reveal nothing: they are the same for every
	// user, and no such user can exist.
	if password == "" || len(password) > MaxPasswordLen || auth.ValidateUserName(user) != nil {
		return auth.Identity{}, auth.ErrInvalid
	}
	c, err := f.snapshot()
	if err != nil {
		return auth.Identity{}, fmt.Errorf("%w: %w", auth.ErrUnavailable, err)
	}
	select {
	case f.sem <- struct{}{}:
	case <-ctx.Done():
		return auth.Identity{}, fmt.Errorf("check password of %s: %w", user, ctx.Err())
	}
	defer func() { <-f.sem }()
	r, known := c.users[user]
	h := f.dummy
	if known {
		h = r.hash
	}
	f.hashes.Add(1)
	if ok := h.verify([]byte(password)); !ok || !known {
		return auth.Identity{}, auth.ErrInvalid
	}
	return auth.Identity{User: user, Admin: r.admin, Method: Method}, nil
}

// List returns the users in the file, sorted by name.
func (f *File) List() ([]User, error) {
	c, err := f.snapshot()
	if err != nil {
		return nil, err
	}
	us := make([]User, 0, len(c.users))
	for _, r := range c.users {
		us = append(us, User{Name: r.name, Admin: r.admin})
	}
	slices.SortFunc(us, func(a, b User) int { return strings.Compare(a.Name, b.Name) })
	return us, nil
}

// Role reports whether name is in the file now, and whether as an admin.
// It rereads the file if another process replaced it (one stat(2) when
// not), so the gateway can ask on every request and see `airlock users
// remove` at once. An error means the file could not be read: not a "no".
func (f *File) Role(name string) (admin, ok bool, err error) {
	c, err := f.snapshot()
	if err != nil {
		return false, false, err
	}
	r, ok := c.users[name]
	if !ok {
		return false, false, nil
	}
	return r.admin, true, nil
}

// Roles returns every user in the file and whether each is an admin.
func (f *File) Roles() (map[string]bool, error) {
	c, err := f.snapshot()
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(c.users))
	for name, r := range c.users {
		m[name] = r.admin
	}
	return m, nil
}

// Add adds a user with password, hashed with argon2id. It refuses a name
// already in the file with ErrUserExists, an invalid name, and a password
// shorter than MinPasswordLen (ErrPasswordTooShort) or containing a line
// break (usually the newline a --password-stdin reader forgot to strip).
func (f *File) Add(name string, password []byte, admin bool) error {
	err := f.add(name, password, admin)
	if err != nil {
		return fmt.Errorf("add user %s to %s: %w", name, f.cfg.Path, err)
	}
	return nil
}

func (f *File) add(name string, password []byte, admin bool) error {
	if err := auth.ValidateUserName(name); err != nil {
		return err
	}
	h, err := f.hashNew(password)
	if err != nil {
		return err
	}
	return f.update(func(c *contents) error {
		if _, ok := c.users[name]; ok {
			return ErrUserExists
		}
		r := &record{name: name, admin: admin, hash: h}
		c.users[name] = r
		c.lines = append(c.lines, line{user: r})
		return nil
	})
}

// SetPassword replaces the password of an existing user (ErrNoUser if
// there is none), with the same checks as Add.
func (f *File) SetPassword(name string, password []byte) error {
	err := f.setPassword(name, password)
	if err != nil {
		return fmt.Errorf("set password of %s in %s: %w", name, f.cfg.Path, err)
	}
	return nil
}

func (f *File) setPassword(name string, password []byte) error {
	if err := auth.ValidateUserName(name); err != nil {
		return err
	}
	h, err := f.hashNew(password)
	if err != nil {
		return err
	}
	return f.update(func(c *contents) error {
		r, ok := c.users[name]
		if !ok {
			return ErrNoUser
		}
		r.hash = h
		return nil
	})
}

// SetAdmin makes an existing user an admin or not (ErrNoUser if there is
// none), keeping their password. A running gateway sees the new role on
// the user's next request.
func (f *File) SetAdmin(name string, admin bool) error {
	err := f.update(func(c *contents) error {
		r, ok := c.users[name]
		if !ok {
			return ErrNoUser
		}
		r.admin = admin
		return nil
	})
	if err != nil {
		return fmt.Errorf("set role of %s in %s: %w", name, f.cfg.Path, err)
	}
	return nil
}

// Remove removes a user (ErrNoUser if there is none).
func (f *File) Remove(name string) error {
	err := f.update(func(c *contents) error {
		if _, ok := c.users[name]; !ok {
			return ErrNoUser
		}
		delete(c.users, name)
		c.lines = slices.DeleteFunc(c.lines, func(l line) bool { return l.user != nil && l.user.name == name })
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove user %s from %s: %w", name, f.cfg.Path, err)
	}
	return nil
}

// hashNew checks a new password against the policy and hashes it.
func (f *File) hashNew(password []byte) (hash, error) {
	switch {
	case utf8.RuneCount(password) < f.cfg.MinPasswordLen:
		return nil, fmt.Errorf("%w: want at least %d characters", ErrPasswordTooShort, f.cfg.MinPasswordLen)
	case len(password) > MaxPasswordLen:
		return nil, fmt.Errorf("password longer than %d bytes", MaxPasswordLen)
	case slices.Contains(password, '\n') || slices.Contains(password, '\r'):
		return nil, errors.New("password contains a line break")
	}
	return newArgon2Hash(password, f.cfg.Params)
}

// snapshot returns the current contents, rereading the file if another
// process replaced it.
func (f *File) snapshot() (*contents, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, err := statID(f.cfg.Path)
	if err != nil {
		f.log.Error("users file unreadable", "path", f.cfg.Path, "error", err)
		return nil, fmt.Errorf("read users file %s: %w", f.cfg.Path, err)
	}
	if id == f.id {
		return f.cur, nil
	}
	c, id, err := load(f.cfg.Path)
	if err != nil {
		f.log.Error("users file unreadable", "path", f.cfg.Path, "error", err)
		return nil, err
	}
	f.cur, f.id = c, id
	f.log.Info("users file reloaded", "path", f.cfg.Path, "users", len(c.users))
	return c, nil
}

// update applies change to the file under the cross-process lock and
// replaces the file atomically.
func (f *File) update(change func(*contents) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	unlock, err := lockFile(f.cfg.Path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	// Reread under the lock: another process may have written since.
	cur, _, err := load(f.cfg.Path)
	if err != nil {
		return err
	}
	next := cur.clone()
	if err := change(next); err != nil {
		return err
	}
	if err := writeAtomic(f.cfg.Path, next.format()); err != nil {
		return err
	}
	id, err := statID(f.cfg.Path)
	if err != nil {
		return err
	}
	f.cur, f.id = next, id
	return nil
}

// fileID tells versions of the file apart. Every write is a rename of a
// new file, so the inode changes; size and times catch the rare reuse of
// an inode number. (All three could match only for two writes of the same
// size within one clock tick, each of which first spends tens of
// milliseconds hashing.)
type fileID struct {
	exists       bool
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func idOf(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	}
	return fileID{
		exists: true,
		dev:    uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}
}

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileID{}, nil
	}
	if err != nil {
		return fileID{}, err
	}
	return idOf(fi), nil
}

// load reads and parses the file; an absent file is an empty one.
func load(path string) (*contents, fileID, error) {
	c, id, err := loadFile(path)
	if err != nil {
		return nil, fileID{}, fmt.Errorf("read users file %s: %w", path, err)
	}
	return c, id, nil
}

func loadFile(path string) (*contents, fileID, error) {
	fd, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &contents{users: map[string]*record{}}, fileID{}, nil
	}
	if err != nil {
		return nil, fileID{}, err
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, fileID{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileID{}, errors.New("not a regular file")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fileID{}, fmt.Errorf("mode %04o lets group or others read or write password hashes; chmod 600 it", perm)
	}
	data, err := io.ReadAll(io.LimitReader(fd, maxFileSize+1))
	if err != nil {
		return nil, fileID{}, err
	}
	if len(data) > maxFileSize {
		return nil, fileID{}, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	c, err := parseFile(data)
	if err != nil {
		return nil, fileID{}, err
	}
	return c, idOf(fi), nil
}

// lockFile takes an exclusive flock(2) on path, creating it, and returns
// the function that releases it. flock, not fcntl, locks: flock locks
// belong to the open file, so two Files in one process exclude each other
// too.
func lockFile(path string) (unlock func(), err error) {
	fd, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock users file: %w", err)
	}
	for {
		err = syscall.Flock(int(fd.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("lock users file %s: %w", path, err)
	}
	// Closing the file releases the lock.
	return func() { fd.Close() }, nil
}

// writeAtomic replaces path with data, mode 0600, so that readers see the
// old file or the new one and a crash leaves one of them.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write users file %s: %w", path, err)
		}
	}()
	// CreateTemp makes the file 0600 already; state it rather than rely
	// on that.
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
