// Package rdcleanpath is the wire format the browser's RDP client (IronRDP
// compiled to WebAssembly) speaks to the gateway before plain RDP flows:
// the RDCleanPath PDU, its framing on a byte stream, and the few X.224
// (TPKT) checks the gateway makes on the Connection Request it forwards and
// the Connection Confirm it reads back.
//
// It is pure: no I/O beyond the io.Reader it is handed, no logging, and
// nothing but the standard library. The gateway decides who may connect
// and where; this package only says whether bytes are well formed.
//
// # The PDU
//
// DER, one SEQUENCE whose fields are all EXPLICIT context tags; strings are
// UTF8String:
//
//	RDCleanPathPdu ::= SEQUENCE {
//	  version             [0] INTEGER,                         -- 3390
//	  error               [1] RDCleanPathErr OPTIONAL,
//	  destination         [2] UTF8String OPTIONAL,
//	  proxy_auth          [3] UTF8String OPTIONAL,
//	  server_auth         [4] UTF8String OPTIONAL,
//	  preconnection_blob  [5] UTF8String OPTIONAL,
//	  x224_connection_pdu [6] OCTET STRING OPTIONAL,
//	  server_cert_chain   [7] SEQUENCE OF OCTET STRING OPTIONAL,
//	  server_addr         [9] UTF8String OPTIONAL }
//	RDCleanPathErr ::= SEQUENCE {
//	  error_code       [0] INTEGER,            -- 1 general, 2 negotiation
//	  http_status_code [1] INTEGER OPTIONAL,
//	  wsa_last_error   [2] INTEGER OPTIONAL,
//	  tls_alert_code   [3] INTEGER OPTIONAL }
//
// Which fields are present says what a PDU is (see [Kind]). A peer may
// split a PDU over several WebSocket messages: [Detect] finds its length
// from the DER header and [Read] reads exactly one, never more than a limit.
//
// encoding/asn1 does the DER: it encodes these shapes byte for byte as
// IronRDP does (checked against IronRDP's own vectors, and here against
// `openssl asn1parse`), and its decoder refuses non-minimal lengths,
// trailing bytes inside the SEQUENCE and invalid UTF-8. One limit of
// encoding/asn1 stays visible: an optional INTEGER equal to 0 is not
// encoded, so a TLS alert 0 (close_notify) cannot be sent; nothing sends it.
package rdcleanpath
