package tasks

import (
	"context"
	"testing"
	"time"
)

// A request whose reply is lost (the world restarted while it was in
// flight) is asked again after one attempt's time, not at the end of the
// whole time it may be retried for.
func TestRetryAsksAgainAfterOneAttempt(t *testing.T) {
	t.Parallel()
	calls := 0
	start := time.Now()
	err := retry(context.Background(), 30*time.Second, func(ctx context.Context) error {
		calls++
		if calls == 1 {
			<-ctx.Done() // no reply comes
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("retry = %v after %d calls, want success on the second", err, calls)
	}
	if took := time.Since(start); took > attemptTimeout+time.Second {
		t.Errorf("the second attempt came after %s, want about %s", took, attemptTimeout)
	}
}
