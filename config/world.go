package config

import "flag"

// World configures the world service (hvmind-world, and hvmind-pool, which
// runs it by default).
type World struct {
	// Serve runs the world service inside hvmind-pool.
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

// RegisterWorld adds the world service's flags.
func (c *Config) RegisterWorld(fs *flag.FlagSet) {
	fs.StringVar(&c.World.Scenario, "scenario", c.World.Scenario, "world scenario: newgame, reference-880 or a scenario file (empty: resume the stored world, else newgame)")
	fs.Float64Var(&c.World.Speed, "speed", c.World.Speed, "world speed: game time per real time (60 = a game hour per real minute)")
	fs.Int64Var(&c.World.Seed, "seed", c.World.Seed, "seed of the world's hack rolls")
	fs.BoolVar(&c.World.Reset, "reset", c.World.Reset, "discard the stored world and start again from --scenario")
}

// RegisterWorldServe adds the world's flags to a program that can run the
// world service beside its own work (hvmind-pool): --world and RegisterWorld's.
func (c *Config) RegisterWorldServe(fs *flag.FlagSet) {
	fs.BoolVar(&c.World.Serve, "world", c.World.Serve, "run the world service in this process (off: run hvmind-world)")
	c.RegisterWorld(fs)
}
