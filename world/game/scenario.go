package game

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"sort"
	"strings"
)

//go:embed scenarios/*.json
var embedded embed.FS

// ErrUnknownScenario is returned (wrapped) by LoadScenario when a name is
// neither an embedded scenario nor a readable file.
var ErrUnknownScenario = errors.New("unknown scenario")

// Scenario is a network to load: the player and every server, in the format
// of the files in world/game/scenarios.
type Scenario struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Bitnode     int      `json:"bitnode"`
	Player      Player   `json:"player"`
	Servers     []Server `json:"servers"`
}

// Player is the hacker: experience, intelligence, money and multipliers.
// A Player decoded from JSON without "mults" gets DefaultMults.
type Player struct {
	HackingExp   float64 `json:"hackingExp"`
	Intelligence float64 `json:"intelligence"`
	Money        float64 `json:"money"`
	Mults        Mults   `json:"mults"`
}

// Mults are the player's hacking multipliers. A multiplier absent from the
// JSON (or null) is 1; a Mults built in Go should start from DefaultMults.
type Mults struct {
	Hacking       float64 `json:"hacking"`
	HackingExp    float64 `json:"hacking_exp"`
	HackingSpeed  float64 `json:"hacking_speed"`
	HackingMoney  float64 `json:"hacking_money"`
	HackingGrow   float64 `json:"hacking_grow"`
	HackingChance float64 `json:"hacking_chance"`
}

// Server is one server of the network, with the field names of Bitburner's
// ns.getServer(). HackDifficulty is the current security.
type Server struct {
	Hostname             string  `json:"hostname"`
	OrganizationName     string  `json:"organizationName"`
	MaxRAM               float64 `json:"maxRam"`
	CPUCores             int     `json:"cpuCores"`
	HasAdminRights       bool    `json:"hasAdminRights"`
	PurchasedByPlayer    bool    `json:"purchasedByPlayer"`
	MoneyAvailable       float64 `json:"moneyAvailable"`
	MoneyMax             float64 `json:"moneyMax"`
	HackDifficulty       float64 `json:"hackDifficulty"`
	BaseDifficulty       float64 `json:"baseDifficulty"`
	MinDifficulty        float64 `json:"minDifficulty"`
	ServerGrowth         float64 `json:"serverGrowth"`
	RequiredHackingSkill int     `json:"requiredHackingSkill"`
	NumOpenPortsRequired int     `json:"numOpenPortsRequired"`
	RAMUsed              float64 `json:"ramUsed"`
}

// DefaultMults returns multipliers that are all 1.
func DefaultMults() Mults {
	return Mults{Hacking: 1, HackingExp: 1, HackingSpeed: 1, HackingMoney: 1, HackingGrow: 1, HackingChance: 1}
}

// UnmarshalJSON decodes multipliers, defaulting every absent or null one to 1.
func (m *Mults) UnmarshalJSON(data []byte) error {
	var raw struct {
		Hacking       *float64 `json:"hacking"`
		HackingExp    *float64 `json:"hacking_exp"`
		HackingSpeed  *float64 `json:"hacking_speed"`
		HackingMoney  *float64 `json:"hacking_money"`
		HackingGrow   *float64 `json:"hacking_grow"`
		HackingChance *float64 `json:"hacking_chance"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("decode mults: %w", err)
	}
	or1 := func(v *float64) float64 {
		if v == nil {
			return 1
		}
		return *v
	}
	*m = Mults{
		Hacking:       or1(raw.Hacking),
		HackingExp:    or1(raw.HackingExp),
		HackingSpeed:  or1(raw.HackingSpeed),
		HackingMoney:  or1(raw.HackingMoney),
		HackingGrow:   or1(raw.HackingGrow),
		HackingChance: or1(raw.HackingChance),
	}
	return nil
}

// Validate reports the first multiplier that is not a positive finite number.
func (m Mults) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"hacking", m.Hacking},
		{"hacking_exp", m.HackingExp},
		{"hacking_speed", m.HackingSpeed},
		{"hacking_money", m.HackingMoney},
		{"hacking_grow", m.HackingGrow},
		{"hacking_chance", m.HackingChance},
	} {
		if !(f.v > 0) || math.IsInf(f.v, 0) {
			return fmt.Errorf("mults.%s = %v: must be a positive number", f.name, f.v)
		}
	}
	return nil
}

// UnmarshalJSON decodes a player; absent mults are DefaultMults.
func (p *Player) UnmarshalJSON(data []byte) error {
	type plain Player
	v := plain{Mults: DefaultMults()}
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("decode player: %w", err)
	}
	*p = Player(v)
	return nil
}

// HackingLevel is the player's hacking level, from its exp and mults.hacking.
func (p Player) HackingLevel() int {
	return HackingLevel(p.HackingExp, p.Mults.Hacking)
}

// Hacker returns the player's current hacking level and multipliers, the
// attacker side of the formulas.
func (p Player) Hacker() Hacker {
	return Hacker{Level: p.HackingLevel(), Mults: p.Mults}
}

// Server returns a pointer to the server named name (so the caller may
// change it in place) and whether it exists.
func (sc *Scenario) Server(name string) (*Server, bool) {
	for i := range sc.Servers {
		if sc.Servers[i].Hostname == name {
			return &sc.Servers[i], true
		}
	}
	return nil, false
}

// Validate checks that the scenario is usable: unique non-empty hostnames,
// sane numbers and positive multipliers.
func (sc *Scenario) Validate() error {
	if err := sc.Player.Mults.Validate(); err != nil {
		return fmt.Errorf("player: %w", err)
	}
	if sc.Player.HackingExp < 0 || math.IsNaN(sc.Player.HackingExp) {
		return fmt.Errorf("player: hackingExp %v is negative", sc.Player.HackingExp)
	}
	seen := make(map[string]bool, len(sc.Servers))
	for i, s := range sc.Servers {
		if s.Hostname == "" {
			return fmt.Errorf("server #%d: empty hostname", i)
		}
		if seen[s.Hostname] {
			return fmt.Errorf("server %q: duplicate hostname", s.Hostname)
		}
		seen[s.Hostname] = true
		switch {
		case s.MaxRAM < 0 || s.RAMUsed < 0:
			return fmt.Errorf("server %q: negative RAM (maxRam %v, ramUsed %v)", s.Hostname, s.MaxRAM, s.RAMUsed)
		case s.CPUCores < 1:
			return fmt.Errorf("server %q: cpuCores %d, want >= 1", s.Hostname, s.CPUCores)
		case s.MoneyAvailable < 0 || s.MoneyMax < 0:
			return fmt.Errorf("server %q: negative money (moneyAvailable %v, moneyMax %v)", s.Hostname, s.MoneyAvailable, s.MoneyMax)
		case s.HackDifficulty < 0 || s.MinDifficulty < 0 || s.BaseDifficulty < 0:
			return fmt.Errorf("server %q: negative security", s.Hostname)
		case s.ServerGrowth < 0:
			return fmt.Errorf("server %q: negative serverGrowth %v", s.Hostname, s.ServerGrowth)
		}
	}
	return nil
}

// ParseScenario decodes and validates a scenario from JSON.
func ParseScenario(data []byte) (*Scenario, error) {
	sc := Scenario{Player: Player{Mults: DefaultMults()}}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&sc); err != nil {
		return nil, fmt.Errorf("parse scenario: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse scenario: trailing data after the JSON object")
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("invalid scenario %q: %w", sc.Name, err)
	}
	return &sc, nil
}

// ScenarioNames lists the embedded scenarios, sorted.
func ScenarioNames() []string {
	entries, err := fs.ReadDir(embedded, "scenarios")
	if err != nil { // cannot happen: the directory is embedded
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// LoadScenario returns a fresh copy of the embedded scenario called
// nameOrPath ("newgame", "reference-880"), or else reads nameOrPath as a
// JSON file. An unknown name wraps ErrUnknownScenario.
func LoadScenario(nameOrPath string) (*Scenario, error) {
	var (
		data []byte
		err  error
	)
	if isEmbeddedName(nameOrPath) {
		data, err = embedded.ReadFile(path.Join("scenarios", nameOrPath+".json"))
	} else {
		data, err = os.ReadFile(nameOrPath)
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: not one of %s and %w", ErrUnknownScenario, strings.Join(ScenarioNames(), ", "), err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load scenario %q: %w", nameOrPath, err)
	}
	sc, err := ParseScenario(data)
	if err != nil {
		return nil, fmt.Errorf("load scenario %q: %w", nameOrPath, err)
	}
	return sc, nil
}

func isEmbeddedName(name string) bool {
	for _, n := range ScenarioNames() {
		if n == name {
			return true
		}
	}
	return false
}
