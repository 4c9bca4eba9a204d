package directory

import (
	"errors"
	"slices"
	"strings"
)

// ApplyBatch applies commands in order inside one store transaction, which
// costs one commit for the whole batch instead of one per command. Each
// command still applies all-or-nothing: its writes are buffered and reach
// the transaction only if it succeeds. Results correspond to cmds by index.
//
// An error from the store itself (not from a command) is returned as err;
// the batch is then not committed at all.
func (d *Directory) ApplyBatch(cmds []*Command) (results []Result, err error) {
	results = make([]Result, len(cmds))
	err = d.store.Update(func(tx Tx) error {
		for i, cmd := range cmds {
			ov := newOverlay(tx)
			a := applier{tx: ov, now: cmd.Time.UTC(), actor: cmd.Actor}
			v, err := a.apply(cmd)
			if err == nil {
				err = ov.flush()
				if err != nil {
					return err
				}
			}
			results[i] = Result{Value: v, Err: err}
			// Every command leaves its audit entry, applied or refused,
			// in the same transaction: a change is never without one.
			if werr := auditCommand(tx, cmd, v, err); werr != nil {
				return werr
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// overlay buffers one command's writes on top of a transaction.
type overlay struct {
	base Tx
	// writes[bucket][key] is the new value, or nil for a deletion.
	writes map[string]map[string][]byte
}

func newOverlay(base Tx) *overlay {
	return &overlay{base: base, writes: map[string]map[string][]byte{}}
}

func (o *overlay) Get(bucket, key string) []byte {
	if w, ok := o.writes[bucket][key]; ok {
		return w
	}
	return o.base.Get(bucket, key)
}

func (o *overlay) put(bucket, key string, v []byte) {
	m := o.writes[bucket]
	if m == nil {
		m = map[string][]byte{}
		o.writes[bucket] = m
	}
	m[key] = v
}

func (o *overlay) Put(bucket, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	o.put(bucket, key, slices.Clone(value))
	return nil
}

func (o *overlay) Delete(bucket, key string) error {
	o.put(bucket, key, nil)
	return nil
}

// ForEach merges the base's keys with the buffered writes, in key order.
func (o *overlay) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	w := o.writes[bucket]
	if len(w) == 0 {
		return o.base.ForEach(bucket, prefix, fn)
	}
	type kv struct {
		k string
		v []byte
	}
	var merged []kv
	err := o.base.ForEach(bucket, prefix, func(k string, v []byte) error {
		if _, shadowed := w[k]; !shadowed {
			merged = append(merged, kv{k, slices.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, v := range w {
		if v != nil && strings.HasPrefix(k, prefix) {
			merged = append(merged, kv{k, v})
		}
	}
	// Sorting makes the order independent of map iteration.
	slices.SortFunc(merged, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	for _, e := range merged {
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// flush writes the buffered changes into the base transaction, buckets and
// keys in sorted order.
func (o *overlay) flush() error {
	buckets := make([]string, 0, len(o.writes))
	for b := range o.writes {
		buckets = append(buckets, b)
	}
	slices.Sort(buckets)
	var errs []error
	for _, b := range buckets {
		keys := make([]string, 0, len(o.writes[b]))
		for k := range o.writes[b] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if v := o.writes[b][k]; v == nil {
				errs = append(errs, o.base.Delete(b, k))
			} else {
				errs = append(errs, o.base.Put(b, k, v))
			}
		}
	}
	return errors.Join(errs...)
}
