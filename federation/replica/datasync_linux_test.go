package replica

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync flushes f's data to the disk the way bbolt does on Linux.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
