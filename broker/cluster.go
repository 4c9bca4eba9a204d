package broker

import "fmt"

// Peer is one server in the Raft configuration.
type Peer struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // "voter" or "nonvoter"
	Leader   bool   `json:"leader"`
}

// NodeStatus describes one broker node's view of replication.
type NodeStatus struct {
	ID                string
	Site              string
	State             string // Leader, Follower, Candidate, Shutdown
	LeaderID          string
	AppliedIndex      uint64
	CommitIndex       uint64
	LastSnapshotIndex uint64
}

// NotLeaderError is returned by writes and linearizable reads on a node that
// is not the leader. Nothing was applied, so the request may be sent to the
// leader at LeaderAPI.
type NotLeaderError struct {
	LeaderID  string
	LeaderAPI string // empty when no leader is known
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAPI == "" {
		return "no leader is elected right now; retry in a few seconds"
	}
	return fmt.Sprintf("this node is not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAPI)
}

// Unwrap makes NotLeaderError an unavailable error: retrying is safe.
func (e *NotLeaderError) Unwrap() error { return ErrUnavailable }
