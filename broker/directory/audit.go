package directory

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/audit"
)

// The audit log lives in the directory's state, so it is ordered by Raft,
// replicated, and part of every snapshot. Entries are keyed by their
// sequence number; the indexes map user, site, resource and time to
// sequence numbers.
const (
	bAudit           = "audit"             // seq → entry
	bAuditByUser     = "audit_by_user"     // user\x00seq → time ns (actor and subject)
	bAuditBySite     = "audit_by_site"     // site\x00seq → time ns (site and actor site)
	bAuditByResource = "audit_by_resource" // resource\x00seq → time ns
	bAuditByTime     = "audit_by_time"     // time ns\x00seq → time ns
	bAuditSources    = "audit_sources"     // source → last source_seq recorded
	metaAuditHead    = "audit_head"
	metaAuditCheck   = "audit_checkpoint"
)

// MaxArchive bounds how many entries one ArchiveAudit removes, so one
// command stays one modest transaction.
const MaxArchive = 100000

// ArchiveAudit removes the oldest entries, through Through, once they are
// safely archived elsewhere. Hash must be entry Through's hash: it is the
// checkpoint the rest of the chain is verified from, and it makes sure
// the archive and the log agree on what was removed.
type ArchiveAudit struct {
	// From must be the first entry after the checkpoint: the archive
	// holds every entry from there, none skipped.
	From    uint64 `json:"from"`
	Through uint64 `json:"through"`
	Hash    string `json:"hash"`
}

// AuditCheckpoint is the last archived entry: the log holds the entries
// after it, and VerifyAudit starts from its hash.
type AuditCheckpoint struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"`
}

func readCheckpoint(tx Tx) (AuditCheckpoint, error) {
	var c AuditCheckpoint
	if b := tx.Get(bMeta, metaAuditCheck); b != nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("directory: corrupt audit checkpoint: %w", err)
		}
	}
	return c, nil
}

func (a *applier) archiveAudit(c *ArchiveAudit) (any, error) {
	cp, err := readCheckpoint(a.tx)
	if err != nil {
		return nil, err
	}
	head, err := readHead(a.tx)
	if err != nil {
		return nil, err
	}
	switch {
	case c.From != cp.Seq+1:
		return nil, broker.Errorf(broker.ErrPrecondition, "the archive starts at entry %d, but the log's next entry is %d; export again from the checkpoint", c.From, cp.Seq+1)
	case c.Through <= cp.Seq:
		return nil, broker.Errorf(broker.ErrInvalid, "entries through %d are already archived (checkpoint %d)", c.Through, cp.Seq)
	case c.Through > head.Seq:
		return nil, broker.Errorf(broker.ErrInvalid, "entry %d does not exist yet (the log ends at %d)", c.Through, head.Seq)
	case c.Through-cp.Seq > MaxArchive:
		return nil, broker.Errorf(broker.ErrInvalid, "archive at most %d entries at a time (through %d)", MaxArchive, cp.Seq+MaxArchive)
	}
	var last audit.Entry
	for seq := cp.Seq + 1; seq <= c.Through; seq++ {
		k := seqKey(seq)
		var e audit.Entry
		if err := json.Unmarshal(a.tx.Get(bAudit, k), &e); err != nil {
			return nil, fmt.Errorf("directory: corrupt audit entry %d: %w", seq, err)
		}
		for _, ix := range indexKeys(&e) {
			if err := a.tx.Delete(ix[0], k2(ix[1], k)); err != nil {
				return nil, err
			}
		}
		if err := a.tx.Delete(bAudit, k); err != nil {
			return nil, err
		}
		last = e
	}
	if last.Hash != c.Hash {
		return nil, broker.Errorf(broker.ErrPrecondition, "entry %d hashes to %s, not %s: the archive does not match the log; export again", c.Through, short(last.Hash), short(c.Hash))
	}
	ncp := &AuditCheckpoint{Seq: c.Through, Hash: c.Hash, Time: last.Time}
	return ncp, putJSON(a.tx, bMeta, metaAuditCheck, ncp)
}

// AuditCheckpoint returns the last archived entry (zero when none was).
func (d *Directory) AuditCheckpoint() (c AuditCheckpoint, err error) {
	err = d.store.View(func(tx Tx) (err error) { c, err = readCheckpoint(tx); return err })
	return c, err
}

func auditBuckets() []string {
	return []string{bAudit, bAuditByUser, bAuditBySite, bAuditByResource, bAuditByTime, bAuditSources}
}

// AppendAudit records entries that a broker or agent submits: decisions
// made outside the directory (tokens, logins refused, sessions, jobs). An
// entry whose (Source, SourceSeq) is already recorded is skipped, which
// makes an agent's redelivery harmless.
type AppendAudit struct {
	Entries []audit.Entry `json:"entries"`
}

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func seqKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

func readHead(tx Tx) (auditHead, error) {
	var h auditHead
	if b := tx.Get(bMeta, metaAuditHead); b != nil {
		if err := json.Unmarshal(b, &h); err != nil {
			return h, fmt.Errorf("directory: corrupt audit head: %w", err)
		}
	}
	return h, nil
}

// appendEntries chains entries onto the log and indexes them. It returns
// how many were recorded (duplicates from a source are skipped).
func appendEntries(tx Tx, entries []audit.Entry) (int, error) {
	head, err := readHead(tx)
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range entries {
		e := entries[i]
		if e.Source != "" && e.SourceSeq > 0 {
			var last uint64
			if b := tx.Get(bAuditSources, e.Source); b != nil {
				fmt.Sscan(string(b), &last)
			}
			if e.SourceSeq <= last {
				continue // delivered before
			}
			if err := tx.Put(bAuditSources, e.Source, []byte(fmt.Sprint(e.SourceSeq))); err != nil {
				return n, err
			}
		}
		audit.Link(head.Seq, head.Hash, &e)
		b, err := json.Marshal(&e)
		if err != nil {
			return n, err
		}
		k := seqKey(e.Seq)
		if err := tx.Put(bAudit, k, b); err != nil {
			return n, err
		}
		// The index values hold the entry's time, so a query for a time
		// range skips the rest without reading them.
		tk := []byte(timeKey(e.Time))
		for _, ix := range indexKeys(&e) {
			if err := tx.Put(ix[0], k2(ix[1], k), tk); err != nil {
				return n, err
			}
		}
		head = auditHead{Seq: e.Seq, Hash: e.Hash}
		n++
	}
	hb, _ := json.Marshal(head)
	return n, tx.Put(bMeta, metaAuditHead, hb)
}

// indexKeys lists the (bucket, value) index entries of e.
func indexKeys(e *audit.Entry) [][2]string {
	var out [][2]string
	add := func(bucket, v string) {
		for _, x := range out {
			if x[0] == bucket && x[1] == v {
				return
			}
		}
		if v != "" {
			out = append(out, [2]string{bucket, v})
		}
	}
	add(bAuditByUser, e.Actor)
	add(bAuditByUser, e.Subject)
	add(bAuditBySite, e.Site)
	add(bAuditBySite, e.ActorSite)
	add(bAuditByResource, e.Resource)
	add(bAuditByTime, timeKey(e.Time))
	return out
}

func timeKey(t time.Time) string { return fmt.Sprintf("%020d", max(t.UnixNano(), 0)) }

// appendAudit checks the submitted entries and returns how many are new
// (not already recorded from their source). They are written by
// ApplyBatch, outside the command's overlay, like every command's own
// entry.
func (a *applier) appendAudit(c *AppendAudit) (any, error) {
	if len(c.Entries) == 0 {
		return nil, broker.Errorf(broker.ErrInvalid, "no audit entries to append")
	}
	last := map[string]uint64{} // per source, within this batch
	fresh := 0
	for i := range c.Entries {
		e := &c.Entries[i]
		if err := e.Validate(); err != nil {
			return nil, broker.Errorf(broker.ErrInvalid, "audit entry %d: %v", i+1, err)
		}
		if e.Time.Before(a.now.Add(-audit.MaxQueued)) || e.Time.After(a.now.Add(audit.MaxSkew)) {
			return nil, broker.Errorf(broker.ErrInvalid, "audit entry %d is timed %s, too far from now (%s); check the recorder's clock", i+1, e.Time.UTC().Format(time.RFC3339), a.now.Format(time.RFC3339))
		}
		if e.Source == "" || e.SourceSeq == 0 {
			fresh++
			continue
		}
		seen, ok := last[e.Source]
		if !ok {
			if b := a.tx.Get(bAuditSources, e.Source); b != nil {
				fmt.Sscan(string(b), &seen)
			}
		}
		if e.SourceSeq > seen {
			fresh++
			seen = e.SourceSeq
		}
		last[e.Source] = seen
	}
	return fresh, nil
}

// auditCommand writes the entries of cmd: the submitted ones of an
// AppendAudit that applied, or the command's own entry.
func auditCommand(tx Tx, cmd *Command, v any, err error) error {
	if cmd.AppendAudit != nil {
		if err != nil {
			return nil // refused as a whole; nothing to record
		}
		_, werr := appendEntries(tx, cmd.AppendAudit.Entries)
		return werr
	}
	_, werr := appendEntries(tx, []audit.Entry{commandEntry(tx, cmd, v, err)})
	return werr
}

// ---- the entry of each directory command ----

// commandEntry describes an applied (or refused) directory command as an
// audit entry. It reads only the command, its result and the state, so
// every replica writes the same entry.
func commandEntry(tx Tx, c *Command, v any, err error) audit.Entry {
	e := audit.Entry{Time: c.Time.UTC(), Actor: c.Actor, Decision: audit.Allow}
	if e.Actor == "" {
		e.Actor = "system"
	}
	e.ActorSite = actorSite(tx, c.Actor)
	if err != nil {
		e.Decision, e.Reason = audit.Deny, oneLine(err.Error())
	}
	switch {
	case c.AddSite != nil:
		e.Action, e.Site, e.Resource = "site.add", c.AddSite.Name, c.AddSite.Name
		e.Details = map[string]string{"uid_range": c.AddSite.UIDRange.String(), "gid_range": c.AddSite.GIDRange.String()}
	case c.UpdateSite != nil:
		e.Action, e.Site, e.Resource = "site.update", c.UpdateSite.Name, c.UpdateSite.Name
	case c.AddUser != nil:
		e.Action, e.Subject, e.Site = "user.add", c.AddUser.Name, c.AddUser.Home
		e.Details = map[string]string{"roles": strings.Join(c.AddUser.Roles, ",")}
	case c.UpdateUser != nil:
		e.Action, e.Subject, e.Site = "user.update", c.UpdateUser.Name, userHome(tx, c.UpdateUser.Name)
		e.Details = map[string]string{}
		if c.UpdateUser.Roles != nil {
			e.Details["roles"] = strings.Join(*c.UpdateUser.Roles, ",")
		}
		if c.UpdateUser.Status != nil {
			e.Details["status"] = *c.UpdateUser.Status
		}
	case c.RemoveUser != nil:
		e.Action, e.Subject, e.Site = "user.remove", c.RemoveUser.Name, userHome(tx, c.RemoveUser.Name)
	case c.AddProject != nil:
		e.Action, e.Resource = "project.add", "project:"+c.AddProject.Name
	case c.AddMember != nil:
		e.Action, e.Subject, e.Resource = "project.add_member", c.AddMember.User, "project:"+c.AddMember.Project
	case c.RemoveMember != nil:
		e.Action, e.Subject, e.Resource = "project.remove_member", c.RemoveMember.User, "project:"+c.RemoveMember.Project
	case c.AddGrant != nil:
		e.Action, e.Resource = "grant.add", c.AddGrant.Resource
		e.Site, _, _ = strings.Cut(c.AddGrant.Resource, "/")
		if u, ok := strings.CutPrefix(c.AddGrant.Subject, "user:"); ok {
			e.Subject = u
		}
		e.Details = map[string]string{"subject": c.AddGrant.Subject, "actions": strings.Join(c.AddGrant.Actions, ",")}
		if g, ok := v.(*Grant); ok && g != nil {
			e.Grants = []string{g.ID}
		}
	case c.RevokeGrant != nil:
		e.Action, e.Grants, e.Reason = "grant.revoke", []string{c.RevokeGrant.ID}, joinReason(e.Reason, c.RevokeGrant.Reason)
		if g, ok := v.(*Grant); ok && g != nil {
			e.Resource = g.Resource
			e.Site, _, _ = strings.Cut(g.Resource, "/")
			if u, ok := strings.CutPrefix(g.Subject, "user:"); ok {
				e.Subject = u
			}
		}
	case c.PinAccount != nil:
		e.Action, e.Subject, e.Site = "account.pin", c.PinAccount.User, c.PinAccount.Site
		e.Details = map[string]string{"uid": fmt.Sprint(c.PinAccount.UID)}
	case c.RegisterNode != nil:
		e.Action, e.Site, e.Resource = "node.register", c.RegisterNode.Node.Site, c.RegisterNode.Node.ID
	case c.DeregisterNode != nil:
		e.Action, e.Resource = "node.deregister", c.DeregisterNode.ID
	case c.CreateSession != nil:
		s := c.CreateSession.Session
		e.Action, e.Subject, e.Site = audit.ActionLogin, s.User, s.Site
		e.Details = map[string]string{"session": short(s.ID), "expires": s.Expires.UTC().Format(time.RFC3339)}
		if s.Via != nil {
			e.Details["issuer"] = s.Via.Issuer
		}
	case c.RevokeSessions != nil:
		e.Action, e.Subject = audit.ActionLogout, c.RevokeSessions.User
		if c.RevokeSessions.ID != "" {
			e.Details = map[string]string{"session": short(c.RevokeSessions.ID)}
		}
	case c.PublishKey != nil:
		e.Action, e.Resource = "key.publish", c.PublishKey.KID
		e.Details = map[string]string{"issuer": c.PublishKey.Issuer}
	case c.RevokeKey != nil:
		e.Action, e.Resource, e.Reason = "key.revoke", c.RevokeKey.KID, joinReason(e.Reason, c.RevokeKey.Reason)
	case c.AddLock != nil:
		e.Action, e.Reason = "token.revoke", joinReason(e.Reason, c.AddLock.Reason)
		e.Details = map[string]string{"kind": c.AddLock.Kind}
		if c.AddLock.Kind == LockUser {
			e.Subject = c.AddLock.Value
		} else {
			e.Token = c.AddLock.Value
		}
		if l, ok := v.(*Lock); ok && l != nil {
			e.Details["lock"] = l.ID
		}
	case c.ArchiveAudit != nil:
		e.Action = "audit.archive"
		e.Details = map[string]string{"through": fmt.Sprint(c.ArchiveAudit.Through), "hash": c.ArchiveAudit.Hash}
	default:
		e.Action = "directory.unknown"
	}
	if len(e.Details) == 0 {
		e.Details = nil
	}
	return e
}

// actorSite is the site an actor comes from: a certificate identity
// (site/kind/name) names it; a user's is their home.
func actorSite(tx Tx, actor string) string {
	if site, _, ok := strings.Cut(actor, "/"); ok {
		return site
	}
	return userHome(tx, actor)
}

func userHome(tx Tx, name string) string {
	if name == "" {
		return ""
	}
	u, err := getJSON[User](tx, bUsers, name)
	if err != nil || u == nil {
		return ""
	}
	return u.Home
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func joinReason(refusal, given string) string {
	switch {
	case refusal == "":
		return given
	case given == "":
		return refusal
	}
	return refusal + " (" + given + ")"
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ---- queries ----

// AuditHead returns the last entry's sequence number and hash.
func (d *Directory) AuditHead() (seq uint64, hash string, err error) {
	err = d.store.View(func(tx Tx) error {
		h, err := readHead(tx)
		seq, hash = h.Seq, h.Hash
		return err
	})
	return seq, hash, err
}

// AuditEntry returns entry seq as this replica holds it.
func (d *Directory) AuditEntry(seq uint64) (*audit.Entry, error) {
	return get[audit.Entry](d, bAudit, seqKey(seq), broker.Errorf(broker.ErrNotFound, "audit entry %d is not in this node's log (archived, or not yet applied)", seq))
}

// AuditQuery selects entries: Filter, the visibility rule keep (nil keeps
// all), entries after After (a sequence number, for paging and following),
// at most Limit (0: no limit), newest first when Newest.
type AuditQuery struct {
	Filter audit.Filter
	Keep   func(*audit.Entry) bool
	After  uint64
	// Through, when set, leaves out entries after it (Follow reads the
	// head first, then the entries up to it, so none is skipped).
	Through uint64
	Limit   int
	Newest  bool
}

// seeker is the optional ability of a transaction to iterate from a key.
type seeker interface {
	Seek(bucket, from string, reverse bool, fn func(string, []byte) error) error
}

// AuditEntries runs q. It walks the most selective index the filter names
// (user, resource, site), else the time index when a start time is given,
// else the log itself.
func (d *Directory) AuditEntries(q AuditQuery) ([]*audit.Entry, error) {
	out := []*audit.Entry{}
	byTime, err := d.auditScan(q, func(e *audit.Entry) error { out = append(out, e); return nil })
	if byTime {
		slices.SortFunc(out, func(a, b *audit.Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	}
	return out, err
}

// AuditEach calls fn for each entry AuditEntries would return, without
// holding them all: in sequence order, except for an unbounded time range
// (no Limit, no After, oldest first), which comes in time order. An error
// from fn stops the walk and is returned.
func (d *Directory) AuditEach(q AuditQuery, fn func(*audit.Entry) error) error {
	_, err := d.auditScan(q, fn)
	return err
}

// auditScan walks q's entries; byTime says it went through the time index.
func (d *Directory) auditScan(q AuditQuery, visit func(*audit.Entry) error) (byTime bool, err error) {
	n := 0
	err = d.store.View(func(tx Tx) error {
		sk, ok := tx.(seeker)
		if !ok {
			return errors.New("directory: the store cannot seek; audit queries need it")
		}
		take := func(seq string) error {
			b := tx.Get(bAudit, seq)
			if b == nil {
				return fmt.Errorf("directory: audit index names entry %s, which does not exist", seq)
			}
			var e audit.Entry
			if err := json.Unmarshal(b, &e); err != nil {
				return fmt.Errorf("directory: corrupt audit entry %s: %w", seq, err)
			}
			if e.Seq <= q.After || (q.Through > 0 && e.Seq > q.Through) || !q.Filter.Match(&e) || (q.Keep != nil && !q.Keep(&e)) {
				return nil
			}
			if err := visit(&e); err != nil {
				return err
			}
			n++
			if q.Limit > 0 && n >= q.Limit {
				return errStop
			}
			return nil
		}
		f := q.Filter
		var bucket, value string
		switch {
		case f.User != "":
			bucket, value = bAuditByUser, f.User
		case f.Resource != "" && !hasBelow(sk, f.Resource):
			bucket, value = bAuditByResource, f.Resource
		case f.Resource != "" && strings.Contains(f.Resource, "/"):
			// Entries below the resource too: its site's index has them all,
			// in order.
			bucket, value = bAuditBySite, f.Resource[:strings.IndexByte(f.Resource, '/')]
		case f.Site != "":
			bucket, value = bAuditBySite, f.Site
		}
		var err error
		switch {
		case bucket != "":
			prefix := value + "\x00"
			from := prefix + seqKey(q.After+1)
			if q.Newest {
				from = prefix + seqKey(^uint64(0)>>1)
			}
			since, until := "", ""
			if !f.Since.IsZero() {
				since = timeKey(f.Since)
			}
			if !f.Until.IsZero() {
				until = timeKey(f.Until)
			}
			err = sk.Seek(bucket, from, q.Newest, func(k string, v []byte) error {
				if !strings.HasPrefix(k, prefix) {
					return errStop
				}
				seq := k[len(prefix):]
				if q.Newest && seq <= seqKey(q.After) {
					return errStop
				}
				if t := string(v); len(t) == 20 && ((since != "" && t < since) || (until != "" && t >= until)) {
					return nil // outside the time range: not even read
				}
				return take(seq)
			})
		case !f.Since.IsZero() && !q.Newest && q.After == 0 && q.Limit == 0:
			// Everything in a time range (usage): through the time index,
			// in time order. With a limit or a cursor the log is walked in
			// sequence order instead, since the two differ for entries
			// that arrive late.
			byTime = true
			err = sk.Seek(bAuditByTime, timeKey(f.Since), false, func(k string, _ []byte) error {
				if !f.Until.IsZero() && k >= timeKey(f.Until) {
					return errStop
				}
				return take(k[strings.IndexByte(k, 0)+1:])
			})
		default:
			from := seqKey(q.After + 1)
			if q.Newest {
				from = ""
			}
			err = sk.Seek(bAudit, from, q.Newest, func(k string, _ []byte) error {
				if q.Newest && k <= seqKey(q.After) {
					return errStop
				}
				return take(k)
			})
		}
		if errors.Is(err, errStop) {
			return nil
		}
		return err
	})
	return byTime, err
}

// hasBelow reports whether any entry names a resource below r (r/…).
func hasBelow(sk seeker, r string) bool {
	below := false
	_ = sk.Seek(bAuditByResource, r+"/", false, func(k string, _ []byte) error {
		below = strings.HasPrefix(k, r+"/")
		return errStop
	})
	return below
}

// VerifyAudit recomputes the hash chain from entry 1 and returns the first
// entry that does not match, with why; (0, nil) when the chain is intact.
// checked is how many entries it read.
func (d *Directory) VerifyAudit() (bad uint64, why error, checked uint64, err error) {
	err = d.store.View(func(tx Tx) error {
		head, err := readHead(tx)
		if err != nil {
			return err
		}
		cp, err := readCheckpoint(tx)
		if err != nil {
			return err
		}
		prevSeq, prevHash := cp.Seq, cp.Hash
		ferr := tx.ForEach(bAudit, "", func(k string, b []byte) error {
			var e audit.Entry
			if err := json.Unmarshal(b, &e); err != nil {
				bad, why = prevSeq+1, fmt.Errorf("entry %s cannot be decoded (%v): its bytes were changed", strings.TrimLeft(k, "0"), err)
				return errStop
			}
			if k != seqKey(e.Seq) {
				bad, why = prevSeq+1, fmt.Errorf("the entry stored as %s says it is %d: its bytes were changed", strings.TrimLeft(k, "0"), e.Seq)
				return errStop
			}
			if err := audit.Check(prevSeq, prevHash, &e); err != nil {
				bad, why = e.Seq, err
				return errStop
			}
			prevSeq, prevHash = e.Seq, e.Hash
			checked++
			return nil
		})
		if ferr != nil && !errors.Is(ferr, errStop) {
			return ferr
		}
		if why == nil && (prevSeq != head.Seq || prevHash != head.Hash) {
			bad, why = prevSeq+1, fmt.Errorf("the log ends at entry %d, but the recorded head is entry %d (%s): entries were removed", prevSeq, head.Seq, short(head.Hash))
		}
		return nil
	})
	return bad, why, checked, err
}
