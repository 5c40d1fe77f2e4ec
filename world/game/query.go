package game

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// FormulaQuery is one input line of RunFormulas (the input shape of
// testdata/formulas.jsonl). Absent fields take their value from the scenario:
// hackingLevel and mults from the player, security and moneyAvailable from
// the server; cores defaults to 1.
type FormulaQuery struct {
	Scenario       string   `json:"scenario,omitempty"`
	Server         string   `json:"server"`
	HackingLevel   *int     `json:"hackingLevel,omitempty"`
	Mults          *Mults   `json:"mults,omitempty"`
	Security       *float64 `json:"security,omitempty"`
	Cores          *int     `json:"cores,omitempty"`
	MoneyAvailable *float64 `json:"moneyAvailable,omitempty"`
}

// FormulaResult is what RunFormulas computes for one query.
type FormulaResult struct {
	HackTimeMs       float64 `json:"hackTimeMs"`
	GrowTimeMs       float64 `json:"growTimeMs"`
	WeakenTimeMs     float64 `json:"weakenTimeMs"`
	HackChance       float64 `json:"hackChance"`
	HackPercent      float64 `json:"hackPercent"`
	GrowThreadsToMax int     `json:"growThreadsToMax"`
	WeakenPerThread  float64 `json:"weakenPerThread"`
}

// resultKeys are the output keys; an input line's own values for them are
// replaced, so an expected-results file can be fed back in.
var resultKeys = []string{"hackTimeMs", "growTimeMs", "weakenTimeMs", "hackChance", "hackPercent", "growThreadsToMax", "weakenPerThread"}

// RunFormulas reads JSON lines of FormulaQuery from in and writes, for each
// non-blank line, one JSON line to out: the line's keys as given (in order)
// followed by the FormulaResult keys. A line naming a scenario other than sc
// is evaluated against that scenario (loaded once with LoadScenario). A bad
// line (malformed JSON, unknown scenario or server, invalid values) produces
// {"line": N, "error": "..."} and the run continues. Only read and write
// errors stop it.
func RunFormulas(in io.Reader, out io.Writer, sc *Scenario) error {
	r := bufio.NewReader(in)
	w := bufio.NewWriter(out)
	scenarios := map[string]*Scenario{}
	if sc != nil {
		scenarios[sc.Name] = sc
	}
	for lineNo := 1; ; lineNo++ {
		line, readErr := r.ReadBytes('\n')
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			return fmt.Errorf("formulas: read line %d: %w", lineNo, readErr)
		}
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			outLine, err := formulaLine(trimmed, sc, scenarios)
			if err != nil {
				outLine, _ = json.Marshal(struct {
					Line  int    `json:"line"`
					Error string `json:"error"`
				}{lineNo, err.Error()})
			}
			outLine = append(outLine, '\n')
			if _, err := w.Write(outLine); err != nil {
				return fmt.Errorf("formulas: write line %d: %w", lineNo, err)
			}
		}
		if readErr != nil { // io.EOF
			break
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("formulas: write: %w", err)
	}
	return nil
}

// formulaLine answers one input line. It never panics: a panic becomes an error.
func formulaLine(line []byte, def *Scenario, cache map[string]*Scenario) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("internal error: %v", p)
		}
	}()
	keys, raws, err := objectFields(line)
	if err != nil {
		return nil, err
	}
	var q FormulaQuery
	if err := json.Unmarshal(line, &q); err != nil {
		return nil, fmt.Errorf("invalid input: %w", err)
	}
	res, err := EvalFormulas(q, def, cache)
	if err != nil {
		return nil, err
	}

	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if isResultKey(k) {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k) // a JSON string (strconv.Quote's \x7f is not one)
		b.Write(kb)
		b.WriteByte(':')
		if err := json.Compact(&b, raws[i]); err != nil {
			return nil, fmt.Errorf("invalid input: key %q: %w", k, err)
		}
	}
	resJSON, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	if b.Len() > 1 {
		b.WriteByte(',')
	}
	b.Write(resJSON[1:]) // the result object without its '{'
	return b.Bytes(), nil
}

// EvalFormulas computes the results for one query against def, or against
// the scenario q names (looked up in, and added to, cache; cache may be nil).
func EvalFormulas(q FormulaQuery, def *Scenario, cache map[string]*Scenario) (FormulaResult, error) {
	sc := def
	if q.Scenario != "" && (def == nil || q.Scenario != def.Name) {
		sc = cache[q.Scenario]
		if sc == nil {
			loaded, err := LoadScenario(q.Scenario)
			if err != nil {
				return FormulaResult{}, err
			}
			sc = loaded
			if cache != nil {
				cache[q.Scenario] = sc
			}
		}
	}
	if sc == nil {
		return FormulaResult{}, errors.New("no scenario: give \"scenario\" on the line or a default scenario")
	}
	if q.Server == "" {
		return FormulaResult{}, errors.New("missing \"server\"")
	}
	target, ok := sc.Server(q.Server)
	if !ok {
		return FormulaResult{}, fmt.Errorf("unknown server %q in scenario %q", q.Server, sc.Name)
	}
	s := *target // what-if copy: the scenario is not changed

	h := sc.Player.Hacker()
	if q.HackingLevel != nil {
		h.Level = *q.HackingLevel
	}
	if q.Mults != nil {
		h.Mults = *q.Mults
	}
	cores := 1
	if q.Cores != nil {
		cores = *q.Cores
	}
	if q.Security != nil {
		s.HackDifficulty = *q.Security
	}
	if q.MoneyAvailable != nil {
		s.MoneyAvailable = *q.MoneyAvailable
	}
	switch {
	case h.Level < 1:
		return FormulaResult{}, fmt.Errorf("hackingLevel %d: must be >= 1", h.Level)
	case cores < 1:
		return FormulaResult{}, fmt.Errorf("cores %d: must be >= 1", cores)
	case !(s.HackDifficulty >= 0) || math.IsInf(s.HackDifficulty, 0):
		return FormulaResult{}, fmt.Errorf("security %v: must be a number >= 0", s.HackDifficulty)
	case !(s.MoneyAvailable >= 0) || math.IsInf(s.MoneyAvailable, 0):
		return FormulaResult{}, fmt.Errorf("moneyAvailable %v: must be a number >= 0", s.MoneyAvailable)
	}
	if err := h.Mults.Validate(); err != nil {
		return FormulaResult{}, err
	}

	return FormulaResult{
		HackTimeMs:       HackTimeMs(&s, h),
		GrowTimeMs:       GrowTimeMs(&s, h),
		WeakenTimeMs:     WeakenTimeMs(&s, h),
		HackChance:       HackChance(&s, h),
		HackPercent:      HackPercent(&s, h),
		GrowThreadsToMax: GrowThreads(&s, h, s.MoneyAvailable, s.MoneyMax, cores),
		WeakenPerThread:  WeakenPerThread(cores),
	}, nil
}

func isResultKey(k string) bool {
	for _, r := range resultKeys {
		if k == r {
			return true
		}
	}
	return false
}

// objectFields splits a JSON object into its keys and raw values, in order;
// a repeated key keeps its last value at its first position.
func objectFields(data []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("malformed input: want a JSON object")
	}
	var (
		keys []string
		raws []json.RawMessage
		pos  = map[string]int{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("malformed JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, errors.New("malformed JSON: object key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("malformed JSON: value of %q: %w", key, err)
		}
		if i, dup := pos[key]; dup {
			raws[i] = raw
			continue
		}
		pos[key] = len(keys)
		keys = append(keys, key)
		raws = append(raws, raw)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("malformed JSON: trailing data after the object")
	}
	return keys, raws, nil
}
