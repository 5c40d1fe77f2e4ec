package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvmind/hvmind/config"
)

// Precedence: defaults < file < environment < flags.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hvmind.json")
	if err := os.WriteFile(file, []byte(`{"threads": 16, "host": "n00dles", "tolerance": "7ms", "log-level": "debug", "reserve": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HVMIND_HOST", "foodnstuff")
	t.Setenv("HVMIND_LOG_LEVEL", "warn")
	t.Setenv("NATS_URL", "nats://from-env:4222")
	cfg := config.Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.RegisterCommon(fs)
	cfg.RegisterWorker(fs)
	if err := cfg.Parse(fs, []string{"--config", file, "--log-level", "error", "--id", "w1"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"file over default", cfg.Worker.Threads, 16},
		{"file duration", cfg.Worker.Tolerance, 7 * time.Millisecond},
		{"file bool", cfg.Worker.Reserve, true},
		{"environment over file", cfg.Worker.Host, "foodnstuff"},
		{"flag over environment", cfg.LogLevel, "error"},
		{"NATS_URL", cfg.NATS, "nats://from-env:4222"},
		{"default", cfg.Worker.Heartbeat, time.Second},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestBadSettingsAreErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, env, want string
	}{
		{"unknown key", `{"thraeds": 4}`, "", `unknown setting "thraeds"`},
		{"bad value", `{"threads": "many"}`, "", "threads"},
		{"bad json", `{"threads": `, "", "config file"},
		{"bad env", `{}`, "zzz", "HVMIND_TOLERANCE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			_ = os.WriteFile(file, []byte(tc.file), 0o644)
			if tc.env != "" {
				t.Setenv("HVMIND_TOLERANCE", tc.env)
			}
			cfg := config.Default()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			cfg.RegisterCommon(fs)
			cfg.RegisterWorker(fs)
			err := cfg.Parse(fs, []string{"--config", file})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := config.NewLogger(os.Stderr, "t", "loud", "json"); err == nil {
		t.Error("an unknown log level was accepted")
	}
}

// A setting out of range is an error, never silently the default.
func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"--spin", "0", "--idle-stop", "0"}, ""}, // their 0 means never
		{[]string{"--spin", "-1ms"}, "--spin"},
		{[]string{"--idle-stop", "-5s"}, "--idle-stop"},
		{[]string{"--tolerance", "0"}, "--tolerance"},
		{[]string{"--heartbeat", "-1s"}, "--heartbeat"},
		{[]string{"--spawn-wait", "0s"}, "--spawn-wait"},
		{[]string{"--threads", "0"}, "--threads"},
		{[]string{"--workers", "-1"}, "--workers"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			cfg.RegisterCommon(fs)
			cfg.RegisterPool(fs)
			if err := cfg.Parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid about %s", err, tc.want)
			}
		})
	}
}
