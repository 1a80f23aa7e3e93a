// Package recording writes and reads recordings of VNC sessions: the
// server-to-viewer RFB stream of one viewer connection, with the time each
// piece arrived, as the gateway relays it.
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
// recording ended, and how many pointer events the track holds.
package recording
