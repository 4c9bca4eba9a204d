package gossip

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
)

// KeyResult tells how a key operation went across the federation.
type KeyResult struct {
	// Members is how many live members were asked, this node included.
	Members int
	// Acked is how many applied the change, this node included.
	Acked int
	// Failed maps a member that refused, or could not be sent the request,
	// to why.
	Failed map[string]string
	// Missing lists, sorted, the members that did not answer in time.
	Missing []string
}

var (
	// ErrPlaintext is returned by key operations on a node gossiping
	// without encryption.
	ErrPlaintext = errors.New("gossip runs without encryption (dev_plaintext): there are no keys to manage; restart with keys")
	// ErrIncomplete is returned, with the KeyResult, when some members did
	// not apply a key operation; repeat it once they are reachable.
	ErrIncomplete = errors.New("not every member applied the key change")
)

// InstallKey adds key to every member's keyring. Members then decrypt with
// it but do not encrypt with it yet: rotate with InstallKey, UseKey,
// RemoveKey of the old key, each acknowledged by every member before the
// next.
func (n *Node) InstallKey(key []byte) (KeyResult, error) { return n.keyOp(opInstall, key) }

// UseKey makes key, which must be installed, the primary key that
// encrypts, on every member.
func (n *Node) UseKey(key []byte) (KeyResult, error) { return n.keyOp(opUse, key) }

// RemoveKey removes key from every member's keyring; no member removes its
// primary key.
func (n *Node) RemoveKey(key []byte) (KeyResult, error) { return n.keyOp(opRemove, key) }

// Keys returns this node's keys, the primary first; nil without encryption.
func (n *Node) Keys() [][]byte {
	if n.keyring == nil {
		return nil
	}
	var keys [][]byte
	for _, k := range n.keyring.GetKeys() {
		keys = append(keys, slices.Clone(k))
	}
	return keys
}

// keyOp applies an operation here, then sends it to every live member
// over memberlist's encrypted streams and waits up to KeyTimeout for their
// answers. Like Serf's KeyManager, it does not retry: the result says who
// is missing, and the operations are idempotent, so they can be repeated.
func (n *Node) keyOp(op string, key []byte) (KeyResult, error) {
	if n.keyring == nil {
		return KeyResult{}, ErrPlaintext
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return KeyResult{}, fmt.Errorf("%s key: %w", op, err)
	}
	if err := n.applyKeyOp(op, key); err != nil {
		return KeyResult{}, fmt.Errorf("%s key on this node: %w", op, err)
	}
	req := keyOp{ID: newOpID(), Op: op, Key: key, From: n.cfg.Name}
	msg, err := encodeKeyOp(req)
	if err != nil {
		return KeyResult{}, err
	}
	n.mu.Lock()
	targets := n.liveMembersLocked()
	acks := make(chan keyAck, 2*len(targets))
	n.pending[req.ID] = acks
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.pending, req.ID)
		n.mu.Unlock()
	}()

	for _, m := range targets {
		go func() {
			if err := n.ml.SendReliable(m.mlNode(), msg); err != nil {
				acks <- keyAck{ID: req.ID, From: m.name, Error: "could not send the request: " + err.Error()}
			}
		}()
	}
	res := n.collectAcks(targets, acks)
	if len(res.Failed) > 0 || len(res.Missing) > 0 {
		return res, fmt.Errorf("%s key: %w: %d of %d members applied it (failed: %d, no answer: %v)",
			op, ErrIncomplete, res.Acked, res.Members, len(res.Failed), res.Missing)
	}
	return res, nil
}

func (n *Node) collectAcks(targets []*member, acks <-chan keyAck) KeyResult {
	res := KeyResult{Members: len(targets) + 1, Acked: 1, Failed: map[string]string{}}
	waiting := map[string]bool{}
	for _, m := range targets {
		waiting[m.name] = true
	}
	timeout := time.NewTimer(n.cfg.KeyTimeout)
	defer timeout.Stop()
	for len(waiting) > 0 {
		select {
		case a := <-acks:
			if !waiting[a.From] {
				continue
			}
			delete(waiting, a.From)
			if a.Error == "" {
				res.Acked++
			} else {
				res.Failed[a.From] = a.Error
			}
		case <-timeout.C:
			for name := range waiting {
				res.Missing = append(res.Missing, name)
			}
			sort.Strings(res.Missing)
			return res
		case <-n.stop:
			return res
		}
	}
	return res
}

func (n *Node) applyKeyOp(op string, key []byte) error {
	if n.keyring == nil {
		return ErrPlaintext
	}
	var err error
	switch op {
	case opInstall:
		err = n.keyring.AddKey(key)
	case opUse:
		err = n.keyring.UseKey(key)
	case opRemove:
		err = n.keyring.RemoveKey(key)
	default:
		return fmt.Errorf("unknown key operation %q", op)
	}
	if err == nil && n.cfg.KeysChanged != nil {
		n.cfg.KeysChanged(n.Keys())
	}
	return err
}

// handleKeyOp applies a member's request and answers it. It runs on the
// worker: answering dials the requester.
func (n *Node) handleKeyOp(req keyOp) {
	ack := keyAck{ID: req.ID, From: n.cfg.Name}
	if err := n.applyKeyOp(req.Op, req.Key); err != nil {
		ack.Error = err.Error()
		if len(ack.Error) > maxAckError {
			ack.Error = ack.Error[:maxAckError]
		}
	}
	n.log.Info("key operation requested", "op", req.Op, "by", req.From, "err", ack.Error)
	n.mu.Lock()
	to := n.members[req.From]
	var dest *memberlist.Node
	if to != nil && to.live() {
		dest = to.mlNode()
	}
	n.mu.Unlock()
	if dest == nil {
		n.log.Warn("cannot answer a key operation from an unknown member", "by", req.From)
		return
	}
	msg, err := encodeKeyAck(ack)
	if err == nil {
		err = n.ml.SendReliable(dest, msg)
	}
	if err != nil {
		n.log.Warn("answer key operation", "by", req.From, "err", err)
	}
}

// handleKeyAck hands an answer to the operation waiting for it, if any.
func (n *Node) handleKeyAck(a keyAck) {
	n.mu.Lock()
	ch := n.pending[a.ID]
	n.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- a:
	default:
	}
}

func newOpID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
