package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Jobs are decoded at every hop (pool, worker, collector, submitter), so
// decoding is a single hand-written pass over the top-level object rather
// than encoding/json's reflection: it splits members, decodes the known ones
// directly and keeps the others' bytes as they are.

// UnmarshalJSON decodes a job, keeping unknown members verbatim in Extra.
func (j *Job) UnmarshalJSON(data []byte) error {
	var out Job
	err := eachMember(data, func(rawKey, val []byte) error {
		key, err := decodeString(rawKey)
		if err != nil {
			return fmt.Errorf("member name: %v", err)
		}
		return out.setMember(key, val)
	})
	if err != nil {
		return err
	}
	*j = out
	return nil
}

// eachMember calls fn with the raw name (quotes included) and the raw value
// of every member of a JSON object, checking the syntax as it goes.
func eachMember(data []byte, fn func(rawKey, val []byte) error) error {
	p := scanner{data: data}
	p.space()
	if !p.eat('{') {
		return fmt.Errorf("%w: a job is a JSON object", ErrMalformed)
	}
	p.space()
	if !p.eat('}') {
		for {
			p.space()
			keyStart := p.i
			if err := p.skipString(); err != nil {
				return fmt.Errorf("%w: member name: %v", ErrMalformed, err)
			}
			rawKey := data[keyStart:p.i]
			p.space()
			if !p.eat(':') {
				return fmt.Errorf("%w: expected ':' after %s at offset %d", ErrMalformed, rawKey, p.i)
			}
			p.space()
			valStart := p.i
			if err := p.skipValue(0); err != nil {
				return fmt.Errorf("%w: member %s: %v", ErrMalformed, rawKey, err)
			}
			if err := fn(rawKey, data[valStart:p.i]); err != nil {
				return fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			p.space()
			if p.eat(',') {
				continue
			}
			if p.eat('}') {
				break
			}
			return fmt.Errorf("%w: expected ',' or '}' at offset %d", ErrMalformed, p.i)
		}
	}
	p.space()
	if p.i != len(data) {
		return fmt.Errorf("%w: trailing data after the job", ErrMalformed)
	}
	return nil
}

// Summary is the part of a record that bookkeeping needs.
type Summary struct {
	ID, Task, Worker, Reason, Error string
	Status                          Status
	StartTime, ActualStartTime      float64
	EndTime, ActualEndTime          float64
	Duration                        float64
}

// ScheduledEnd is when the job is meant to end, as Job.ScheduledEnd.
func (s *Summary) ScheduledEnd(start float64) float64 {
	if s.EndTime > 0 {
		return s.EndTime
	}
	return start + s.Duration
}

// ParseSummary reads only a record's id, task, worker, status, reason,
// error, duration, and start and end times: the pool reads every record, and most of
// a record is not its business.
func ParseSummary(data []byte) (Summary, error) {
	var s Summary
	err := eachMember(data, func(rawKey, val []byte) error {
		var err error
		switch string(rawKey) { // no allocation: compared, not kept
		case `"id"`:
			s.ID, err = stringField("id", val, string(val) == "null")
		case `"task"`:
			s.Task, err = stringField("task", val, string(val) == "null")
		case `"worker"`:
			s.Worker, err = stringField("worker", val, string(val) == "null")
		case `"reason"`:
			s.Reason, err = stringField("reason", val, string(val) == "null")
		case `"error"`:
			s.Error, err = stringField("error", val, string(val) == "null")
		case `"status"`:
			var st string
			st, err = stringField("status", val, string(val) == "null")
			s.Status = Status(st)
		case `"startTime"`:
			s.StartTime, err = numberField("startTime", val, string(val) == "null")
		case `"actualStartTime"`:
			s.ActualStartTime, err = numberField("actualStartTime", val, string(val) == "null")
		case `"duration"`:
			s.Duration, err = numberField("duration", val, string(val) == "null")
		case `"endTime"`:
			s.EndTime, err = numberField("endTime", val, string(val) == "null")
		case `"actualEndTime"`:
			s.ActualEndTime, err = numberField("actualEndTime", val, string(val) == "null")
		}
		return err
	})
	return s, err
}

// setMember stores one member: a known field, or verbatim in Extra.
func (j *Job) setMember(key string, raw []byte) error {
	null := string(raw) == "null"
	var err error
	switch key {
	case "id":
		j.ID, err = stringField(key, raw, null)
	case "batch":
		j.Batch, err = stringField(key, raw, null)
	case "task":
		j.Task, err = stringField(key, raw, null)
	case "worker":
		j.Worker, err = stringField(key, raw, null)
	case "reason":
		j.Reason, err = stringField(key, raw, null)
	case "error":
		j.Error, err = stringField(key, raw, null)
	case "status":
		var s string
		s, err = stringField(key, raw, null)
		j.Status = Status(s)
	case "threads":
		j.Threads, err = intField(key, raw, null)
	case "minCores":
		j.MinCores, err = intField(key, raw, null)
	case "tolerance":
		j.Tolerance, err = numberField(key, raw, null)
	case "breaksBatch":
		j.BreaksBatch, err = boolField(key, raw, null)
	case "duration":
		j.Duration, err = numberField(key, raw, null)
	case "startTime":
		j.StartTime, err = numberField(key, raw, null)
	case "endTime":
		j.EndTime, err = numberField(key, raw, null)
	case "actualStartTime":
		j.ActualStartTime, err = numberField(key, raw, null)
	case "actualEndTime":
		j.ActualEndTime, err = numberField(key, raw, null)
	case "args":
		j.Args = nil
		if !null {
			if raw[0] != '[' {
				return fmt.Errorf("args must be an array, not %s", raw)
			}
			if err := json.Unmarshal(raw, &j.Args); err != nil {
				return fmt.Errorf("args: %v", err)
			}
		}
	case "result":
		j.Result = nil
		if !null {
			j.Result = append(json.RawMessage(nil), raw...)
		}
	default:
		for i := range j.Extra {
			if j.Extra[i].Key == key {
				j.Extra[i].Value = append(json.RawMessage(nil), raw...)
				return nil
			}
		}
		j.Extra = append(j.Extra, Field{Key: key, Value: append(json.RawMessage(nil), raw...)})
	}
	return err
}

func stringField(key string, raw []byte, null bool) (string, error) {
	if null {
		return "", nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("%s must be a string, not %s", key, raw)
	}
	return decodeString(raw)
}

func intField(key string, raw []byte, null bool) (int, error) {
	if null {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 32)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%s %s is too large", key, raw)
	}
	if err != nil {
		return 0, fmt.Errorf("%s must be an integer, not %s", key, raw)
	}
	return int(n), nil
}

func boolField(key string, raw []byte, null bool) (bool, error) {
	switch {
	case null:
		return false, nil
	case string(raw) == "true":
		return true, nil
	case string(raw) == "false":
		return false, nil
	}
	return false, fmt.Errorf("%s must be true or false, not %s", key, raw)
}

func numberField(key string, raw []byte, null bool) (float64, error) {
	if null {
		return 0, nil
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || raw[0] == '+' || raw[0] == '.' {
		return 0, fmt.Errorf("%s must be a number, not %s", key, raw)
	}
	return v, nil
}

// decodeString decodes a JSON string literal (quotes included).
func decodeString(raw []byte) (string, error) {
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c == '\\' || c < 0x20 {
			var s string
			err := json.Unmarshal(raw, &s)
			return s, err
		}
	}
	return string(body), nil
}

// scanner walks JSON text, checking its syntax as it skips values.
type scanner struct {
	data []byte
	i    int
}

func (p *scanner) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

const maxDepth = 512

func (p *scanner) skipValue(depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested too deeply")
	}
	if p.i >= len(p.data) {
		return fmt.Errorf("unexpected end of input")
	}
	switch c := p.data[p.i]; {
	case c == '"':
		return p.skipString()
	case c == '{':
		p.i++
		p.space()
		if p.eat('}') {
			return nil
		}
		for {
			p.space()
			if err := p.skipString(); err != nil {
				return err
			}
			p.space()
			if !p.eat(':') {
				return fmt.Errorf("expected ':' at offset %d", p.i)
			}
			p.space()
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.space()
			if p.eat(',') {
				continue
			}
			if p.eat('}') {
				return nil
			}
			return fmt.Errorf("expected ',' or '}' at offset %d", p.i)
		}
	case c == '[':
		p.i++
		p.space()
		if p.eat(']') {
			return nil
		}
		for {
			p.space()
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.space()
			if p.eat(',') {
				continue
			}
			if p.eat(']') {
				return nil
			}
			return fmt.Errorf("expected ',' or ']' at offset %d", p.i)
		}
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.skipNumber()
	default:
		return fmt.Errorf("unexpected %q at offset %d", c, p.i)
	}
}

func (p *scanner) literal(word string) error {
	if len(p.data)-p.i >= len(word) && string(p.data[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return nil
	}
	return fmt.Errorf("invalid literal at offset %d", p.i)
}

func (p *scanner) skipString() error {
	if !p.eat('"') {
		return fmt.Errorf("expected a string at offset %d", p.i)
	}
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return nil
		case c == '\\':
			if p.i+1 >= len(p.data) {
				return fmt.Errorf("unterminated string")
			}
			switch p.data[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.data) {
					return fmt.Errorf("bad \\u escape")
				}
				for _, h := range p.data[p.i+2 : p.i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return fmt.Errorf("bad \\u escape")
					}
				}
				p.i += 6
			default:
				return fmt.Errorf("bad escape at offset %d", p.i)
			}
		case c < 0x20:
			return fmt.Errorf("control character in string at offset %d", p.i)
		default:
			p.i++
		}
	}
	return fmt.Errorf("unterminated string")
}

// skipNumber follows JSON's number grammar exactly.
func (p *scanner) skipNumber() error {
	start := p.i
	p.eat('-')
	digits := func() int {
		n := 0
		for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.eat('0') {
	} else if digits() == 0 {
		return fmt.Errorf("invalid number at offset %d", start)
	}
	if p.eat('.') && digits() == 0 {
		return fmt.Errorf("invalid number at offset %d", start)
	}
	if p.i < len(p.data) && (p.data[p.i] == 'e' || p.data[p.i] == 'E') {
		p.i++
		if !p.eat('+') {
			p.eat('-')
		}
		if digits() == 0 {
			return fmt.Errorf("invalid number at offset %d", start)
		}
	}
	return nil
}
