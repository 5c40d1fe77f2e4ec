package world

import (
	"flag"
	"fmt"

	"github.com/rs/zerolog"
)

// Config is the world service's settings as the programs take them: flags
// (registered on the program's flag set, so that package config fills them
// from its file and environment too).
type Config struct {
	// Serve runs the world service inside a program that can (hvmind-pool).
	Serve bool
	// Scenario is an embedded scenario (newgame, reference-880) or a
	// scenario file; empty resumes the stored world, or starts newgame.
	Scenario string
	// Speed is game time per real time (60: a game hour per real minute).
	Speed float64
	// Seed decides the hack rolls.
	Seed int64
	// Reset discards the stored world and starts again from Scenario.
	Reset bool
}

// DefaultConfig is the world's settings when none is given.
func DefaultConfig() Config { return Config{Serve: true, Speed: DefaultSpeed} }

// RegisterFlags adds the world service's flags to fs: --scenario, --speed,
// --seed and --reset, and --world when serve (for a program that runs the
// service beside its own work).
func (c *Config) RegisterFlags(fs *flag.FlagSet, serve bool) {
	if serve {
		fs.BoolVar(&c.Serve, "world", c.Serve, "run the world service in this process (off: run hvmind-world)")
	}
	fs.StringVar(&c.Scenario, "scenario", c.Scenario, "world scenario: newgame, reference-880 or a scenario file (empty: resume the stored world, else newgame)")
	fs.Float64Var(&c.Speed, "speed", c.Speed, "world speed: game time per real time (60 = a game hour per real minute)")
	fs.Int64Var(&c.Seed, "seed", c.Seed, "seed of the world's hack rolls")
	fs.BoolVar(&c.Reset, "reset", c.Reset, "discard the stored world and start again from --scenario")
}

// Validate checks the settings as a person gives them: a speed of 0 is no
// speed, not the default.
func (c *Config) Validate() error {
	if !(c.Speed > 0) || c.Speed > 1e9 {
		return fmt.Errorf("%w: --speed %v: want a positive number up to 1e9", ErrInvalidOption, c.Speed)
	}
	return nil
}

// Options is the settings as the service's Options.
func (c *Config) Options(log zerolog.Logger) Options {
	return Options{Scenario: c.Scenario, Speed: c.Speed, Seed: c.Seed, Reset: c.Reset, Logger: log}
}
