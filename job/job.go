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
	"os"
	"strconv"
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
	// MinCores, when set, places the job only on a worker whose host has at
	// least that many cores: a task whose effect grows with its host's
	// cores, sized for a big host, falls short on a smaller one.
	MinCores int `json:"minCores,omitempty"`
	// Tolerance, when set, is how late (ms) the job may start: past it,
	// it is missed, even on a worker that allows more (see StartWithin).
	// A job whose start keeps an order with other jobs' says how late
	// breaks it: missed, it changes nothing; started later, it would.
	Tolerance float64 `json:"tolerance,omitempty"`
	// BreaksBatch, when set, says the job's batch is no use without it: if
	// it ends missed or failed, the pool cancels every other job of its
	// batch that has not ended, whoever dispatched them and whether or not
	// they are still there to do it (see Batch).
	BreaksBatch bool `json:"breaksBatch,omitempty"`

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

// MarshalJSON encodes the typed fields, then every Extra member verbatim.
func (j Job) MarshalJSON() ([]byte, error) {
	return j.appendJSON(make([]byte, 0, 256)), nil
}

// appendJSON writes the job by hand: it is encoded at every hop.
func (j *Job) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	sep := func() {
		if !first {
			b = append(b, ',')
		}
		first = false
	}
	key := func(k string) {
		sep()
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
	}
	str := func(k, v string, always bool) {
		if v != "" || always {
			key(k)
			b = appendString(b, v)
		}
	}
	num := func(k string, v float64, always bool) {
		if v != 0 || always {
			key(k)
			b = appendFloat(b, v)
		}
	}
	str("id", j.ID, false)
	str("batch", j.Batch, false)
	str("task", j.Task, true)
	if len(j.Args) > 0 {
		key("args")
		args, err := json.Marshal(j.Args)
		if err != nil {
			args = []byte("[]")
		}
		b = append(b, args...)
	}
	key("threads")
	b = strconv.AppendInt(b, int64(j.Threads), 10)
	num("duration", j.Duration, true)
	num("startTime", j.StartTime, false)
	num("endTime", j.EndTime, false)
	if j.MinCores != 0 {
		key("minCores")
		b = strconv.AppendInt(b, int64(j.MinCores), 10)
	}
	num("tolerance", j.Tolerance, false)
	if j.BreaksBatch {
		key("breaksBatch")
		b = append(b, "true"...)
	}
	str("worker", j.Worker, false)
	num("actualStartTime", j.ActualStartTime, false)
	num("actualEndTime", j.ActualEndTime, false)
	str("status", string(j.Status), false)
	str("reason", j.Reason, false)
	if len(j.Result) > 0 {
		key("result")
		b = append(b, j.Result...)
	}
	str("error", j.Error, false)
	for _, f := range j.Extra {
		sep()
		b = appendString(b, f.Key)
		b = append(b, ':')
		b = append(b, f.Value...)
	}
	return append(b, '}')
}

// appendString writes a JSON string; plain ASCII is copied as is.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendFloat writes a number as encoding/json does.
func appendFloat(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, '0')
	}
	abs := math.Abs(v)
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		return strconv.AppendFloat(b, v, 'e', -1, 64)
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
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
	// Split the array with the same scanner as the jobs themselves.
	p := scanner{data: trimmed, i: 1}
	var jobs []Job
	p.space()
	if p.eat(']') {
		return jobs, tail(&p)
	}
	for {
		p.space()
		start := p.i
		if err := p.skipValue(0); err != nil {
			return nil, fmt.Errorf("job %d: %w: %v", len(jobs), ErrMalformed, err)
		}
		j, err := Parse(trimmed[start:p.i])
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", len(jobs), err)
		}
		jobs = append(jobs, j)
		p.space()
		if p.eat(',') {
			continue
		}
		if p.eat(']') {
			return jobs, tail(&p)
		}
		return nil, fmt.Errorf("%w: expected ',' or ']' at offset %d", ErrMalformed, p.i)
	}
}

func tail(p *scanner) error {
	p.space()
	if p.i != len(p.data) {
		return fmt.Errorf("%w: trailing data after the batch", ErrMalformed)
	}
	return nil
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
	if j.MinCores < 0 {
		return fmt.Errorf("%w: minCores must not be negative (got %d)", ErrMalformed, j.MinCores)
	}
	if j.Tolerance < 0 || math.IsNaN(j.Tolerance) || math.IsInf(j.Tolerance, 0) {
		return fmt.Errorf("%w: tolerance must be a non-negative number of milliseconds (got %v)", ErrMalformed, j.Tolerance)
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

// StartWithin is how late the job may start on a worker that allows
// worker: the job's Tolerance when it is set and smaller.
func (j *Job) StartWithin(worker time.Duration) time.Duration {
	// Compared as floats: a tolerance of years would overflow a Duration.
	if j.Tolerance > 0 && j.Tolerance*float64(time.Millisecond) < float64(worker) {
		return time.Duration(j.Tolerance * float64(time.Millisecond))
	}
	return worker
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

// ValidWorkerID reports whether s can name a worker: it is one token of a
// subject (hvmind.jobs.<stream>.<worker>) and part of a consumer name, so unlike a
// job id it has no '.'.
func ValidWorkerID(s string) bool {
	return ValidID(s) && !strings.Contains(s, ".")
}

// LocalHost is the name of this machine, or "localhost" when it has none:
// the host of a worker that is not told its own.
func LocalHost() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// WorkerIDFor turns a host name into the start of a worker id: characters a
// worker id cannot hold become '_' ("I.I.I.I" gives "I_I_I_I").
func WorkerIDFor(host string) string {
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "worker"
	}
	return string(b)
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

// ErrArgs is the error of DecodeArgs for arguments that do not fit.
var ErrArgs = errors.New("job arguments do not fit")

// DecodeArgs decodes the job's arguments, in order, into the values dst
// points to, as encoding/json decodes them: args arrive from JSON, so a
// number is a float64 in Args and decodes into an int only when it is
// integral. Arguments past len(dst) are left alone; fewer arguments than
// dst is an error (ErrArgs), as is one of the wrong type.
func (j *Job) DecodeArgs(dst ...any) error {
	if len(dst) > len(j.Args) {
		return fmt.Errorf("%w: %d wanted, the job has %d", ErrArgs, len(dst), len(j.Args))
	}
	for i, d := range dst {
		raw, err := json.Marshal(j.Args[i])
		if err != nil {
			return fmt.Errorf("%w: args[%d]: %w", ErrArgs, i, err)
		}
		if err := json.Unmarshal(raw, d); err != nil {
			return fmt.Errorf("%w: args[%d] is %s: %w", ErrArgs, i, raw, err)
		}
	}
	return nil
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
