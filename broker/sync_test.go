package broker_test

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
)

func TestParseSync(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    broker.Sync
		wantErr bool
	}{
		{in: "", want: broker.Sync{}},
		{in: "default", want: broker.Sync{}},
		{in: "always", want: broker.Sync{Always: true}},
		{in: "1s", want: broker.Sync{Interval: time.Second}},
		{in: "250ms", want: broker.Sync{Interval: 250 * time.Millisecond}},
		{in: "0s", wantErr: true},
		{in: "-1s", wantErr: true},
		{in: "sometimes", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := broker.ParseSync(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseSync(%q): error %v, want an error: %v", tc.in, err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("ParseSync(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if err == nil && tc.in != "" && tc.in != "default" {
				if again, _ := broker.ParseSync(got.String()); again != got {
					t.Errorf("%+v prints as %q, which reads back as %+v", got, got.String(), again)
				}
			}
		})
	}
}

// The embedded server runs JetStream with the sync setting it was given.
func TestEmbeddedSync(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sync broker.Sync
		want broker.Sync
	}{
		{name: "default", sync: broker.Sync{}, want: broker.Sync{Interval: 2 * time.Minute}},
		{name: "always", sync: broker.Sync{Always: true}, want: broker.Sync{Always: true, Interval: 2 * time.Minute}},
		{name: "interval", sync: broker.Sync{Interval: time.Second}, want: broker.Sync{Interval: time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			emb, err := broker.StartEmbedded(broker.EmbeddedOptions{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Sync: tc.sync, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			defer emb.Shutdown()
			if got := emb.Sync(); got != tc.want {
				t.Fatalf("server syncs %+v, want %+v", got, tc.want)
			}
		})
	}
}
