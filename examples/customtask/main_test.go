package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
)

func TestRun(t *testing.T) {
	// The test checks what the program does, not how precise this machine
	// is: under the race detector, beside other tests, a start can be late
	// by more than the program's tolerance.
	defer func(was time.Duration) { tolerance = was }(tolerance)
	tolerance = time.Second

	// run's temporary directory goes here, to check it is removed.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	began := time.Now()
	if err := run(ctx, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("run took %s", time.Since(began).Round(time.Millisecond))

	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("run left %d files in its temporary directory (%v)", len(left), err)
	}

	seen := map[string]bool{}
	workers := map[string]int{}
	var summary string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "summary: "); ok {
			summary = s
			continue
		}
		if summary != "" {
			t.Errorf("a line after the summary: %s", line)
		}
		rec, err := job.Parse([]byte(line))
		if err != nil {
			t.Errorf("not a record: %s: %v", line, err)
			continue
		}
		if seen[rec.ID] {
			t.Errorf("two records of %s", rec.ID)
		}
		seen[rec.ID] = true
		if rec.Status != job.StatusDone {
			t.Errorf("%s ended %s (%s %s)", rec.ID, rec.Status, rec.Reason, rec.Error)
		}
		var res struct {
			Image         string
			Width, Height int
		}
		if err := json.Unmarshal(rec.Result, &res); err != nil || res.Width != 320 || res.Height != 240 || res.Image == "" {
			t.Errorf("%s: result %s", rec.ID, rec.Result)
		}
		if _, ok := rec.Get("startErrorUs"); !ok {
			t.Errorf("%s: no startErrorUs", rec.ID)
		}
		workers[rec.Worker]++
	}
	for i := 1; i <= jobs; i++ {
		if id := fmt.Sprintf("thumb-%02d", i); !seen[id] {
			t.Errorf("no record of %s", id)
		}
	}
	// Up to three jobs of 2 threads overlap, and a worker has 4: the pool
	// needs both.
	if len(workers) != 2 || workers["thumbs-1"] == 0 || workers["thumbs-2"] == 0 {
		t.Errorf("jobs per worker: %v, want some on thumbs-1 and thumbs-2", workers)
	}
	if want := fmt.Sprintf("%d/%d done;", jobs, jobs); !strings.HasPrefix(summary, want) {
		t.Errorf("summary %q, want it to start %q", summary, want)
	}
}

// Interrupted halfway (Ctrl-C), run stops everything it started and says so.
func TestRunInterrupted(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	began := time.Now()
	err := run(ctx, &out)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run = %v, want the context's error\n%s", err, out.String())
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("run took %s to stop", took)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("run left %d files in its temporary directory (%v)", len(left), err)
	}
}
