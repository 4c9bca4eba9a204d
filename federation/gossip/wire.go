package gossip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Every message this package puts on the wire is
//
//	[wireVersion][message type][JSON body]
//
// JSON keeps the format readable and tolerant of fields added later (an
// older node ignores them); the version byte lets a future format change
// be refused cleanly instead of misread. Sizes are bounded before the body
// is decoded, and every decoded offer is validated.
const wireVersion = 1

type msgType byte

const (
	msgOffer  msgType = 1 // one node's offer: broadcasts and direct sends
	msgState  msgType = 2 // the whole catalog: push/pull
	msgKeyOp  msgType = 3 // a key rotation step
	msgKeyAck msgType = 4 // the answer to msgKeyOp
	msgLeave  msgType = 5 // a node announcing that it leaves
)

const (
	maxMessageBytes = 256 << 10 // one offer or key message
	maxStateBytes   = 16 << 20  // the catalog, under memberlist's 20 MiB push/pull limit
	maxStateOffers  = 4096
	maxKeyOpID      = 64
	maxAckError     = 512
)

var errMalformed = errors.New("malformed gossip message")

type wireOffer struct {
	Node        string           `json:"node"`
	Site        string           `json:"site"`
	Version     uint64           `json:"version"`
	Instruments []wireInstrument `json:"instruments,omitempty"`
	Compute     []wireCompute    `json:"compute,omitempty"`
}

type wireInstrument struct {
	ID     string `json:"id"`
	Type   string `json:"type,omitempty"`
	Model  string `json:"model,omitempty"`
	Status string `json:"status"`
}

type wireCompute struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	GPUs       int               `json:"gpus"`
	GPUsFree   int               `json:"gpus_free"`
	QueueWaitS float64           `json:"queue_wait_s"`
	Software   map[string]string `json:"software,omitempty"`
	Status     string            `json:"status"`
}

type wireState struct {
	Offers []wireOffer `json:"offers"`
}

// keyOp asks a member to change its keyring; From is the node to answer.
type keyOp struct {
	ID   string `json:"id"`
	Op   string `json:"op"` // install, use, remove
	Key  []byte `json:"key"`
	From string `json:"from"`
}

// keyAck answers a keyOp; Error is empty when the member applied it.
type keyAck struct {
	ID    string `json:"id"`
	From  string `json:"from"`
	Error string `json:"error,omitempty"`
}

// leaveIntent tells members that a node is leaving on purpose, so that
// they list it as left rather than dead: memberlist's own leave notice
// does not reach the EventDelegate as such (its Node.State stays alive).
type leaveIntent struct {
	Node string `json:"node"`
}

// Key operations.
const (
	opInstall = "install"
	opUse     = "use"
	opRemove  = "remove"
)

// message is a decoded message; exactly one field matches typ.
type message struct {
	typ    msgType
	offer  Offer
	state  []Offer
	keyOp  keyOp
	keyAck keyAck
	leave  leaveIntent
}

func encode(t msgType, body any) ([]byte, error) {
	var buf bytes.Buffer
	buf.Write([]byte{wireVersion, byte(t)})
	if err := json.NewEncoder(&buf).Encode(body); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if limit := maxBytes(t); len(b) > limit {
		return nil, fmt.Errorf("gossip message of %d bytes exceeds %d", len(b), limit)
	}
	return b, nil
}

func maxBytes(t msgType) int {
	if t == msgState {
		return maxStateBytes
	}
	return maxMessageBytes
}

func encodeOffer(o Offer) ([]byte, error) { return encode(msgOffer, toWire(o)) }

func encodeState(offers []Offer) ([]byte, error) {
	s := wireState{Offers: make([]wireOffer, len(offers))}
	for i, o := range offers {
		s.Offers[i] = toWire(o)
	}
	return encode(msgState, s)
}

func encodeKeyOp(op keyOp) ([]byte, error)      { return encode(msgKeyOp, op) }
func encodeKeyAck(a keyAck) ([]byte, error)     { return encode(msgKeyAck, a) }
func encodeLeave(l leaveIntent) ([]byte, error) { return encode(msgLeave, l) }

// decode parses and validates a message. It never panics, whatever b is.
func decode(b []byte) (message, error) {
	if len(b) < 3 {
		return message{}, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	if b[0] != wireVersion {
		return message{}, fmt.Errorf("%w: wire version %d, this node speaks %d", errMalformed, b[0], wireVersion)
	}
	m := message{typ: msgType(b[1])}
	body := b[2:]
	if len(b) > maxBytes(m.typ) {
		return message{}, fmt.Errorf("%w: %d bytes exceeds %d", errMalformed, len(b), maxBytes(m.typ))
	}
	var err error
	switch m.typ {
	case msgOffer:
		m.offer, err = decodeOffer(body)
	case msgState:
		m.state, err = decodeState(body)
	case msgKeyOp:
		m.keyOp, err = decodeKeyOp(body)
	case msgKeyAck:
		m.keyAck, err = decodeKeyAck(body)
	case msgLeave:
		m.leave, err = decodeLeave(body)
	default:
		err = fmt.Errorf("unknown message type %d", m.typ)
	}
	if err != nil {
		return message{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return m, nil
}

func decodeOffer(body []byte) (Offer, error) {
	var w wireOffer
	if err := json.Unmarshal(body, &w); err != nil {
		return Offer{}, err
	}
	o := fromWire(w)
	return o, validateShape(&o)
}

func decodeState(body []byte) ([]Offer, error) {
	var s wireState
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, err
	}
	if len(s.Offers) > maxStateOffers {
		return nil, fmt.Errorf("%d offers; at most %d", len(s.Offers), maxStateOffers)
	}
	offers := make([]Offer, len(s.Offers))
	for i, w := range s.Offers {
		offers[i] = fromWire(w)
		if err := validateShape(&offers[i]); err != nil {
			return nil, fmt.Errorf("offer of %q: %w", w.Node, err)
		}
	}
	return offers, nil
}

func decodeKeyOp(body []byte) (keyOp, error) {
	var op keyOp
	if err := json.Unmarshal(body, &op); err != nil {
		return keyOp{}, err
	}
	if op.ID == "" || len(op.ID) > maxKeyOpID {
		return keyOp{}, fmt.Errorf("key operation id of %d bytes", len(op.ID))
	}
	if op.Op != opInstall && op.Op != opUse && op.Op != opRemove {
		return keyOp{}, fmt.Errorf("unknown key operation %q", op.Op)
	}
	if err := memberlist.ValidateKey(op.Key); err != nil {
		return keyOp{}, err
	}
	return op, checkName("node", op.From, maxNameLen)
}

func decodeKeyAck(body []byte) (keyAck, error) {
	var a keyAck
	if err := json.Unmarshal(body, &a); err != nil {
		return keyAck{}, err
	}
	if a.ID == "" || len(a.ID) > maxKeyOpID || len(a.Error) > maxAckError {
		return keyAck{}, fmt.Errorf("key acknowledgement id of %d bytes, error of %d", len(a.ID), len(a.Error))
	}
	return a, checkName("node", a.From, maxNameLen)
}

func decodeLeave(body []byte) (leaveIntent, error) {
	var l leaveIntent
	if err := json.Unmarshal(body, &l); err != nil {
		return leaveIntent{}, err
	}
	return l, checkName("node", l.Node, maxNameLen)
}

func toWire(o Offer) wireOffer {
	w := wireOffer{Node: o.Node, Site: o.Site, Version: o.Version}
	for _, in := range o.Instruments {
		w.Instruments = append(w.Instruments, wireInstrument(in))
	}
	for _, c := range o.Compute {
		w.Compute = append(w.Compute, wireCompute(c))
	}
	return w
}

func fromWire(w wireOffer) Offer {
	o := Offer{Node: w.Node, Site: w.Site, Version: w.Version}
	for _, in := range w.Instruments {
		o.Instruments = append(o.Instruments, Instrument(in))
	}
	for _, c := range w.Compute {
		o.Compute = append(o.Compute, ComputeTarget(c))
	}
	return o
}

// sameContent reports whether two offers say the same thing, whatever
// their versions; it compares encodings so that nil and empty agree.
func sameContent(a, b Offer) bool {
	a.Version, b.Version = 0, 0
	ja, errA := json.Marshal(toWire(a))
	jb, errB := json.Marshal(toWire(b))
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// Node metadata carries only the site name: memberlist limits it to 512
// bytes and resends it with every alive message. Offers travel as
// messages instead.
const metaVersion = 1

func encodeMeta(site string, limit int) []byte {
	b := append([]byte{metaVersion}, site...)
	if len(b) > limit {
		return nil
	}
	return b
}

func decodeMeta(b []byte) string {
	if len(b) < 2 || b[0] != metaVersion || len(b) > 1+maxSiteLen {
		return ""
	}
	site := string(b[1:])
	if checkName("site", site, maxSiteLen) != nil {
		return ""
	}
	return site
}
