package game

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestRunFormulasVectors(t *testing.T) {
	t.Parallel()
	input, err := os.ReadFile("testdata/formulas.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	want := loadVectors(t)
	var out bytes.Buffer
	if err := RunFormulas(bytes.NewReader(input), &out, mustScenario(t, "newgame")); err != nil {
		t.Fatalf("RunFormulas: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d output lines, want %d", len(lines), len(want))
	}
	inLines := strings.Split(strings.TrimSuffix(string(input), "\n"), "\n")
	for i, line := range lines {
		name := fmt.Sprintf("line %d", i+1)
		var got vector
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("%s: %v: %s", name, err, line)
		}
		checkResult(t, name, got.FormulaResult, want[i].FormulaResult)
		// The input keys come back, in order, followed by the results.
		if gotKeys, wantKeys := keysOf(t, line), keysOf(t, inLines[i]); strings.Join(gotKeys, ",") != strings.Join(wantKeys, ",") {
			t.Errorf("%s: keys %v, want %v", name, gotKeys, wantKeys)
		}
	}
}

func keysOf(t *testing.T, line string) []string {
	t.Helper()
	keys, _, err := objectFields([]byte(line))
	if err != nil {
		t.Fatalf("objectFields(%s): %v", line, err)
	}
	return keys
}

func TestRunFormulasBadLines(t *testing.T) {
	t.Parallel()
	good := `{"server": "n00dles", "hackingLevel": 1, "security": 1, "cores": 1, "moneyAvailable": 0}`
	tests := []struct {
		name    string
		line    string
		wantErr string // substring of the error; "" for a good line
	}{
		{"good line", good, ""},
		{"defaults from the scenario", `{"server": "n00dles", "id": 7}`, ""},
		{"other scenario", `{"scenario": "reference-880", "server": "rho-construction"}`, ""},
		{"malformed JSON", `{"server": `, "malformed JSON"},
		{"not an object", `[1, 2]`, "want a JSON object"},
		{"trailing data", good + ` {}`, "trailing data"},
		{"unknown server", `{"server": "nowhere"}`, `unknown server "nowhere"`},
		{"missing server", `{"hackingLevel": 5}`, `missing "server"`},
		{"unknown scenario", `{"scenario": "no-such-scenario", "server": "n00dles"}`, "unknown scenario"},
		{"wrong type", `{"server": "n00dles", "hackingLevel": "high"}`, "invalid input"},
		{"fractional level", `{"server": "n00dles", "hackingLevel": 1.5}`, "invalid input"},
		{"zero level", `{"server": "n00dles", "hackingLevel": 0}`, "hackingLevel 0"},
		{"zero cores", `{"server": "n00dles", "cores": 0}`, "cores 0"},
		{"negative security", `{"server": "n00dles", "security": -3}`, "security -3"},
		{"negative money", `{"server": "n00dles", "moneyAvailable": -1}`, "moneyAvailable -1"},
		{"zero speed mult", `{"server": "n00dles", "mults": {"hacking_speed": 0}}`, "hacking_speed"},
		{"mults not an object", `{"server": "n00dles", "mults": 3}`, "invalid input"},
	}
	var in strings.Builder
	for _, tt := range tests {
		in.WriteString(tt.line + "\n\n") // blank lines give no output
	}
	var out bytes.Buffer
	if err := RunFormulas(strings.NewReader(in.String()), &out, mustScenario(t, "newgame")); err != nil {
		t.Fatalf("RunFormulas: %v", err)
	}
	sc := bufio.NewScanner(&out)
	for i, tt := range tests {
		if !sc.Scan() {
			t.Fatalf("missing output for %q", tt.name)
		}
		var got struct {
			Line        *int    `json:"line"`
			Error       string  `json:"error"`
			HackTimeMs  float64 `json:"hackTimeMs"`
			HackPercent float64 `json:"hackPercent"`
		}
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("%s: output is not JSON: %v: %s", tt.name, err, sc.Bytes())
		}
		if tt.wantErr == "" {
			if got.Error != "" || got.HackTimeMs <= 0 {
				t.Errorf("%s: got %s, want a result", tt.name, sc.Bytes())
			}
			continue
		}
		if got.Line == nil || *got.Line != 2*i+1 || !strings.Contains(got.Error, tt.wantErr) {
			t.Errorf("%s: got %s, want line %d and an error containing %q", tt.name, sc.Bytes(), 2*i+1, tt.wantErr)
		}
	}
	if sc.Scan() {
		t.Errorf("unexpected extra output: %s", sc.Bytes())
	}
}

func TestRunFormulasNoScenario(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	in := `{"server": "n00dles"}` + "\n" + `{"scenario": "newgame", "server": "n00dles"}`
	if err := RunFormulas(strings.NewReader(in), &out, nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "no scenario") || !strings.Contains(lines[1], "hackTimeMs") {
		t.Errorf("got %q", lines)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRunFormulasWriteError(t *testing.T) {
	t.Parallel()
	in := strings.Repeat(`{"server": "n00dles"}`+"\n", 2000)
	err := RunFormulas(strings.NewReader(in), failingWriter{}, mustScenario(t, "newgame"))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("RunFormulas to a failing writer = %v, want a write error", err)
	}
}

func FuzzRunFormulas(f *testing.F) {
	f.Add(`{"server": "n00dles", "hackingLevel": 1, "security": 1, "cores": 1, "moneyAvailable": 0}`)
	f.Add(`{"scenario": "reference-880", "server": "rho-construction", "mults": {"hacking_grow": 1e308}}`)
	f.Add(`{"server": "n00dles", "security": 1e308, "moneyAvailable": 1e300}`)
	f.Add(`{"server": "n00dles", "hackingLevel": 9223372036854775807, "cores": 9223372036854775807}`)
	f.Add("{\"server\": \"n00dles\"}\n[}\n\n")
	sc := mustScenario(f, "newgame")
	f.Fuzz(func(t *testing.T, in string) {
		if lower := strings.ToLower(in); (strings.Contains(lower, "cenario") || strings.Contains(in, `\u`)) &&
			!strings.Contains(in, `"scenario": "reference-880"`) {
			t.Skip() // do not read arbitrary files as scenarios
		}
		var out bytes.Buffer
		if err := RunFormulas(strings.NewReader(in), &out, sc); err != nil {
			t.Fatalf("RunFormulas: %v", err)
		}
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if line != "" && !json.Valid([]byte(line)) {
				t.Fatalf("invalid output line %q", line)
			}
		}
	})
}
