package rdcleanpath

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
)

// Version is the only protocol version there is (3389 + 1).
const Version = 3390

// Error codes of RDCleanPathErr.
const (
	GeneralError     = 1
	NegotiationError = 2
)

// MaxRequest is the largest request the gateway reads: an X.224
// Connection Request (at most [MaxX224] bytes), a ticket (at most 1,425)
// and a destination fit with room to spare.
const MaxRequest = 8 << 10

// PDU is one RDCleanPath message. Version is always [Version] on the wire.
type PDU struct {
	Version           int64    `asn1:"explicit,tag:0"`
	Error             Err      `asn1:"optional,explicit,tag:1"`
	Destination       string   `asn1:"optional,explicit,tag:2,utf8"`
	ProxyAuth         string   `asn1:"optional,explicit,tag:3,utf8"`
	ServerAuth        string   `asn1:"optional,explicit,tag:4,utf8"`
	PreconnectionBlob string   `asn1:"optional,explicit,tag:5,utf8"`
	X224              []byte   `asn1:"optional,explicit,tag:6"`
	ServerCertChain   [][]byte `asn1:"optional,explicit,tag:7"`
	ServerAddr        string   `asn1:"optional,explicit,tag:9,utf8"`
}

// Err is RDCleanPathErr. A zero optional field is absent on the wire.
type Err struct {
	Code         int64 `asn1:"explicit,tag:0"`
	HTTPStatus   int64 `asn1:"optional,explicit,tag:1"`
	WSALastError int64 `asn1:"optional,explicit,tag:2"`
	TLSAlert     int64 `asn1:"optional,explicit,tag:3"`
}

// Kind is what a PDU is, from the fields it holds.
type Kind int

// The kinds of PDU. VMConnect shapes (a preconnection blob and no X.224)
// are recognised so the gateway can refuse them by name.
const (
	KindInvalid Kind = iota
	KindRequest
	KindVMConnectRequest
	KindResponse
	KindGeneralError
	KindNegotiationError
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindVMConnectRequest:
		return "VMConnect request"
	case KindResponse:
		return "response"
	case KindGeneralError:
		return "general error"
	case KindNegotiationError:
		return "negotiation error"
	}
	return "invalid"
}

// Kind classifies p.
func (p *PDU) Kind() Kind {
	switch {
	case p.Error.Code == NegotiationError && len(p.X224) > 0:
		return KindNegotiationError
	case p.Error.Code != 0:
		return KindGeneralError
	case p.Destination != "" && p.ProxyAuth != "" && len(p.X224) > 0:
		return KindRequest
	case p.Destination != "" && p.ProxyAuth != "" && p.PreconnectionBlob != "":
		return KindVMConnectRequest
	case p.ServerAddr != "" && len(p.X224) > 0 && len(p.ServerCertChain) > 0:
		return KindResponse
	}
	return KindInvalid
}

// Marshal encodes p as DER, with Version set to [Version].
func (p *PDU) Marshal() ([]byte, error) {
	q := *p
	q.Version = Version
	b, err := asn1.Marshal(q)
	if err != nil {
		return nil, fmt.Errorf("rdcleanpath: encode: %w", err)
	}
	return b, nil
}

// Parse decodes exactly one PDU from b: no byte may follow it, and its
// version must be [Version].
func Parse(b []byte) (*PDU, error) {
	var p PDU
	rest, err := asn1.Unmarshal(b, &p)
	if err != nil {
		return nil, fmt.Errorf("rdcleanpath: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("rdcleanpath: %d bytes after the PDU", len(rest))
	}
	if p.Version != Version {
		return nil, fmt.Errorf("rdcleanpath: version %d, want %d", p.Version, Version)
	}
	return &p, nil
}

// ErrShort is what [Detect] returns while b does not yet hold the header.
var ErrShort = errors.New("rdcleanpath: need more bytes")

// Detect returns the total length of the PDU that b starts with, from its
// SEQUENCE header alone (b may hold only part of the PDU). It refuses
// anything that is not a DER SEQUENCE with a definite length of at most
// four length bytes, and returns [ErrShort] while the header is
// incomplete.
func Detect(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, ErrShort
	}
	if b[0] != 0x30 {
		return 0, fmt.Errorf("rdcleanpath: not a DER SEQUENCE (first byte %#02x)", b[0])
	}
	l := int(b[1])
	if l < 0x80 {
		return 2 + l, nil
	}
	n := l & 0x7f
	switch {
	case n == 0:
		return 0, errors.New("rdcleanpath: indefinite length")
	case n > 3:
		return 0, fmt.Errorf("rdcleanpath: %d length bytes", n)
	case len(b) < 2+n:
		return 0, ErrShort
	}
	l = 0
	for _, c := range b[2 : 2+n] {
		l = l<<8 | int(c)
	}
	if l < 0x80 || (n > 1 && b[2] == 0) {
		return 0, errors.New("rdcleanpath: length not in its shortest form")
	}
	return 2 + n + l, nil
}

// Read reads one whole PDU from r and no byte after it, refusing one
// longer than max before reading its body. It returns the PDU's bytes;
// [Parse] decodes them.
func Read(r io.Reader, max int) ([]byte, error) {
	buf := make([]byte, 0, 64)
	var total int
	for {
		n, err := Detect(buf)
		if err == nil {
			total = n
			break
		}
		if !errors.Is(err, ErrShort) {
			return nil, err
		}
		// The header is at most 5 bytes: read it byte by byte, so nothing
		// past the PDU is consumed.
		var c [1]byte
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return nil, fmt.Errorf("rdcleanpath: read header: %w", err)
		}
		buf = append(buf, c[0])
	}
	if total > max {
		return nil, fmt.Errorf("rdcleanpath: PDU of %d bytes, at most %d", total, max)
	}
	b := make([]byte, total)
	copy(b, buf)
	if _, err := io.ReadFull(r, b[len(buf):]); err != nil {
		return nil, fmt.Errorf("rdcleanpath: read body: %w", err)
	}
	return b, nil
}

// HTTPError is a general error carrying an HTTP status (400 bad request,
// 401 no or bad ticket, 403 forbidden, 500, 502, 503...).
func HTTPError(status int) *PDU {
	return &PDU{Version: Version, Error: Err{Code: GeneralError, HTTPStatus: int64(status)}}
}

// WSAError is a general error carrying a Winsock error code, as the
// client expects for socket failures (10061 refused, 10060 timed out).
func WSAError(code int) *PDU {
	return &PDU{Version: Version, Error: Err{Code: GeneralError, WSALastError: int64(code)}}
}

// TLSAlert is a general error carrying the TLS alert the RDP server sent.
func TLSAlert(alert uint8) *PDU {
	return &PDU{Version: Version, Error: Err{Code: GeneralError, TLSAlert: int64(alert)}}
}

// NegotiationFailure is the error carrying the server's failing X.224
// Connection Confirm, which the client decodes to say why (for example
// "CredSSP required").
func NegotiationFailure(cc []byte) *PDU {
	return &PDU{Version: Version, Error: Err{Code: NegotiationError}, X224: cc}
}

// Response is the answer that lets the client go on: the server's
// Connection Confirm, its certificate chain (DER, leaf first) and the
// address the gateway reached.
func Response(addr string, cc []byte, chain [][]byte) *PDU {
	return &PDU{Version: Version, ServerAddr: addr, X224: cc, ServerCertChain: chain}
}

// Winsock error codes the gateway maps socket failures to.
const (
	WSAETimedOut    = 10060
	WSAEConnRefused = 10061
	WSAHostNotFound = 11001
)
