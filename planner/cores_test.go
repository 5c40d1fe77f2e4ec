package planner

import (
	"testing"

	"github.com/hvmind/hvmind/job"
	"github.com/hvmind/hvmind/serverpool"
	"github.com/hvmind/hvmind/world/game"
)

func TestChooseCores(t *testing.T) {
	t.Parallel()
	host := func(threads, cores int) serverpool.Host {
		return serverpool.Host{MaxThreads: threads, Cores: cores}
	}
	for _, tc := range []struct {
		name             string
		hosts            []serverpool.Host
		cores, weak, pin int
	}{
		{"all alike", []serverpool.Host{host(100, 2), host(10, 2)}, 2, 2, 0},
		// reference-880: home holds 91.5% of the threads, with 3 cores.
		{"big host with more cores", []serverpool.Host{host(18724, 3), host(1740, 1)}, 3, 1, 3},
		{"more cores on a small host", []serverpool.Host{host(100, 1), host(10, 4)}, 1, 1, 0},
		{"big host with too small a share", []serverpool.Host{host(60, 3), host(40, 1)}, 1, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cores, weak, pin, share := chooseCores(tc.hosts)
			if cores != tc.cores || weak != tc.weak || pin != tc.pin {
				t.Fatalf("chooseCores = %d, %d, %d (share %.2f); want %d, %d, %d", cores, weak, pin, share, tc.cores, tc.weak, tc.pin)
			}
		})
	}
}

// The pipeline pins its grows and hacks to the hosts with the most
// threads' cores; weakens go anywhere. Nothing is pinned when the hosts
// are alike.
func TestPin(t *testing.T) {
	t.Parallel()
	batch := func() []job.Job {
		return []job.Job{{Task: game.OpHack}, {Task: game.OpWeaken}, {Task: game.OpGrow}, {Task: game.OpWeaken}}
	}
	for _, tc := range []struct {
		name  string
		cores int
		tasks []string
		want  []int
	}{
		{"pipeline", 3, []string{game.OpGrow, game.OpHack}, []int{3, 0, 3, 0}},
		{"wave", 3, []string{game.OpGrow}, []int{0, 0, 3, 0}},
		{"hosts alike", 0, []string{game.OpGrow, game.OpHack}, []int{0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := &HackManager{pinCores: tc.cores}
			jobs := batch()
			m.pin(jobs, tc.tasks...)
			for i, j := range jobs {
				if j.MinCores != tc.want[i] {
					t.Errorf("%s (job %d): minCores %d, want %d", j.Task, i, j.MinCores, tc.want[i])
				}
			}
		})
	}
}
