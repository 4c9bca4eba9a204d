//go:build !linux

package replica

import "os"

// datasync flushes f's data to the disk the way bbolt does outside Linux.
func datasync(f *os.File) error { return f.Sync() }
