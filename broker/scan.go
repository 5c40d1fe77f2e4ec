package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// StoredMsg is a message read back from a stream.
type StoredMsg struct {
	Sequence uint64
	Subject  string
	Time     time.Time
	Header   nats.Header
	Data     []byte
}

// scanBatch is how many messages one request of ScanStream asks for.
const scanBatch = 1000

// ScanStream calls fn with every message of a stream on subject (wildcards
// allowed), in order, as stored when each batch is read. It reads with
// batched direct gets, a thousand messages a request: a work-queue stream
// cannot take a second consumer over its workers' subjects, and reading it
// one message a request took 19 s for 100,000 jobs. The stream must allow
// direct gets. A timeout stays per request: ctx bounds the whole scan.
func (r *Resources) ScanStream(ctx context.Context, stream, subject string, fn func(StoredMsg)) error {
	nc := r.JS.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Room for a whole batch and then some: it arrives at once.
	_ = sub.SetPendingLimits(4*scanBatch, 256<<20)
	next := uint64(1)
	for {
		req, _ := json.Marshal(struct {
			Seq     uint64 `json:"seq"`
			NextFor string `json:"next_by_subj"`
			Batch   int    `json:"batch"`
		}{next, subject, scanBatch})
		if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
			return fmt.Errorf("scan %s: %w", stream, err)
		}
		more, err := readBatch(ctx, sub, stream, &next, fn)
		if err != nil || !more {
			return err
		}
	}
}

// readBatch reads one batch's messages up to its end, and reports whether
// the stream holds more after it.
func readBatch(ctx context.Context, sub *nats.Subscription, stream string, next *uint64, fn func(StoredMsg)) (bool, error) {
	for {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				err = fmt.Errorf("%w: no answer from stream %s within 5 s", nats.ErrTimeout, stream)
			}
			return false, fmt.Errorf("scan %s: %w", stream, err)
		}
		switch m.Header.Get("Status") {
		case "":
		case "503": // no stream leader to answer (yet)
			return false, fmt.Errorf("scan %s: %w", stream, nats.ErrNoResponders)
		case "404": // nothing at or after the sequence
			return false, nil
		case "204": // the batch's end
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return pending > 0, nil
		default:
			return false, fmt.Errorf("scan %s: status %s %s", stream, m.Header.Get("Status"), m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return false, fmt.Errorf("scan %s: a message without its sequence", stream)
		}
		at, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
		fn(StoredMsg{Sequence: seq, Subject: m.Header.Get("Nats-Subject"), Time: at, Header: m.Header, Data: m.Data})
		*next = seq + 1
	}
}
