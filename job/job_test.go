package job_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hvmind/hvmind/job"
)

func TestRoundTripKeepsUnknownFieldsByteForByte(t *testing.T) {
	t.Parallel()
	in := `{"task":"sleep","threads":10,"duration":500,"note":"mine",` +
		`"expect":{ "money" : 1.50e3, "tags":[1, 2 ,3]},"html":"<a&b>","unicode":"\u00e9"}`
	j, err := job.Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	j.ID = "abc"
	j.Worker = "home-1"
	j.Status = job.StatusDone
	out, err := job.Encode(&j)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"note":"mine"`,
		`"expect":{ "money" : 1.50e3, "tags":[1, 2 ,3]}`,
		`"html":"<a&b>"`,
		`"unicode":"\u00e9"`,
		`"worker":"home-1"`,
		`"status":"done"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("record %s lacks %s", out, want)
		}
	}
	back, err := job.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Extra) != 4 || back.Extra[0].Key != "note" || back.Extra[3].Key != "unicode" {
		t.Errorf("extra members lost or reordered: %+v", back.Extra)
	}
}

func TestMinCoresRoundTrip(t *testing.T) {
	t.Parallel()
	j, err := job.Parse([]byte(`{"task":"grow","threads":4,"minCores":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if j.MinCores != 3 {
		t.Fatalf("minCores = %d, want 3", j.MinCores)
	}
	out, err := job.Encode(&j)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"minCores":3`) {
		t.Fatalf("record %s lacks minCores", out)
	}
	j.MinCores = 0
	if out, _ := job.Encode(&j); strings.Contains(string(out), "minCores") {
		t.Fatalf("record %s has minCores though it is unset", out)
	}
}

// A job's tolerance goes through a round trip, and bounds how late it may
// start on a worker that allows more, never less.
func TestTolerance(t *testing.T) {
	t.Parallel()
	j, err := job.Parse([]byte(`{"task":"hack","threads":4,"tolerance":1.5}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := job.Encode(&j)
	if err != nil || !strings.Contains(string(out), `"tolerance":1.5`) {
		t.Fatalf("record %s, %v: want its tolerance", out, err)
	}
	for _, tc := range []struct {
		tolerance float64
		worker    time.Duration
		want      time.Duration
	}{
		{1.5, 50 * time.Millisecond, 1500 * time.Microsecond},
		{100, 50 * time.Millisecond, 50 * time.Millisecond},
		{0, 5 * time.Millisecond, 5 * time.Millisecond},
		{1e300, 5 * time.Millisecond, 5 * time.Millisecond},
	} {
		j.Tolerance = tc.tolerance
		if got := j.StartWithin(tc.worker); got != tc.want {
			t.Errorf("tolerance %v ms on a worker allowing %s: %s, want %s", tc.tolerance, tc.worker, got, tc.want)
		}
	}
}

// breaksBatch goes through a round trip, and is left out when unset.
func TestBreaksBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"task":"grow","threads":1,"breaksBatch":true}`, `"breaksBatch":true`},
		{`{"task":"grow","threads":1,"breaksBatch":false}`, ""},
		{`{"task":"grow","threads":1,"breaksBatch":null}`, ""},
	} {
		j, err := job.Parse([]byte(tc.in))
		if err != nil {
			t.Fatalf("Parse(%s): %v", tc.in, err)
		}
		out, err := job.Encode(&j)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(out), "breaksBatch"); got != (tc.want != "") || (got && !strings.Contains(string(out), tc.want)) {
			t.Errorf("Parse(%s) encodes as %s, want %q", tc.in, out, tc.want)
		}
	}
}

func TestParseRejectsBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
	}{
		{"not json", `{"task":`},
		{"array for object", `[1,2]`},
		{"string threads", `{"task":"sleep","threads":"ten"}`},
		{"fractional minCores", `{"task":"grow","threads":1,"minCores":1.5}`},
		{"string breaksBatch", `{"task":"grow","threads":1,"breaksBatch":"yes"}`},
		{"trailing", `{"task":"sleep"} {}`},
		{"empty", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := job.Parse([]byte(tc.in)); !errors.Is(err, job.ErrMalformed) {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed", tc.in, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	now := job.Now()
	for _, tc := range []struct {
		name string
		j    job.Job
		want error
	}{
		{"ok", job.Job{Task: "sleep", Threads: 1, Duration: 10}, nil},
		{"ok scheduled", job.Job{Task: "sleep", Threads: 1, StartTime: now + 1000, EndTime: now + 2000}, nil},
		{"no task", job.Job{Threads: 1}, job.ErrNoTask},
		{"zero threads", job.Job{Task: "sleep"}, job.ErrThreads},
		{"negative threads", job.Job{Task: "sleep", Threads: -3}, job.ErrThreads},
		{"negative duration", job.Job{Task: "sleep", Threads: 1, Duration: -1}, job.ErrDuration},
		{"end before start", job.Job{Task: "sleep", Threads: 1, StartTime: now + 2000, EndTime: now + 1000}, job.ErrWindow},
		{"start in the past", job.Job{Task: "sleep", Threads: 1, StartTime: now - 1000}, job.ErrStartInPast},
		{"bad id", job.Job{ID: "a b", Task: "sleep", Threads: 1}, job.ErrInvalidID},
		{"status set", job.Job{Task: "sleep", Threads: 1, Status: job.StatusDone}, job.ErrUnknownField},
		{"negative minCores", job.Job{Task: "grow", Threads: 1, MinCores: -1}, job.ErrMalformed},
		{"ok tolerance", job.Job{Task: "sleep", Threads: 1, Tolerance: 1.5}, nil},
		{"negative tolerance", job.Job{Task: "sleep", Threads: 1, Tolerance: -1}, job.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.j.Validate(now, 5*time.Millisecond)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseMany(t *testing.T) {
	t.Parallel()
	jobs, err := job.ParseMany([]byte(` [{"task":"a","threads":1},{"task":"b","threads":2,"x":1}]`))
	if err != nil || len(jobs) != 2 || jobs[1].Task != "b" {
		t.Fatalf("ParseMany = %+v, %v", jobs, err)
	}
	if _, err := job.ParseMany([]byte(`[{"task":"a"}, 7]`)); err == nil || !strings.Contains(err.Error(), "job 1") {
		t.Fatalf("want an error naming job 1, got %v", err)
	}
}

func ExampleParse() {
	j, _ := job.Parse([]byte(`{"task":"hack","args":["foodnstuff"],"threads":100,"duration":1000,"expected":42}`))
	j.ID = "j1"
	j.Status = job.StatusDone
	out, _ := job.Encode(&j)
	fmt.Println(string(out))
	// Output: {"id":"j1","task":"hack","args":["foodnstuff"],"threads":100,"duration":1000,"status":"done","expected":42}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"task":"sleep","threads":10,"duration":500,"note":"mine"}`,
		`{"id":"a","args":["n00dles",1,true,null],"x":{"y":[1,2,{"z":"\u00e9\n"}]},"result":{"stolen":1e3}}`,
		`{"task":"t","threads":1,"startTime":1.5e12,"endTime":null,"é":"\"q\""}`,
		`{}`, `[]`, `{"a":}`, `{"a":01}`, `{"a":"\x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := job.Parse(data)
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		out, err := job.Encode(&j)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out) {
			t.Fatalf("encoded invalid JSON %q from %q", out, data)
		}
		back, err := job.Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out, err)
		}
		// After one round trip (which may replace invalid UTF-8), stable.
		again, _ := job.Encode(&back)
		third, err := job.Parse(again)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", again, err)
		}
		if final, _ := job.Encode(&third); string(final) != string(again) {
			t.Fatalf("not stable:\n%s\n%s", again, final)
		}
	})
}

func TestParseSummary(t *testing.T) {
	t.Parallel()
	s, err := job.ParseSummary([]byte(`{"id":"a","task":"hack","args":["n00dles"],"threads":3,"duration":7,"startTime":12.5,"endTime":20,` +
		`"worker":"w1","actualStartTime":13,"actualEndTime":20.5,"status":"missed","reason":"late \"by\" 1ms","result":{"x":[1,2]},"mine":{"y":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := job.Summary{ID: "a", Task: "hack", Worker: "w1", Reason: `late "by" 1ms`, Status: job.StatusMissed,
		StartTime: 12.5, ActualStartTime: 13, EndTime: 20, ActualEndTime: 20.5, Duration: 7}
	if s != want {
		t.Fatalf("ParseSummary = %+v, want %+v", s, want)
	}
	if _, err := job.ParseSummary([]byte(`{"id":"a",`)); !errors.Is(err, job.ErrMalformed) {
		t.Fatalf("truncated record: %v", err)
	}
}

func TestWorkerIDFor(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]string{"home": "home", "I.I.I.I": "I_I_I_I", "run4theh111z": "run4theh111z", ".": "_", "": "worker"} {
		if got := job.WorkerIDFor(host); got != want || !job.ValidWorkerID(got+"-1") {
			t.Errorf("WorkerIDFor(%q) = %q, want %q (a valid worker id)", host, got, want)
		}
	}
}

func TestDecodeArgs(t *testing.T) {
	t.Parallel()
	j, err := job.Parse([]byte(`{"task":"resize","threads":1,"args":["cat.png",640,0.5,{"fit":"cover"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var (
		name  string
		width int
		scale float64
		opts  struct {
			Fit string `json:"fit"`
		}
	)
	if err := j.DecodeArgs(&name, &width, &scale, &opts); err != nil {
		t.Fatal(err)
	}
	if name != "cat.png" || width != 640 || scale != 0.5 || opts.Fit != "cover" {
		t.Errorf("decoded %q %d %v %+v", name, width, scale, opts)
	}
	for _, tc := range []struct {
		name string
		dst  []any
	}{
		{"too many wanted", []any{&name, &width, &scale, &opts, new(int)}},
		{"fraction into an int", []any{&name, &width, &width}},
		{"string into an int", []any{&width}},
	} {
		if err := j.DecodeArgs(tc.dst...); !errors.Is(err, job.ErrArgs) {
			t.Errorf("%s: %v, want ErrArgs", tc.name, err)
		}
	}
}
