package cli

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrRunning says that another process holds a program's lock.
var ErrRunning = errors.New("already running")

// LockOne makes sure this is the only process on this machine running
// what (a worker process's name) for broker (its URL): it holds a lock
// file in the temporary directory until release, or until the process
// ends however it ends (the kernel lets go of it). A second process gets
// ErrRunning with the holder's pid. A pool that restarts while the broker
// is away cannot tell a worker process that is reconnecting from one that
// is gone, and launches another: the lock turns the second one away
// instead of letting two run the same workers.
func LockOne(what, broker string) (release func(), err error) {
	dir := filepath.Join(os.TempDir(), "hvmind-locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	sum := sha256.Sum256([]byte(broker))
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r == ' ' {
			return '_'
		}
		return r
	}, what)
	path := filepath.Join(dir, fmt.Sprintf("%s-%x.lock", safe, sum[:6]))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	if err := lockFile(f); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("%w: %s on %s (pid %s; lock %s)", ErrRunning, what, broker, strings.TrimSpace(string(pid)), path)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = unlockFile(f); f.Close() }, nil
}
