package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// JobStreams is how many streams the placed jobs are spread over, each
// worker's queue in one of them by a hash of its id (JobStreamOf).
//
// One stream held every worker's queue before, and nats-server visits
// every consumer of a work-queue stream on every acknowledgement (is any
// other consumer still interested in the message?) and on every consumer
// it creates (do the filters overlap?), under the stream's lock: with a
// durable consumer per worker, an acknowledgement cost 4 µs on a stream of
// one consumer, 10 µs with 100 and 64 µs with 1,000, and dispatch at
// 1,000 workers fell to under half its rate at 10. Spread over sixteen
// streams, a stream holds a sixteenth of the consumers.
//
// The count is part of the layout every program shares: a worker's jobs
// are on JobsSubject(worker) whichever program computes it.
const JobStreams = 16

// JobStreamOf is the index of the stream that holds a worker's queue.
func JobStreamOf(worker string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(worker))
	return int(h.Sum32() % JobStreams)
}

// JobStreamName is the name of job stream i: HVMIND_JOBS_00 to HVMIND_JOBS_15.
func JobStreamName(i int) string { return fmt.Sprintf("%s_%02d", StreamJobs, i) }

// JobStreamNames are the names of every job stream, in index order.
func JobStreamNames() []string {
	names := make([]string, JobStreams)
	for i := range names {
		names[i] = JobStreamName(i)
	}
	return names
}

// jobStreamSubjects are the subjects job stream i holds:
// hvmind.jobs.<i>.<worker>, a worker id being one token.
func jobStreamSubjects(i int) string { return fmt.Sprintf("%s%02d.*", SubjectJobs, i) }

// JobsSubject is the subject of one worker's placed jobs:
// hvmind.jobs.<stream>.<worker>, stream being JobStreamOf(worker) in two
// digits.
func JobsSubject(worker string) string {
	return fmt.Sprintf("%s%02d.%s", SubjectJobs, JobStreamOf(worker), worker)
}

// JobsWorker is the worker whose jobs travel on subject, a JobsSubject;
// false for any other subject.
func JobsWorker(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, SubjectJobs)
	if !ok {
		return "", false
	}
	_, worker, ok := strings.Cut(rest, ".")
	if !ok || worker == "" || strings.Contains(worker, ".") || JobsSubject(worker) != subject {
		return "", false
	}
	return worker, true
}

// JobsOf is the stream that holds a worker's queue.
func (r *Resources) JobsOf(worker string) jetstream.Stream { return r.Jobs[JobStreamOf(worker)] }

// QueuedMsg names a message in the job streams: the stream's index and
// the message's sequence in it (sequences are per stream).
type QueuedMsg struct {
	Stream int
	Seq    uint64
}

// QueuedOf names the message seq of a worker's queue.
func QueuedOf(worker string, seq uint64) QueuedMsg {
	return QueuedMsg{Stream: JobStreamOf(worker), Seq: seq}
}

// jobStreamConfig is the configuration of job stream i.
func jobStreamConfig(i int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        JobStreamName(i),
		Description: fmt.Sprintf("HVMIND placed jobs, one subject per worker (work queue), part %d of %d", i+1, JobStreams),
		Subjects:    []string{jobStreamSubjects(i)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
		AllowDirect: true,
		// One durable consumer per worker: nats-server allows 1,000
		// consumers on a stream unless the stream says otherwise.
		MaxConsumers: MaxWorkers,
	}
}

// ErrOldJobStream says that the broker holds the single jobs stream of an
// earlier version (HVMIND_JOBS, all of hvmind.jobs.>) with jobs still in
// it: its subjects overlap the job streams', which cannot be created
// beside it.
var ErrOldJobStream = errors.New("the broker holds the jobs stream of an earlier version")

// errOverlap says that a stream other than an earlier version's jobs
// stream holds subjects of the job streams: asking again will not help.
var errOverlap = errors.New("the job streams' subjects are taken")

// overlaps reports whether err is JetStream's refusal of a stream whose
// subjects overlap an existing stream's.
func overlaps(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10065 // JSStreamSubjectOverlapErr
}

// retireOldJobStream deletes the jobs stream of an earlier version when it
// holds no job, and refuses when it does (ErrOldJobStream).
func retireOldJobStream(ctx context.Context, js jetstream.JetStream) error {
	st, err := js.Stream(ctx, StreamJobs)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look for stream %s: %w", StreamJobs, err)
	}
	if n := st.CachedInfo().State.Msgs; n > 0 {
		plural := "s"
		if n == 1 {
			plural = ""
		}
		return fmt.Errorf("%w: %s still holds %d message%s of jobs: run the earlier version until they are done, or remove it (nats stream rm %s)",
			ErrOldJobStream, StreamJobs, n, plural, StreamJobs)
	}
	if err := js.DeleteStream(ctx, StreamJobs); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("remove the empty stream %s of an earlier version: %w", StreamJobs, err)
	}
	return nil
}

// JobsTotals are the job streams' counts, summed over the streams.
type JobsTotals struct {
	// Msgs is the messages the streams hold: jobs, and cancel and stop
	// requests, not yet acknowledged.
	Msgs uint64
	// Stored is the messages ever stored in them (their last sequences).
	Stored uint64
}

// JobsTotals reads every job stream's state and sums them.
func (r *Resources) JobsTotals(ctx context.Context) (JobsTotals, error) {
	var t JobsTotals
	for _, st := range r.Jobs {
		info, err := st.Info(ctx)
		if err != nil {
			return t, fmt.Errorf("stream %s: %w", st.CachedInfo().Config.Name, err)
		}
		t.Msgs += info.State.Msgs
		t.Stored += info.State.LastSeq
	}
	return t, nil
}
