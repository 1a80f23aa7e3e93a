package local

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Params are argon2id's cost parameters (RFC 9106 §3.1).
type Params struct {
	// Memory in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the parallelism (lanes).
	Threads uint8
}

// DefaultParams is the first of the argon2id settings OWASP's Password
// Storage Cheat Sheet recommends: 19 MiB, 2 passes, 1 lane. One hash took
// 30-120 ms on the project's shared 2-core test machine, depending on
// load (BenchmarkAuthenticate): slow enough that a guesser with a stolen
// file gets a few tens of guesses a second per core, fast enough for a
// login. Memory is what limits concurrent logins, so [Config].MaxConcurrent
// bounds checks in flight (2 × 19 MiB by default there).
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16 // RFC 9106 recommends 16 bytes
	keyLen  = 32

	// Bounds on what a line of the file may ask for. The file is trusted
	// (mode 0600, written by admins), but a typo must not turn each login
	// into gigabytes of memory or minutes of CPU.
	maxMemory     = 1 << 20 // KiB: 1 GiB
	maxTime       = 64
	minSaltLen    = 8 // RFC 9106: at least 8
	maxSaltLen    = 64
	minKeyLen     = 16
	maxKeyLen     = 64
	maxBcryptCost = 14 // each step doubles; cost 10 took 0.2-0.5 s here under load, htpasswd -B's default is 5
)

// b64 is the PHC string format's base64: standard alphabet, no padding.
// Strict, so that each hash has exactly one spelling.
var b64 = base64.RawStdEncoding.Strict()

// hash is a stored password hash.
type hash interface {
	// verify reports whether password matches, in time independent of
	// where password and the hash first differ.
	verify(password []byte) bool
	// String returns the hash as stored in the file.
	String() string
}

type argon2Hash struct {
	p    Params
	salt []byte
	key  []byte
}

func newArgon2Hash(password []byte, p Params) (*argon2Hash, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("read salt: %w", err)
	}
	return &argon2Hash{p: p, salt: salt, key: argon2.IDKey(password, salt, p.Time, p.Memory, p.Threads, keyLen)}, nil
}

func (h *argon2Hash) verify(password []byte) bool {
	k := argon2.IDKey(password, h.salt, h.p.Time, h.p.Memory, h.p.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}

// String returns the PHC string:
// $argon2id$v=19$m=MEMORY,t=TIME,p=THREADS$SALT$KEY.
func (h *argon2Hash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.p.Memory, h.p.Time, h.p.Threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

type bcryptHash string

func (h bcryptHash) verify(password []byte) bool {
	// bcrypt reads only the first 72 bytes of a password, as every
	// htpasswd implementation does: imported hashes keep that property.
	return bcrypt.CompareHashAndPassword([]byte(h), password) == nil
}

func (h bcryptHash) String() string { return string(h) }

// parseHash parses a stored hash: an argon2id PHC string or a bcrypt hash
// ($2a$, $2b$ or $2y$, as htpasswd -B writes). Errors never quote the hash.
func parseHash(s string) (hash, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2(s)
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return parseBcrypt(s)
	case strings.HasPrefix(s, "$argon2"):
		return nil, errors.New("only argon2id hashes are supported, not argon2i or argon2d")
	}
	return nil, errors.New("unknown hash format: want an argon2id PHC string ($argon2id$...) or a bcrypt hash ($2a$, $2b$, $2y$)")
}

func parseArgon2(s string) (*argon2Hash, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	f := strings.Split(s, "$")
	if len(f) != 6 {
		return nil, errors.New("argon2id hash: want $argon2id$v=19$m=M,t=T,p=P$SALT$HASH")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("argon2id hash: version must be v=%d", argon2.Version)
	}
	ps := strings.Split(f[3], ",")
	if len(ps) != 3 {
		return nil, errors.New("argon2id hash: parameters must be m=M,t=T,p=P in that order")
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(ps[i], name+"=")
		if !ok {
			return nil, errors.New("argon2id hash: parameters must be m=M,t=T,p=P in that order")
		}
		n, err := parseDecimal(v)
		if err != nil {
			return nil, fmt.Errorf("argon2id hash: parameter %s: %w", name, err)
		}
		vals[i] = n
	}
	m, t, p := vals[0], vals[1], vals[2]
	switch {
	case p < 1 || p > 255:
		return nil, errors.New("argon2id hash: p must be 1 to 255")
	case t < 1 || t > maxTime:
		return nil, fmt.Errorf("argon2id hash: t must be 1 to %d", maxTime)
	case m < 8*p || m > maxMemory:
		// RFC 9106 §3.1: at least 8 KiB per lane.
		return nil, fmt.Errorf("argon2id hash: m must be 8·p to %d KiB", maxMemory)
	}
	salt, err := b64.DecodeString(f[4])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return nil, fmt.Errorf("argon2id hash: salt must be %d to %d bytes of unpadded base64", minSaltLen, maxSaltLen)
	}
	key, err := b64.DecodeString(f[5])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return nil, fmt.Errorf("argon2id hash: hash must be %d to %d bytes of unpadded base64", minKeyLen, maxKeyLen)
	}
	return &argon2Hash{p: Params{Memory: uint32(m), Time: uint32(t), Threads: uint8(p)}, salt: salt, key: key}, nil
}

// parseDecimal parses a decimal number without sign or leading zeros (one
// spelling per value), up to 10 digits.
func parseDecimal(s string) (uint64, error) {
	if s == "" || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
		return 0, errors.New("not a decimal number without leading zeros")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a decimal number without leading zeros")
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// bcryptAlphabet is bcrypt's own base64 alphabet.
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func parseBcrypt(s string) (bcryptHash, error) {
	// $2y$NN$ + 22 characters of salt + 31 of hash.
	if len(s) != 60 || s[6] != '$' {
		return "", errors.New("bcrypt hash: want $2y$NN$ followed by 53 characters")
	}
	for i := 7; i < len(s); i++ {
		if !strings.ContainsRune(bcryptAlphabet, rune(s[i])) {
			return "", errors.New("bcrypt hash: salt and hash must be bcrypt base64")
		}
	}
	cost, err := bcrypt.Cost([]byte(s))
	if err != nil || s[4] < '0' || s[4] > '9' || s[5] < '0' || s[5] > '9' {
		return "", errors.New("bcrypt hash: unreadable cost")
	}
	if cost < bcrypt.MinCost || cost > maxBcryptCost {
		return "", fmt.Errorf("bcrypt hash: cost %d is outside %d to %d", cost, bcrypt.MinCost, maxBcryptCost)
	}
	return bcryptHash(s), nil
}
