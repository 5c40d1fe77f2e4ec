package pool

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hvmind/hvmind/job"
)

// SubjectMarks prefixes the marks callers publish about their jobs:
// hvmind.marks.<source>. A mark is a moment worth seeing on a timeline
// (a batch that went wrong, a repair), drawn by the pool's web UI and
// readable with nats sub 'hvmind.marks.>'. Marks are plain NATS messages,
// not stored: a mark nobody watches is gone.
const SubjectMarks = "hvmind.marks."

// Mark is one moment on the jobs' timeline.
type Mark struct {
	// Time is when it happened (epoch ms; 0: when published).
	Time float64 `json:"time"`
	// Source says who marked it: a caller's name, or what it works on. It
	// must be a valid subject token.
	Source string `json:"source"`
	// Kind names what happened ("desync", "repair"...).
	Kind string `json:"kind"`
	// Level is "error" for something that went wrong, else "info".
	Level string `json:"level,omitempty"`
	// Note says it in words.
	Note string `json:"note,omitempty"`
	// Batch, when set, is the batch the mark is about.
	Batch string `json:"batch,omitempty"`
}

// Mark publishes m on SubjectMarks+m.Source. It does not wait for anyone
// to read it.
func (c *Client) Mark(m Mark) error {
	if !job.ValidWorkerID(m.Source) {
		return fmt.Errorf("mark: source %q: a source may hold only letters, digits, '-' and '_'", m.Source)
	}
	if m.Time == 0 {
		m.Time = job.Millis(time.Now())
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("mark: %w", err)
	}
	if err := c.nc.Publish(SubjectMarks+m.Source, data); err != nil {
		return fmt.Errorf("mark %s: %w", m.Kind, err)
	}
	return nil
}
