// Package job defines the unit of work HVMind moves around: a time-scheduled
// task with a thread count, and the completion record that a worker makes of it.
//
// A job travels as a JSON object. The fields HVMind knows are typed; every other
// field is kept verbatim (byte-for-byte) and written back in the same order, so a
// caller can attach its own data (expected results, tags) and find it again in
// the completion record.
package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Status is how a job ended. A job that has not ended has no status.
type Status string

// The ways a job ends. Every accepted job ends with exactly one of them.
const (
	// StatusDone: the task ran and returned a result.
	StatusDone Status = "done"
	// StatusFailed: the task ran (or was started) and returned an error.
	StatusFailed Status = "failed"
	// StatusMissed: the job could not start within tolerance of its startTime.
	StatusMissed Status = "missed"
	// StatusCancelled: the job was cancelled before it ended.
	StatusCancelled Status = "cancelled"
)

// Sentinel validation errors; Validate wraps them with the field at fault.
var (
	ErrMalformed    = errors.New("malformed job")
	ErrNoTask       = errors.New("task is required")
	ErrThreads      = errors.New("threads must be a positive integer")
	ErrDuration     = errors.New("duration must be a non-negative number of milliseconds")
	ErrWindow       = errors.New("endTime is before startTime")
	ErrStartInPast  = errors.New("startTime is already in the past")
	ErrInvalidID    = errors.New("id may hold only letters, digits, '-', '_' and '.'")
	ErrUnknownField = errors.New("field is reserved for HVMind")
)

// Job is one job, and after it ends, its completion record.
//
// Times are Unix epoch milliseconds with fractions (see Millis and Time).
// StartTime 0 means "as soon as possible"; EndTime 0 means StartTime+Duration.
type Job struct {
	ID        string  `json:"id,omitempty"`
	Batch     string  `json:"batch,omitempty"`
	Task      string  `json:"task"`
	Args      []any   `json:"args,omitempty"`
	Threads   int     `json:"threads"`
	Duration  float64 `json:"duration"`
	StartTime float64 `json:"startTime,omitempty"`
	EndTime   float64 `json:"endTime,omitempty"`

	// Worker is the id of the worker the pool placed the job on.
	Worker string `json:"worker,omitempty"`

	// ActualStartTime and ActualEndTime are when the worker really started and
	// ended the job.
	ActualStartTime float64 `json:"actualStartTime,omitempty"`
	ActualEndTime   float64 `json:"actualEndTime,omitempty"`
	// Status and Reason say how the job ended.
	Status Status `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Result is the task's output; Error is its error message.
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`

	// Extra holds every field HVMind does not know, verbatim and in order.
	Extra []Field `json:"-"`
}

// Field is one JSON member kept verbatim: its key and its raw value bytes.
type Field struct {
	Key   string
	Value json.RawMessage
}

// known lists the members that map onto Job's typed fields.
var known = map[string]bool{
	"id": true, "batch": true, "task": true, "args": true, "threads": true,
	"duration": true, "startTime": true, "endTime": true, "worker": true,
	"actualStartTime": true, "actualEndTime": true, "status": true,
	"reason": true, "result": true, "error": true,
}

// typed mirrors Job without methods so that encoding/json can fill it.
type typed Job

// UnmarshalJSON decodes a job, keeping unknown members verbatim in Extra.
func (j *Job) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: a job is a JSON object", ErrMalformed)
	}
	var t typed
	var knownRaw bytes.Buffer
	knownRaw.WriteByte('{')
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%w: member %q: %v", ErrMalformed, key, err)
		}
		if known[key] {
			if knownRaw.Len() > 1 {
				knownRaw.WriteByte(',')
			}
			kb, _ := json.Marshal(key)
			knownRaw.Write(kb)
			knownRaw.WriteByte(':')
			knownRaw.Write(raw)
			continue
		}
		t.Extra = append(t.Extra, Field{Key: key, Value: append(json.RawMessage(nil), raw...)})
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the job", ErrMalformed)
	}
	knownRaw.WriteByte('}')
	extra := t.Extra
	if err := json.Unmarshal(knownRaw.Bytes(), &t); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, describe(err))
	}
	t.Extra = extra
	*j = Job(t)
	return nil
}

// describe turns encoding/json type errors into a sentence about the field.
func describe(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s must be a %s, not %s", te.Field, te.Type, te.Value)
	}
	return err.Error()
}

// MarshalJSON encodes the typed fields, then every Extra member verbatim.
func (j Job) MarshalJSON() ([]byte, error) {
	var tb bytes.Buffer
	enc := json.NewEncoder(&tb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(typed(j)); err != nil {
		return nil, err
	}
	b := bytes.TrimRight(tb.Bytes(), "\n")
	if len(j.Extra) == 0 {
		return b, nil
	}
	var out bytes.Buffer
	out.Grow(len(b) + 64*len(j.Extra))
	out.Write(b[:len(b)-1])
	for _, f := range j.Extra {
		out.WriteByte(',')
		kb, _ := json.Marshal(f.Key)
		out.Write(kb)
		out.WriteByte(':')
		out.Write(f.Value)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// Parse decodes one job from JSON.
func Parse(data []byte) (Job, error) {
	var j Job
	if err := j.UnmarshalJSON(data); err != nil {
		return Job{}, err
	}
	return j, nil
}

// ParseMany decodes a job or a JSON array of jobs (a batch).
func ParseMany(data []byte) ([]Job, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrMalformed)
	}
	if trimmed[0] != '[' {
		j, err := Parse(trimmed)
		if err != nil {
			return nil, err
		}
		return []Job{j}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(trimmed, &raws); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	jobs := make([]Job, len(raws))
	for i, r := range raws {
		j, err := Parse(r)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
		jobs[i] = j
	}
	return jobs, nil
}

// Validate checks what a job must satisfy to be accepted, given the current
// time and how far in the past a start may lie (tolerance).
func (j *Job) Validate(now float64, tolerance time.Duration) error {
	if strings.TrimSpace(j.Task) == "" {
		return ErrNoTask
	}
	if j.ID != "" && !ValidID(j.ID) {
		return fmt.Errorf("id %q: %w", j.ID, ErrInvalidID)
	}
	if j.Threads <= 0 {
		return fmt.Errorf("%w (got %d)", ErrThreads, j.Threads)
	}
	if j.Duration < 0 || math.IsNaN(j.Duration) || math.IsInf(j.Duration, 0) {
		return fmt.Errorf("%w (got %v)", ErrDuration, j.Duration)
	}
	if j.StartTime < 0 || j.EndTime < 0 {
		return fmt.Errorf("%w: times are Unix epoch milliseconds", ErrMalformed)
	}
	if j.StartTime > 0 && j.EndTime > 0 && j.EndTime < j.StartTime {
		return fmt.Errorf("%w (startTime %.3f, endTime %.3f)", ErrWindow, j.StartTime, j.EndTime)
	}
	if j.StartTime > 0 && j.StartTime < now-float64(tolerance)/1e6 {
		return fmt.Errorf("%w by %.3f ms", ErrStartInPast, now-j.StartTime)
	}
	if j.Status != "" || j.Worker != "" || j.ActualStartTime != 0 || j.ActualEndTime != 0 {
		return fmt.Errorf("%w: status, worker and actual times are set by HVMind", ErrUnknownField)
	}
	return nil
}

// ValidID reports whether s can be used as a job, batch or worker id: it ends
// up in NATS subjects and consumer names.
func ValidID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// ScheduledEnd is when the job is meant to end: EndTime, else start+Duration.
func (j *Job) ScheduledEnd(start float64) float64 {
	if j.EndTime > 0 {
		return j.EndTime
	}
	return start + j.Duration
}

// Ended reports whether the job carries a final status.
func (j *Job) Ended() bool { return j.Status != "" }

// Get returns the raw value of an extra member.
func (j *Job) Get(key string) (json.RawMessage, bool) {
	for _, f := range j.Extra {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

// Set adds or replaces an extra member.
func (j *Job) Set(key string, value json.RawMessage) {
	for i, f := range j.Extra {
		if f.Key == key {
			j.Extra[i].Value = value
			return
		}
	}
	j.Extra = append(j.Extra, Field{Key: key, Value: value})
}

// StringArg returns argument i as a string, if it is one.
func (j *Job) StringArg(i int) (string, bool) {
	if i < 0 || i >= len(j.Args) {
		return "", false
	}
	s, ok := j.Args[i].(string)
	return s, ok
}

// Millis converts a time to Unix epoch milliseconds with fractions.
func Millis(t time.Time) float64 { return float64(t.UnixNano()) / 1e6 }

// Time converts Unix epoch milliseconds to a time.
func Time(ms float64) time.Time { return time.Unix(0, int64(ms*1e6)) }

// Now is the current time in Unix epoch milliseconds.
func Now() float64 { return Millis(time.Now()) }

// Encode writes a job as JSON with its extra members byte-for-byte.
// Use it rather than json.Marshal, which re-compacts and HTML-escapes the
// output of MarshalJSON and so would alter the extra members.
func Encode(j *Job) ([]byte, error) { return j.MarshalJSON() }

// EncodeMany writes jobs as a JSON array, each as Encode does.
func EncodeMany(jobs []Job) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range jobs {
		if i > 0 {
			b.WriteByte(',')
		}
		data, err := jobs[i].MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
		b.Write(data)
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}
