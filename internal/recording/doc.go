// Package recording writes and reads recordings of VNC and RDP sessions:
// the server-to-viewer stream of one viewer connection (RFB, or RDP in the
// clear), with the time each piece arrived, as the gateway relays it.
//
// # Format
//
// A recording is NAME.fbs.gz, a gzip stream of FBS 001.000, the framing of
// rfbproxy and TightVNC's player, with a JSON sidecar NAME.json:
//
//	magic   "FBS 001.000\n" (12 bytes)
//	blocks  length  uint32, big-endian, bytes of data
//	        data    the RFB bytes, padded with zeros to a multiple of 4
//	        time    uint32, big-endian, milliseconds since the recording began
//	end     a block of length 0: the recording ended as it should (the
//	        viewer left, or the size cap was reached; the sidecar says
//	        which). A file without it was cut short.
//
// The data is the RFB stream exactly as the viewer got it, from the
// server's ProtocolVersion on: the security handshake the vnc connector
// offered (None), ServerInit, then the updates in the pixel format and
// encodings the live viewer asked for. Classic FBS players expect a 3.3
// handshake; this stream has whatever version was negotiated (3.8 with
// noVNC), so a player must read the handshake the way a client does.
// Keystrokes are not recorded (the viewer's side of the stream is not
// stored); its pointer events are, in a track of their own beside the
// file (NAME.pointer; the format is in pointer.go).
//
// The sidecar holds the session, the viewer, the connector, start and end
// times, the RFB bytes, the size of the file and its SHA-256, why the
// recording ended, how many pointer events the track holds, and the kind
// ("vnc", or absent in sidecars written before RDP recordings; "rdp").
//
// # RDP recordings
//
// The same file, framing and sidecar, kind "rdp". The data is the RDP
// server's stream as the browser's client got it (after the gateway's
// channel filter), in the clear between the server's TLS and the client's
// WebSocket, from the server's MCS Connect Response on: TPKT (X.224 Data,
// MCS) and fast-path PDUs. Not in it: the X.224 exchange and TLS, CredSSP
// and the Early User Authorization Result (before MCS), and anything the
// client sent. The first block is a header (rdp.go), stamped with the
// time the Connect Response came:
//
//	magic     "AIRLOCK-RDP 1\n"
//	confirm   uint16 length, the server's X.224 Connection Confirm (TPKT)
//	certs     uint16 count, then each: uint32 length, DER, leaf first
//	channels  uint16 count, then each: uint8 length, the name the client
//	          asked for (before the filter renamed any)
//
// all integers big-endian; the sidecar has the same under "rdp" (bytes
// in base64). A replay answers the client's RDCleanPath request with the
// Confirm and chain and sends the blocks after the header; the client
// must ask for the recorded channels, in order, for the ids in the
// server's Connect Response to be its own. A connection that ended before
// the Connect Response (a logon refused in CredSSP) has no blocks at all.
// The rfb_bytes field counts the RDP bytes, header included. The pointer
// track is there and empty: the client's pointer is client-to-server
// data, which is not recorded.
package recording
