package cli_test

import (
	"errors"
	"testing"

	"github.com/hvmind/hvmind/internal/cli"
)

func TestLockOne(t *testing.T) {
	t.Parallel()
	what := "test " + t.Name()
	release, err := cli.LockOne(what, "nats://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.LockOne(what, "nats://127.0.0.1:1"); !errors.Is(err, cli.ErrRunning) {
		t.Fatalf("second lock of the same name and broker: %v, want ErrRunning", err)
	}
	other, err := cli.LockOne(what, "nats://127.0.0.1:2")
	if err != nil {
		t.Fatalf("the same name on another broker: %v", err)
	}
	other()
	release()
	again, err := cli.LockOne(what, "nats://127.0.0.1:1")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again()
}
