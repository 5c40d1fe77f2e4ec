//go:build !linux

package worker

import "time"

func preciseThread() *threadMode { return &threadMode{} }

// threadMode is the timer thread's scheduling; elsewhere than Linux the
// thread is left as it is.
type threadMode struct{}

func (m *threadMode) budget(now int64) {}
func (m *threadMode) done()            {}

func kernelSleep(d time.Duration) { time.Sleep(d) }
