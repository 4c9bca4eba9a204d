package boltlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Log entry encoding, version 1:
//
//	version   1 byte, formatV1
//	flags     1 byte, which optional fields follow
//	type      1 byte, raft.LogType
//	index     uvarint
//	term      uvarint
//	if flagAppendedAt:
//	  seconds     varint, Unix time
//	  nanoseconds uvarint, below 1e9
//	if flagData:       uvarint length, then the bytes
//	if flagExtensions: uvarint length, then the bytes
//
// A nil Data or Extensions has its flag clear, so nil and empty slices come
// back as they went in, and a zero AppendedAt comes back as the zero Time.
// AppendedAt is kept as Unix seconds and nanoseconds rather than UnixNano,
// whose int64 cannot hold every time.Time. The location is not kept;
// decoded times are in time.Local.
//
// A decoder must reject anything it does not understand: a new field means
// a new flag or a new version.
const (
	formatV1 byte = 1

	flagAppendedAt byte = 1 << 0
	flagData       byte = 1 << 1
	flagExtensions byte = 1 << 2
	knownFlags          = flagAppendedAt | flagData | flagExtensions
)

// errCorrupt marks a stored value that cannot be decoded.
var errCorrupt = errors.New("corrupt log entry")

// encodeLog returns the encoding of l in a new slice.
func encodeLog(l *raft.Log) []byte {
	var flags byte
	if !l.AppendedAt.IsZero() {
		flags |= flagAppendedAt
	}
	if l.Data != nil {
		flags |= flagData
	}
	if l.Extensions != nil {
		flags |= flagExtensions
	}

	b := make([]byte, 0, 3+6*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions))
	b = append(b, formatV1, flags, byte(l.Type))
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	if flags&flagAppendedAt != 0 {
		b = binary.AppendVarint(b, l.AppendedAt.Unix())
		b = binary.AppendUvarint(b, uint64(l.AppendedAt.Nanosecond()))
	}
	if flags&flagData != 0 {
		b = binary.AppendUvarint(b, uint64(len(l.Data)))
		b = append(b, l.Data...)
	}
	if flags&flagExtensions != 0 {
		b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
		b = append(b, l.Extensions...)
	}
	return b
}

// decodeLog decodes b into l. It copies the bytes it keeps, so b may be
// reused or unmapped afterwards. On error, which wraps errCorrupt, l may be
// partly written.
func decodeLog(b []byte, l *raft.Log) error {
	d := decoder{b: b}
	version := d.byte("version")
	if d.err == nil && version != formatV1 {
		return fmt.Errorf("%w: unsupported format version %d", errCorrupt, version)
	}
	flags := d.byte("flags")
	if d.err == nil && flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#02x", errCorrupt, flags&^knownFlags)
	}
	typ := d.byte("type")
	index := d.uvarint("index")
	term := d.uvarint("term")
	*l = raft.Log{Index: index, Term: term, Type: raft.LogType(typ)}
	if flags&flagAppendedAt != 0 {
		sec := d.varint("appended-at seconds")
		nsec := d.uvarint("appended-at nanoseconds")
		if d.err == nil && nsec >= uint64(time.Second) {
			return fmt.Errorf("%w: appended-at nanoseconds %d out of range", errCorrupt, nsec)
		}
		l.AppendedAt = time.Unix(sec, int64(nsec))
	}
	if flags&flagData != 0 {
		l.Data = d.bytes("data")
	}
	if flags&flagExtensions != 0 {
		l.Extensions = d.bytes("extensions")
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return nil
}

// decoder reads fields from the front of b. After the first failure every
// read returns a zero value and err holds the failure.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(field, problem string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", errCorrupt, field, problem)
	}
	d.b = nil
}

func (d *decoder) byte(field string) byte {
	if len(d.b) < 1 {
		d.fail(field, "truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(field string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(field, varintProblem(n))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(field, varintProblem(n))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed byte string into a new, non-nil slice.
func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(field, fmt.Sprintf("length %d exceeds the %d bytes left", n, len(d.b)))
		return nil
	}
	v := append([]byte{}, d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func varintProblem(n int) string {
	if n == 0 {
		return "truncated"
	}
	return "varint overflows 64 bits"
}
