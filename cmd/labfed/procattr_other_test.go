//go:build !linux

package main

import "os/exec"

// dieWithTest would make cmd's process die with the test process; only
// Linux offers that, elsewhere t.Cleanup is the only guard.
func dieWithTest(*exec.Cmd) {}
