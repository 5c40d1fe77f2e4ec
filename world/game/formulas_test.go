package game

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// vector is one line of testdata/formulas.jsonl.
type vector struct {
	FormulaQuery
	FormulaResult
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open("testdata/formulas.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v vector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("vector %d: %v", len(vs)+1, err)
		}
		vs = append(vs, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func mustScenario(t testing.TB, name string) *Scenario {
	t.Helper()
	sc, err := LoadScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// closeTo reports whether got is within 1e-9 relative error of want
// (absolute when want is 0).
func closeTo(got, want float64) bool {
	if want == 0 {
		return math.Abs(got) <= 1e-9
	}
	return math.Abs(got-want) <= 1e-9*math.Abs(want)
}

// checkResult compares every field of a result with the expected one.
func checkResult(t *testing.T, name string, got, want FormulaResult) {
	t.Helper()
	for _, c := range []struct {
		field     string
		got, want float64
	}{
		{"hackTimeMs", got.HackTimeMs, want.HackTimeMs},
		{"growTimeMs", got.GrowTimeMs, want.GrowTimeMs},
		{"weakenTimeMs", got.WeakenTimeMs, want.WeakenTimeMs},
		{"hackChance", got.HackChance, want.HackChance},
		{"hackPercent", got.HackPercent, want.HackPercent},
		{"weakenPerThread", got.WeakenPerThread, want.WeakenPerThread},
	} {
		if !closeTo(c.got, c.want) {
			t.Errorf("%s: %s = %.17g, want %.17g", name, c.field, c.got, c.want)
		}
	}
	if got.GrowThreadsToMax != want.GrowThreadsToMax {
		t.Errorf("%s: growThreadsToMax = %d, want %d", name, got.GrowThreadsToMax, want.GrowThreadsToMax)
	}
}

func TestVectors(t *testing.T) {
	t.Parallel()
	scenarios := map[string]*Scenario{}
	for _, n := range ScenarioNames() {
		scenarios[n] = mustScenario(t, n)
	}
	for i, v := range loadVectors(t) {
		name := fmt.Sprintf("line %d (%s/%s)", i+1, v.Scenario, v.Server)
		sc := scenarios[v.Scenario]
		if sc == nil {
			t.Fatalf("%s: unknown scenario", name)
		}
		target, ok := sc.Server(v.Server)
		if !ok {
			t.Fatalf("%s: unknown server", name)
		}
		s := *target
		s.HackDifficulty = *v.Security
		s.MoneyAvailable = *v.MoneyAvailable
		h := Hacker{Level: *v.HackingLevel, Mults: *v.Mults}
		cores := *v.Cores
		got := FormulaResult{
			HackTimeMs:       HackTimeMs(&s, h),
			GrowTimeMs:       GrowTimeMs(&s, h),
			WeakenTimeMs:     WeakenTimeMs(&s, h),
			HackChance:       HackChance(&s, h),
			HackPercent:      HackPercent(&s, h),
			GrowThreadsToMax: GrowThreads(&s, h, s.MoneyAvailable, s.MoneyMax, cores),
			WeakenPerThread:  WeakenPerThread(cores),
		}
		checkResult(t, name, got, v.FormulaResult)
	}
}

func TestHackingLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		exp  float64
		mult float64
		want int
	}{
		{"new game", 0, 1, 1},
		{"negative exp", -1000, 1, 1},
		{"tiny mult", 1e6, 0.001, 1},
		{"level 10", 173.44, 1, 10},
		{"just below level 10", 173.4, 1, 9},
		{"level 100", 11255.32, 1, 100},
		{"just below level 100", 11255.31, 1, 99},
		{"reference-880 player", 50000046.452622004, 2.396923158684677, 880},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := HackingLevel(tt.exp, tt.mult); got != tt.want {
				t.Errorf("HackingLevel(%v, %v) = %d, want %d", tt.exp, tt.mult, got, tt.want)
			}
		})
	}
}

func TestExpForLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level int
		mult  float64
		want  float64 // RULES.md's figure, to its precision
		tol   float64
	}{
		{1, 1, 0, 0}, // every player has level 1
		{0, 1, 0, 0},
		{2, 1, 16.82, 0.005}, // exp(202/32) - 534.6
		{10, 1, 173.44, 0.005},
		{100, 1, 11255.3, 0.05},
		{2, 0.5, 52.39, 0.005}, // exp(204/32) - 534.6
		{5, 0, 0, 0},           // no multiplier: the function gives 0
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("level %d mult %v", tt.level, tt.mult), func(t *testing.T) {
			t.Parallel()
			got := ExpForLevel(tt.level, tt.mult)
			if math.Abs(got-tt.want) > tt.tol {
				t.Errorf("ExpForLevel(%d) = %v, want %v", tt.level, got, tt.want)
			}
		})
	}
}

// TestExpForLevelInverse checks ExpForLevel is the exact inverse of HackingLevel.
func TestExpForLevelInverse(t *testing.T) {
	t.Parallel()
	for _, mult := range []float64{1, 0.5, 2.396923158684677} {
		for level := 2; level <= 3000; level++ {
			exp := ExpForLevel(level, mult)
			if exp == 0 {
				if HackingLevel(0, mult) < level {
					t.Fatalf("mult %v: ExpForLevel(%d) = 0 but level at 0 exp is %d", mult, level, HackingLevel(0, mult))
				}
				continue
			}
			if got := HackingLevel(exp, mult); got < level {
				t.Fatalf("mult %v: HackingLevel(ExpForLevel(%d)) = %d", mult, level, got)
			}
			if got := HackingLevel(math.Nextafter(exp, 0), mult); got >= level {
				t.Fatalf("mult %v: ExpForLevel(%d) = %v is not the least exp", mult, level, exp)
			}
		}
	}
}

func TestFormulaEdgeCases(t *testing.T) {
	t.Parallel()
	base := Server{
		Hostname: "t", HasAdminRights: true, MoneyMax: 1e9, MoneyAvailable: 1e9,
		HackDifficulty: 10, MinDifficulty: 5, BaseDifficulty: 15, ServerGrowth: 50,
		RequiredHackingSkill: 100, CPUCores: 1,
	}
	h := Hacker{Level: 500, Mults: DefaultMults()}
	with := func(f func(*Server)) *Server { s := base; f(&s); return &s }

	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"chance 0 at security 100", HackChance(with(func(s *Server) { s.HackDifficulty = 100 }), h), 0},
		{"chance 0 above security 100", HackChance(with(func(s *Server) { s.HackDifficulty = 150 }), h), 0},
		{"percent 0 at security 100", HackPercent(with(func(s *Server) { s.HackDifficulty = 100 }), h), 0},
		{"chance 0 without root", HackChance(with(func(s *Server) { s.HasAdminRights = false }), h), 0},
		{"chance capped at 1", HackChance(&base, Hacker{Level: 500, Mults: Mults{HackingChance: 10}}), 1},
		{"percent 0 when level far too low", HackPercent(&base, Hacker{Level: 10, Mults: DefaultMults()}), 0},
		{"percent capped at 1", HackPercent(&base, Hacker{Level: 500, Mults: Mults{HackingMoney: 1000}}), 1},
		{"stolen from no money", HackStolen(0, 0.5, 10), 0},
		{"stolen capped at money", HackStolen(100, 0.5, 10), 100},
		{"stolen", HackStolen(100, 0.01, 10), 10},
		{"hack security capped at ceil(1/pct)", HackSecurityIncrease(1000, 0.01), 0.2},
		{"hack security", HackSecurityIncrease(10, 0.01), 0.02},
		{"hack security pct 0", HackSecurityIncrease(10, 0), 0.02},
		{"grow security capped", GrowSecurityIncrease(100, 7), 0.028},
		{"grow security", GrowSecurityIncrease(5, 7), 0.02},
		{"grow from 0 money", GrowMoney(&base, h, 0, 1, 1), 1 * math.Exp(GrowLog(&base, h, 1))},
		{"grow capped at moneyMax", GrowMoney(&base, h, 9e8, 1e6, 1), 1e9},
		{"grow log capped below security 8.57", GrowLog(with(func(s *Server) { s.HackDifficulty = 1; s.ServerGrowth = 100 }), h, 1), math.Log(1.0035)},
		{"grow log with cores", GrowLog(with(func(s *Server) { s.HackDifficulty = 30; s.ServerGrowth = 100 }), h, 17), 2 * math.Log1p(0.001)},
		{"weaken per thread 1 core", WeakenPerThread(1), 0.05},
		{"weaken per thread 0 cores counts as 1", WeakenPerThread(0), 0.05},
		{"weaken 3 cores", WeakenAmount(8, 3), 0.45},
		{"clamp low to minDifficulty", ClampSecurity(&base, 1), 5},
		{"clamp high to 100", ClampSecurity(&base, 250), 100},
		{"clamp floor is 1", ClampSecurity(with(func(s *Server) { s.MinDifficulty = 0 }), 0.2), 1},
		{"exp success", ExpPerThread(&base, DefaultMults(), true), 7.5},
		{"exp failure", ExpPerThread(&base, DefaultMults(), false), 1.875},
		{"hack time", HackTimeMs(&base, Hacker{Level: 50, Mults: DefaultMults()}), 5 * (2.5*100*10 + 500) / 100 * 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if math.Abs(tt.got-tt.want) > 1e-12*math.Max(1, math.Abs(tt.want)) {
				t.Errorf("got %.17g, want %.17g", tt.got, tt.want)
			}
		})
	}
}

func TestGrowThreadsEdgeCases(t *testing.T) {
	t.Parallel()
	s := &Server{Hostname: "t", HasAdminRights: true, MoneyMax: 1e9, HackDifficulty: 10, MinDifficulty: 5, ServerGrowth: 50}
	h := Hacker{Level: 500, Mults: DefaultMults()}
	tests := []struct {
		name     string
		k        float64
		from, to float64
		want     int
	}{
		{"n == o", 0.01, 100, 100, 0},
		{"n < o", 0.01, 100, 50, 0},
		{"n NaN", 0.01, 100, math.NaN(), 0},
		{"zero growth is one dollar a thread", 0, 0, 10, 10},
		{"zero growth fractional", 0, 0.5, 10, 10},
		{"negative from counts as 0", 0, -50, 10, 10},
		{"one thread from 0", 1, 0, math.E, 1},
		{"from zero money", 0.01, 0, 1e6, SolveGrowThreads(0.01, 0, 1e6)},
		{"infinite target saturates", 0.01, 0, math.Inf(1), maxGrowThreads},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := SolveGrowThreads(tt.k, tt.from, tt.to); got != tt.want {
				t.Errorf("SolveGrowThreads(%v, %v, %v) = %d, want %d", tt.k, tt.from, tt.to, got, tt.want)
			}
		})
	}
	t.Run("target above moneyMax is capped", func(t *testing.T) {
		t.Parallel()
		if a, b := GrowThreads(s, h, 1e6, 1e12, 1), GrowThreads(s, h, 1e6, 1e9, 1); a != b {
			t.Errorf("GrowThreads to 1e12 = %d, to moneyMax = %d", a, b)
		}
	})
	t.Run("grow at max money adds no security", func(t *testing.T) {
		t.Parallel()
		at := *s
		at.MoneyAvailable = at.MoneyMax
		if m, sec := GrowEffect(&at, h, 100, 1); m != at.MoneyMax || sec != 0 {
			t.Errorf("GrowEffect at max = (%v, %v), want (%v, 0)", m, sec, at.MoneyMax)
		}
	})
	t.Run("grow effect counts only needed threads", func(t *testing.T) {
		t.Parallel()
		at := *s
		at.MoneyAvailable = at.MoneyMax / 2
		need := GrowThreads(&at, h, at.MoneyAvailable, at.MoneyMax, 1)
		m, sec := GrowEffect(&at, h, need*10, 1)
		if m != at.MoneyMax || math.Abs(sec-0.004*float64(need)) > 1e-12 {
			t.Errorf("GrowEffect = (%v, %v), want (%v, %v)", m, sec, at.MoneyMax, 0.004*float64(need))
		}
	})
}

// checkGrowSolution verifies the defining property of SolveGrowThreads.
func checkGrowSolution(t *testing.T, k, o, n float64) {
	t.Helper()
	x := SolveGrowThreads(k, o, n)
	ok := func(x int) bool { return (o+float64(x))*math.Exp(k*float64(x)) >= n }
	if n <= o {
		if x != 0 {
			t.Fatalf("SolveGrowThreads(%v, %v, %v) = %d, want 0", k, o, n, x)
		}
		return
	}
	if !ok(x) {
		t.Fatalf("SolveGrowThreads(%v, %v, %v) = %d does not reach n", k, o, n, x)
	}
	if x > 0 && ok(x-1) {
		t.Fatalf("SolveGrowThreads(%v, %v, %v) = %d, but %d already reaches n", k, o, n, x, x-1)
	}
}

func TestGrowThreadsProperty(t *testing.T) {
	t.Parallel()
	// A deterministic sweep over realistic ranges (k from tiny to n00dles-sized).
	for _, k := range []float64{1e-7, 1e-5, 0.0004, 0.002, 0.0035, 0.05, 0.3, 2} {
		for _, n := range []float64{1, 1e3, 7.5e6, 1.5e10, 6e11, 1e14} {
			for _, frac := range []float64{0, 1e-9, 0.01, 0.5, 0.9, 0.999999} {
				checkGrowSolution(t, k, n*frac, n)
			}
		}
	}
}

func FuzzGrowThreads(f *testing.F) {
	f.Add(0.0035, 0.0, 1e9)
	f.Add(0.00141, 7.5e9, 1.5e10)
	f.Add(1e-6, 1.0, 1e6)
	f.Add(0.3, 999.0, 1000.0)
	f.Fuzz(func(t *testing.T, k, o, n float64) {
		// Keep to the domain the world can produce.
		if math.IsNaN(k) || math.IsNaN(o) || math.IsNaN(n) || k < 1e-7 || k > 5 ||
			o < 0 || o > 1e15 || n <= 0 || n > 1e15 {
			t.Skip()
		}
		checkGrowSolution(t, k, o, n)
	})
}
