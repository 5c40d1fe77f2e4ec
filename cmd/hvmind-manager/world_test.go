package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/config"
	"github.com/hvmind/hvmind/planner"
	"github.com/hvmind/hvmind/world"
)

func testEnv(t *testing.T, in string) (*env, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	return &env{cfg: config.Default(), log: brokertest.Logger(t), in: strings.NewReader(in), out: &out}, &out
}

func TestFormulasCommand(t *testing.T) {
	t.Parallel()
	input, err := os.ReadFile("../../world/game/testdata/formulas.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	e, out := testEnv(t, string(input))
	if code, err := e.formulas(context.Background(), nil); code != 0 || err != nil {
		t.Fatalf("formulas: %d, %v", code, err)
	}
	want := bufio.NewScanner(bytes.NewReader(input))
	got := bufio.NewScanner(out)
	n := 0
	for want.Scan() {
		if !got.Scan() {
			t.Fatalf("output ends after %d lines", n)
		}
		n++
		var w, g map[string]any
		if err := json.Unmarshal(want.Bytes(), &w); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got.Bytes(), &g); err != nil {
			t.Fatal(err)
		}
		if w["growThreadsToMax"] != g["growThreadsToMax"] || len(w) != len(g) {
			t.Errorf("line %d: %s, want %s", n, got.Bytes(), want.Bytes())
		}
	}
	if got.Scan() {
		t.Errorf("extra output line %s", got.Bytes())
	}
}

func TestAnalyzeCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"newgame table", nil, 0, []string{"newgame", "n00dles", "foodnstuff", "┌"}},
		{"named target, flags after", []string{"rho-construction", "--scenario", "reference-880", "--cores", "3"}, 0, []string{"rho-construction", "fraction", "3 core"}},
		{"unknown target", []string{"nowhere"}, 1, nil},
		{"bad fractions", []string{"--fractions", "0,2"}, 2, nil},
		{"unknown scenario", []string{"--scenario", "nope"}, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, out := testEnv(t, "")
			code, err := e.analyze(context.Background(), tc.args)
			if code != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestAnalyzeJSONAndLive(t *testing.T) {
	t.Parallel()
	e, out := testEnv(t, "")
	if code, err := e.analyze(context.Background(), []string{"--json", "--scenario", "reference-880"}); code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	var offline []planner.Analysis
	if err := json.Unmarshal(out.Bytes(), &offline); err != nil || len(offline) == 0 {
		t.Fatalf("JSON %v: %s", err, out)
	}
	for i := 1; i < len(offline); i++ {
		if offline[i].BestIncomePerThreadSecond > offline[i-1].BestIncomePerThreadSecond {
			t.Errorf("not sorted at %d", i)
		}
	}

	// --live reads the running world: the same as the scenario it started from.
	b := brokertest.New(t)
	svc, err := world.Serve(context.Background(), b.Connect(t), world.Options{Scenario: "reference-880", Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	e, out = testEnv(t, "")
	e.cfg.NATS = b.URL
	if code, err := e.analyze(context.Background(), []string{"--json", "--live"}); code != 0 {
		t.Fatalf("live: exit %d: %v", code, err)
	}
	var live []planner.Analysis
	if err := json.Unmarshal(out.Bytes(), &live); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(offline)
	l, _ := json.Marshal(live)
	if string(a) != string(l) {
		t.Error("--live analysis differs from the scenario's")
	}
}

func TestParseAt(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	nowMs := float64(now.UnixNano()) / 1e6
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"", 0, true},
		{"2s", nowMs + 2000, true},
		{"+1m", nowMs + 60000, true},
		{"1800000000000", 1800000000000, true},
		{"2027-01-15T08:00:00Z", float64(time.Date(2027, 1, 15, 8, 0, 0, 0, time.UTC).UnixMilli()), true},
		{"soon", 0, false},
		{"-5", 0, false},
		{"10:00", 0, false},
	} {
		got, err := parseAt(tc.in, now)
		if (err == nil) != tc.ok || (tc.ok && math.Abs(got-tc.want) > 1e-6) {
			t.Errorf("parseAt(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
