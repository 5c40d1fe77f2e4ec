package game

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestScenarioNames(t *testing.T) {
	t.Parallel()
	if got, want := ScenarioNames(), []string{"newgame", "reference-880"}; !slices.Equal(got, want) {
		t.Errorf("ScenarioNames() = %v, want %v", got, want)
	}
}

func TestLoadEmbeddedScenarios(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		servers   int
		level     int
		rooted    int
		totalRAM  float64
		home      float64
		homeCores int
	}{
		{"newgame", 71, 1, 8, 108, 8, 1},
		{"reference-880", 71, 880, 71, 35836, 32768, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := mustScenario(t, tt.name)
			if sc.Name != tt.name || len(sc.Servers) != tt.servers {
				t.Errorf("name %q with %d servers, want %q with %d", sc.Name, len(sc.Servers), tt.name, tt.servers)
			}
			if got := sc.Player.HackingLevel(); got != tt.level {
				t.Errorf("player level %d, want %d", got, tt.level)
			}
			home, ok := sc.Server("home")
			if !ok || home.MaxRAM != tt.home || home.CPUCores != tt.homeCores || !home.HasAdminRights {
				t.Errorf("home = %+v", home)
			}
			rooted, ram := 0, 0.0
			for _, s := range sc.Servers {
				if s.HasAdminRights {
					rooted++
					ram += s.MaxRAM
				}
			}
			if rooted != tt.rooted || ram != tt.totalRAM {
				t.Errorf("%d rooted servers with %v GB, want %d with %v", rooted, ram, tt.rooted, tt.totalRAM)
			}
			if _, ok := sc.Server("no-such-server"); ok {
				t.Error("Server(no-such-server) found something")
			}
		})
	}
}

func TestLoadScenarioReturnsFreshCopies(t *testing.T) {
	t.Parallel()
	a, b := mustScenario(t, "newgame"), mustScenario(t, "newgame")
	s, _ := a.Server("n00dles")
	s.MoneyAvailable = -42
	if s2, _ := b.Server("n00dles"); s2.MoneyAvailable == -42 {
		t.Error("scenarios share state")
	}
	if s3, _ := a.Server("n00dles"); s3.MoneyAvailable != -42 {
		t.Error("Server does not return a pointer into the scenario")
	}
}

func TestLoadScenarioFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"name": "tiny", "player": {"hackingExp": 0},
		"servers": [{"hostname": "home", "maxRam": 8, "cpuCores": 1, "hasAdminRights": true}]}`)
	sc, err := LoadScenario(good)
	if err != nil {
		t.Fatalf("LoadScenario(%s): %v", good, err)
	}
	if sc.Player.Mults != DefaultMults() {
		t.Errorf("absent mults = %+v, want all 1", sc.Player.Mults)
	}

	tests := []struct {
		name    string
		arg     string
		wantIs  error
		wantMsg string
	}{
		{"unknown name", "oldgame", ErrUnknownScenario, `load scenario "oldgame": unknown scenario`},
		{"missing file", filepath.Join(dir, "nope.json"), fs.ErrNotExist, "unknown scenario"},
		{"malformed", write("bad.json", `{"name": `), nil, "parse scenario"},
		{"trailing", write("trail.json", `{"name": "x"} {}`), nil, "trailing data"},
		{"duplicate host", write("dup.json", `{"name": "d", "servers": [{"hostname": "a", "cpuCores": 1}, {"hostname": "a", "cpuCores": 1}]}`), nil, "duplicate hostname"},
		{"no hostname", write("noname.json", `{"name": "d", "servers": [{"cpuCores": 1}]}`), nil, "empty hostname"},
		{"zero cores", write("cores.json", `{"name": "d", "servers": [{"hostname": "a"}]}`), nil, "cpuCores 0"},
		{"bad mults", write("mults.json", `{"name": "d", "player": {"mults": {"hacking_speed": 0}}}`), nil, "hacking_speed"},
		{"directory", dir, nil, "load scenario"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadScenario(tt.arg)
			if err == nil {
				t.Fatalf("LoadScenario(%q) succeeded", tt.arg)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestMultsJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Mults
	}{
		{`{}`, DefaultMults()},
		{`null`, DefaultMults()},
		{`{"hacking": 2, "hacking_speed": null}`, Mults{2, 1, 1, 1, 1, 1}},
		{`{"hacking": 2, "hacking_exp": 3, "hacking_speed": 4, "hacking_money": 5, "hacking_grow": 6, "hacking_chance": 7}`, Mults{2, 3, 4, 5, 6, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			m := Mults{Hacking: 99}
			if err := json.Unmarshal([]byte(tt.in), &m); err != nil {
				t.Fatal(err)
			}
			if m != tt.want {
				t.Errorf("got %+v, want %+v", m, tt.want)
			}
			// And it round-trips.
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var back Mults
			if err := json.Unmarshal(data, &back); err != nil || back != m {
				t.Errorf("round trip: %+v, %v", back, err)
			}
		})
	}
	var m Mults
	if err := json.Unmarshal([]byte(`{"hacking": "x"}`), &m); err == nil {
		t.Error("bad mults decoded without error")
	}
}

func TestServerJSONNames(t *testing.T) {
	t.Parallel()
	data, err := json.Marshal(Server{})
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	want := []string{"hostname", "organizationName", "maxRam", "cpuCores", "hasAdminRights", "purchasedByPlayer",
		"moneyAvailable", "moneyMax", "hackDifficulty", "baseDifficulty", "minDifficulty", "serverGrowth",
		"requiredHackingSkill", "numOpenPortsRequired", "ramUsed"}
	for _, k := range want {
		if _, ok := fields[k]; !ok {
			t.Errorf("field %q missing", k)
		}
	}
	if len(fields) != len(want) {
		t.Errorf("%d fields, want %d", len(fields), len(want))
	}
}

func TestHostThreads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    Server
		want int
	}{
		{"home 8 GB", Server{HasAdminRights: true, MaxRAM: 8}, 4},
		{"partly used", Server{HasAdminRights: true, MaxRAM: 32, RAMUsed: 3.5}, 16},
		{"no root", Server{MaxRAM: 32}, 0},
		{"no RAM", Server{HasAdminRights: true}, 0},
		{"over-used", Server{HasAdminRights: true, MaxRAM: 4, RAMUsed: 8}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := HostThreads(&tt.s); got != tt.want {
				t.Errorf("HostThreads = %d, want %d", got, tt.want)
			}
		})
	}
}
