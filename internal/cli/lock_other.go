//go:build !unix

package cli

import "os"

// Elsewhere than on unix, no lock: a second process is not turned away.
func lockFile(*os.File) error   { return nil }
func unlockFile(*os.File) error { return nil }
