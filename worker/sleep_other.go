//go:build !linux

package worker

import "time"

func preciseThread() func() { return func() {} }

func kernelSleep(d time.Duration) { time.Sleep(d) }
