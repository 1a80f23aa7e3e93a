package recording

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// BenchmarkReader: a replay's reading of an FBS stream, 64 KiB blocks,
// with the allocations it makes (one buffer, whatever the stream's size).
func BenchmarkReader(b *testing.B) {
	var stream bytes.Buffer
	stream.WriteString(Magic)
	data := make([]byte, 64<<10)
	for i := range 64 {
		binary.Write(&stream, binary.BigEndian, uint32(len(data)))
		stream.Write(data)
		binary.Write(&stream, binary.BigEndian, uint32(i))
	}
	stream.Write(make([]byte, 8)) // the end block
	b.SetBytes(int64(stream.Len()))
	b.ReportAllocs()
	for b.Loop() {
		rd, err := NewReader(bytes.NewReader(stream.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := rd.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		if !rd.Ended() {
			b.Fatal("no end block")
		}
	}
}
