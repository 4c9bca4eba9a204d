package replica

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker/directory"
)

// fsm adapts the directory to raft.FSM.
type fsm struct {
	dir   *directory.Directory
	state directory.SnapshotStore
	// applied is the index of the last log entry the FSM has processed.
	// raft.Raft.AppliedIndex runs ahead of the FSM (it counts entries handed
	// to it, not entries applied), so linearizable reads wait on this.
	applied atomic.Uint64

	// changed is closed and replaced after every batch that applied a
	// command and after every restore, waking Changed's watchers.
	changedMu sync.Mutex
	changed   chan struct{}
}

// changedCh returns the channel the next change closes.
func (f *fsm) changedCh() <-chan struct{} {
	f.changedMu.Lock()
	defer f.changedMu.Unlock()
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

func (f *fsm) notify() {
	f.changedMu.Lock()
	defer f.changedMu.Unlock()
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply decodes and applies one command.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a run of committed entries in one state transaction.
// An entry that cannot be decoded is answered with an error on every
// replica alike. Configuration entries change nothing here.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var cmds []*directory.Command
	var at []int
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		cmd, err := directory.DecodeCommand(l.Data)
		if err != nil {
			out[i] = directory.Result{Err: err}
			continue
		}
		cmds = append(cmds, cmd)
		at = append(at, i)
	}
	if len(cmds) > 0 {
		res, err := f.dir.ApplyBatch(cmds)
		if err != nil {
			// The state store itself failed (disk full, I/O error). Going
			// on would let this replica diverge from the others, so stop.
			panic(fmt.Sprintf("replica: directory state store failed; stopping this node: %v", err))
		}
		for j, i := range at {
			out[i] = res[j]
		}
	}
	if len(logs) > 0 {
		f.applied.Store(logs[len(logs)-1].Index)
	}
	if len(cmds) > 0 {
		f.notify()
	}
	return out
}

// snapshotMagic starts every snapshot: the format version and, after it, the
// index of the last entry the snapshot includes, so a restored replica knows
// how far its state goes.
const snapshotMagic = "labfed-dir-v1\n"

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	sn, err := f.state.Snapshot()
	if err != nil {
		return nil, err
	}
	// Snapshot runs on the FSM goroutine between applies, so applied is
	// exactly the state the pinned view holds.
	return &fsmSnapshot{sn: sn, index: f.applied.Load()}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReader(rc)
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return fmt.Errorf("replica: restore: read snapshot header: %w", err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return errors.New("replica: restore: not a labfed directory snapshot (bad header)")
	}
	index := binary.BigEndian.Uint64(hdr[len(snapshotMagic):])
	if err := f.state.Restore(br); err != nil {
		return err
	}
	f.applied.Store(index)
	f.notify()
	return nil
}

type fsmSnapshot struct {
	sn    directory.Snapshot
	index uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	hdr := make([]byte, 0, len(snapshotMagic)+8)
	hdr = append(hdr, snapshotMagic...)
	hdr = binary.BigEndian.AppendUint64(hdr, s.index)
	bw := bufio.NewWriterSize(sink, 1<<20)
	_, err := bw.Write(hdr)
	if err == nil {
		_, err = s.sn.WriteTo(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("replica: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.sn.Release() }
