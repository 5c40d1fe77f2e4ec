package planner

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/hvmind/hvmind/world/game"
)

func mustScenario(t *testing.T, name string) *game.Scenario {
	t.Helper()
	sc, err := game.LoadScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func mustServer(t *testing.T, sc *game.Scenario, name string) *game.Server {
	t.Helper()
	s, ok := sc.Server(name)
	if !ok {
		t.Fatalf("no server %q", name)
	}
	return s
}

func TestPlanBatch(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "reference-880")
	level, mults := sc.Player.HackingLevel(), sc.Player.Mults
	rho := mustServer(t, sc, "rho-construction")
	tests := []struct {
		name           string
		cores          int
		fraction       float64
		h, w1, g, w2   int
		wantActualFrac float64
	}{
		// hackPercent at min security is 0.003971045241521954.
		{"5% on 1 core", 1, 0.05, 12, 1, 27, 3, 12 * 0.003971045241521954},
		{"10% on 1 core", 1, 0.1, 25, 1, 58, 5, 25 * 0.003971045241521954},
		{"50% on 1 core", 1, 0.5, 125, 5, 377, 31, 125 * 0.003971045241521954},
		{"5.6% on 3 cores", 3, 0.056, 14, 1, 28, 2, 14 * 0.003971045241521954},
		{"fraction below one thread still hacks", 1, 0.001, 1, 1, 3, 1, 0.003971045241521954},
		{"everything", 1, 1, 251, 10, 0, 0, 0}, // checked by properties below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := PlanBatch(rho, level, mults, tt.cores, tt.fraction)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name != "everything" {
				if p.HackThreads != tt.h || p.Weaken1Threads != tt.w1 || p.GrowThreads != tt.g || p.Weaken2Threads != tt.w2 {
					t.Errorf("threads H/W1/G/W2 = %d/%d/%d/%d, want %d/%d/%d/%d", p.HackThreads, p.Weaken1Threads,
						p.GrowThreads, p.Weaken2Threads, tt.h, tt.w1, tt.g, tt.w2)
				}
				if math.Abs(p.ActualFraction-tt.wantActualFrac) > 1e-12 {
					t.Errorf("actual fraction %v, want %v", p.ActualFraction, tt.wantActualFrac)
				}
			}
			checkPlanInvariants(t, rho, level, mults, p)
		})
	}
}

// checkPlanInvariants checks a plan against the world's rules directly.
func checkPlanInvariants(t *testing.T, s *game.Server, level int, mults game.Mults, p BatchPlan) {
	t.Helper()
	prepped := game.Prepped(s)
	h := game.Hacker{Level: level, Mults: mults}
	pct := game.HackPercent(&prepped, h)
	if p.HackThreads < 1 || p.ActualFraction > 1 || math.Abs(p.ActualFraction-math.Min(1, float64(p.HackThreads)*pct)) > 1e-12 {
		t.Errorf("hack threads %d for actual fraction %v (pct %v)", p.HackThreads, p.ActualFraction, pct)
	}
	// The weakens cancel what the hack and the grow add.
	wpt := game.WeakenPerThread(p.Cores)
	if hs := game.HackSecurityIncrease(p.HackThreads, pct); float64(p.Weaken1Threads)*wpt < hs || float64(p.Weaken1Threads-1)*wpt >= hs {
		t.Errorf("weaken1 %d for hack security %v", p.Weaken1Threads, hs)
	}
	if gs := game.GrowSecurityIncrease(p.GrowThreads, p.GrowThreads); float64(p.Weaken2Threads)*wpt < gs || (gs > 0 && float64(p.Weaken2Threads-1)*wpt >= gs) {
		t.Errorf("weaken2 %d for grow security %v", p.Weaken2Threads, gs)
	}
	// The grow brings the money back to max, and one thread fewer would not.
	after := s.MoneyMax * (1 - p.ActualFraction)
	if got := game.GrowMoney(&prepped, h, after, p.GrowThreads, p.Cores); got != s.MoneyMax {
		t.Errorf("grow of %d threads reaches %v, want %v", p.GrowThreads, got, s.MoneyMax)
	}
	if p.GrowThreads > 0 && game.GrowMoney(&prepped, h, after, p.GrowThreads-1, p.Cores) >= s.MoneyMax {
		t.Errorf("grow of %d threads is one too many", p.GrowThreads)
	}
	wantTS := (float64(p.HackThreads)*p.HackTimeMs + float64(p.GrowThreads)*p.GrowTimeMs +
		float64(p.Weaken1Threads+p.Weaken2Threads)*p.WeakenTimeMs) / 1000
	if math.Abs(p.ThreadSeconds-wantTS) > 1e-9*wantTS {
		t.Errorf("thread-seconds %v, want %v", p.ThreadSeconds, wantTS)
	}
	if want := p.Chance * p.ActualFraction * s.MoneyMax; math.Abs(p.MoneyPerBatch-want) > 1e-9*want {
		t.Errorf("money per batch %v, want %v", p.MoneyPerBatch, want)
	}
	if want := p.MoneyPerBatch / p.ThreadSeconds; math.Abs(p.IncomePerThreadSecond-want) > 1e-9*want {
		t.Errorf("income per thread-second %v, want %v", p.IncomePerThreadSecond, want)
	}
}

func TestPlanBatchErrors(t *testing.T) {
	t.Parallel()
	ref := mustScenario(t, "reference-880")
	newgame := mustScenario(t, "newgame")
	level, mults := ref.Player.HackingLevel(), ref.Player.Mults
	noMoneyMult := mults
	noMoneyMult.HackingMoney = 0
	tests := []struct {
		name     string
		s        *game.Server
		level    int
		mults    game.Mults
		cores    int
		fraction float64
		wantIs   error
		wantMsg  string
	}{
		{"no root", mustServer(t, newgame, "iron-gym"), 1000, mults, 1, 0.1, game.ErrNoRoot, "iron-gym"},
		{"level too low", mustServer(t, ref, "4sigma"), level, mults, 1, 0.1, game.ErrLevelTooLow, "level 880 < required 1206"},
		{"no money", mustServer(t, ref, "home"), level, mults, 1, 0.1, ErrNoMoney, "home"},
		{"hack percent 0", mustServer(t, ref, "rho-construction"), level, noMoneyMult, 1, 0.1, ErrNoHackPercent, "rho-construction"},
		{"fraction 0", mustServer(t, ref, "rho-construction"), level, mults, 1, 0, nil, "fraction 0"},
		{"fraction above 1", mustServer(t, ref, "rho-construction"), level, mults, 1, 1.5, nil, "fraction 1.5"},
		{"fraction NaN", mustServer(t, ref, "rho-construction"), level, mults, 1, math.NaN(), nil, "fraction NaN"},
		{"no cores", mustServer(t, ref, "rho-construction"), level, mults, 0, 0.1, nil, "cores 0"},
		{"level 0", mustServer(t, ref, "rho-construction"), 0, mults, 1, 0.1, nil, "hacking level 0"},
		{"nil server", nil, level, mults, 1, 0.1, nil, "no server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := PlanBatch(tt.s, tt.level, tt.mults, tt.cores, tt.fraction)
			if err == nil {
				t.Fatal("PlanBatch succeeded")
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

func TestAnalyzeReference(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "reference-880")
	as, err := Analyze(sc, nil, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	level := sc.Player.HackingLevel()
	if level != 880 {
		t.Fatalf("player level %d, want 880", level)
	}
	want := 0
	for _, s := range sc.Servers {
		if s.HasAdminRights && s.MoneyMax > 0 && s.RequiredHackingSkill <= level {
			want++
		}
	}
	if len(as) != want || want == 0 {
		t.Fatalf("%d analyses, want %d", len(as), want)
	}
	var rho *Analysis
	for i := range as {
		a := &as[i]
		if i > 0 && a.BestIncomePerThreadSecond > as[i-1].BestIncomePerThreadSecond {
			t.Errorf("not sorted: %s (%v) after %s (%v)", a.Server, a.BestIncomePerThreadSecond,
				as[i-1].Server, as[i-1].BestIncomePerThreadSecond)
		}
		if len(a.Plans) != len(DefaultFractions()) {
			t.Errorf("%s: %d plans, want %d", a.Server, len(a.Plans), len(DefaultFractions()))
		}
		for j, p := range a.Plans {
			if p.Fraction != DefaultFractions()[j] || p.IncomePerThreadSecond > a.BestIncomePerThreadSecond {
				t.Errorf("%s: plan %d = %+v, best %v", a.Server, j, p, a.BestIncomePerThreadSecond)
			}
		}
		if a.Server == "rho-construction" {
			rho = a
		}
	}
	if rho == nil {
		t.Fatal("rho-construction not analysed")
	}
	s := mustServer(t, sc, "rho-construction")
	if rho.MinSecurity != s.MinDifficulty || rho.MoneyMax != 15e9 || rho.RequiredHackingSkill != 505 {
		t.Errorf("rho = %+v", rho)
	}
	if math.Abs(rho.HackPercent-0.003971045241521954) > 1e-15 || math.Abs(rho.MoneyPerThread-rho.HackPercent*15e9) > 1e-3 {
		t.Errorf("rho hack percent %v, money per thread %v", rho.HackPercent, rho.MoneyPerThread)
	}
	if math.Abs(rho.HackTimeMs-66876.8602025154) > 1e-6 || rho.WeakenTimeMs != 4*rho.HackTimeMs || math.Abs(rho.GrowTimeMs-3.2*rho.HackTimeMs) > 1e-6 {
		t.Errorf("rho times %v/%v/%v", rho.HackTimeMs, rho.GrowTimeMs, rho.WeakenTimeMs)
	}
	for _, p := range rho.Plans {
		checkPlanInvariants(t, s, level, sc.Player.Mults, p)
	}
}

func TestAnalyzeTargets(t *testing.T) {
	t.Parallel()
	ref := mustScenario(t, "reference-880")
	tests := []struct {
		name      string
		targets   []string
		fractions []float64
		cores     int
		wantNames []string
		wantErr   string
	}{
		{"named targets, ranked", []string{"n00dles", "rho-construction"}, []float64{0.1}, 3, []string{"rho-construction", "n00dles"}, ""},
		{"unknown target", []string{"rho-construction", "nowhere"}, nil, 1, nil, `unknown target "nowhere"`},
		{"level too low", []string{"4sigma"}, nil, 1, nil, "hacking level too low"},
		{"no money", []string{"CSEC"}, nil, 1, nil, "no money"},
		{"bad fraction", nil, []float64{0.1, 2}, 1, nil, "fraction 2"},
		{"bad cores", nil, nil, 0, nil, "cores 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			as, err := Analyze(ref, tt.targets, tt.fractions, tt.cores)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Analyze error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, a := range as {
				names = append(names, a.Server)
				if len(a.Plans) != len(tt.fractions) || a.Best.Cores != tt.cores {
					t.Errorf("%s: %d plans on %d cores", a.Server, len(a.Plans), a.Best.Cores)
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.wantNames, ",") {
				t.Errorf("targets %v, want %v", names, tt.wantNames)
			}
		})
	}
	t.Run("nil scenario", func(t *testing.T) {
		t.Parallel()
		if _, err := Analyze(nil, nil, nil, 1); err == nil {
			t.Error("Analyze(nil) succeeded")
		}
	})
}

func TestAnalyzeNewGame(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "newgame")
	as, err := Analyze(sc, nil, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Level 1: n00dles and foodnstuff need level 1 and are rooted.
	var names []string
	for _, a := range as {
		names = append(names, a.Server)
	}
	if strings.Join(names, ",") != "foodnstuff,n00dles" && strings.Join(names, ",") != "n00dles,foodnstuff" {
		t.Errorf("newgame targets %v, want foodnstuff and n00dles", names)
	}
}

// rhoRAMLimit maximises RAMLimitPerSecond for rho-construction over every
// hack-thread count, on reference-880 with all its RAM.
func rhoRAMLimit(t *testing.T, cores int) (BatchPlan, int) {
	t.Helper()
	sc := mustScenario(t, "reference-880")
	best, err := BestBatch(mustServer(t, sc, "rho-construction"), sc.Player.HackingLevel(), sc.Player.Mults, cores)
	if err != nil {
		t.Fatal(err)
	}
	return best, TotalHostThreads(sc)
}

// TestRAMLimit checks world/game/RULES.md "Income limits": on reference-880, target
// rho-construction, the RAM limit is about $118b per game minute and the
// launch-at-once limit about $76b. The figures are reproduced when grows and
// weakens run on home's 3 cores, which they can: they need about 88% of the
// thread-seconds and home holds 91% of the threads.
func TestRAMLimit(t *testing.T) {
	t.Parallel()
	best, threads := rhoRAMLimit(t, 3)
	if threads != 20464 {
		t.Errorf("total threads %d, want 20464 (35,836 GB / 1.75 per host)", threads)
	}
	perMinute := RAMLimitPerSecond(best, threads) * 60
	atOnce := LaunchAtOnceLimitPerSecond(best, threads) * 60
	t.Logf("3 cores: best f=%.4f H/W1/G/W2=%d/%d/%d/%d: RAM limit $%.2fb/min, launch-at-once $%.2fb/min",
		best.ActualFraction, best.HackThreads, best.Weaken1Threads, best.GrowThreads, best.Weaken2Threads,
		perMinute/1e9, atOnce/1e9)
	if math.Abs(perMinute-118e9)/118e9 > 0.10 {
		t.Errorf("RAM limit $%.2fb/min, want about $118b", perMinute/1e9)
	}
	if math.Abs(atOnce-76e9)/76e9 > 0.10 {
		t.Errorf("launch-at-once limit $%.2fb/min, want about $76b", atOnce/1e9)
	}
	if ratio := perMinute / atOnce; ratio < 1.4 || ratio > 1.7 {
		t.Errorf("RAM limit / launch-at-once limit = %.2f, want about 1.5", ratio)
	}

	one, _ := rhoRAMLimit(t, 1)
	t.Logf("1 core:  best f=%.4f H/W1/G/W2=%d/%d/%d/%d: RAM limit $%.2fb/min, launch-at-once $%.2fb/min",
		one.ActualFraction, one.HackThreads, one.Weaken1Threads, one.GrowThreads, one.Weaken2Threads,
		RAMLimitPerSecond(one, threads)*60/1e9, LaunchAtOnceLimitPerSecond(one, threads)*60/1e9)
}

// TestBestBatchIsBest checks BestBatch against every plan PlanBatch makes.
func TestBestBatchIsBest(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "reference-880")
	s := mustServer(t, sc, "rho-construction")
	best, err := BestBatch(s, sc.Player.HackingLevel(), sc.Player.Mults, 3)
	if err != nil {
		t.Fatal(err)
	}
	for f := 0.001; f <= 1; f += 0.001 {
		p, err := PlanBatch(s, sc.Player.HackingLevel(), sc.Player.Mults, 3, f)
		if err != nil {
			t.Fatal(err)
		}
		if p.IncomePerThreadSecond > best.IncomePerThreadSecond*(1+1e-12) {
			t.Fatalf("PlanBatch(f=%v) earns %v per thread-second, BestBatch %v", f, p.IncomePerThreadSecond, best.IncomePerThreadSecond)
		}
	}
	if _, err := BestBatch(mustServer(t, sc, "home"), 880, sc.Player.Mults, 1); !errors.Is(err, ErrNoMoney) {
		t.Errorf("BestBatch(home) error %v, want ErrNoMoney", err)
	}
}

func TestLimitsZero(t *testing.T) {
	t.Parallel()
	if RAMLimitPerSecond(BatchPlan{}, 100) != 0 || LaunchAtOnceLimitPerSecond(BatchPlan{}, 100) != 0 {
		t.Error("empty plan has an income")
	}
	if RAMLimitPerSecond(BatchPlan{ThreadSeconds: 1, MoneyPerBatch: 1}, 0) != 0 {
		t.Error("no threads has an income")
	}
}

func TestRenderAnalysis(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "reference-880")
	as, err := Analyze(sc, []string{"rho-construction", "n00dles"}, nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := RenderAnalysis(&b, as); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4+len(as) {
		t.Fatalf("%d lines, want %d", len(lines), 4+len(as))
	}
	for _, want := range []string{"┌", "┬", "┐", "│", "├", "┼", "┤", "└", "┴", "┘", "rho-construction", "$15.0b", "n00dles"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	width := len([]rune(lines[0]))
	for i, l := range lines {
		if len([]rune(l)) != width {
			t.Errorf("line %d is %d wide, want %d: %q", i, len([]rune(l)), width, l)
		}
	}

	b.Reset()
	if err := RenderPlans(&b, as[0]); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	if got := strings.Count(b.String(), "\n"); got != 1+4+len(DefaultFractions()) {
		t.Errorf("plans table has %d lines", got)
	}

	b.Reset()
	if err := RenderAnalysis(&b, nil); err != nil || strings.Count(b.String(), "\n") != 4 {
		t.Errorf("empty table: %v %q", err, b.String())
	}
}

func TestWriteAnalysisJSON(t *testing.T) {
	t.Parallel()
	sc := mustScenario(t, "reference-880")
	as, err := Analyze(sc, []string{"rho-construction"}, []float64{0.05}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteAnalysisJSON(&b, as); err != nil {
		t.Fatal(err)
	}
	var back []Analysis
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0].Server != "rho-construction" || back[0].Best != as[0].Best {
		t.Errorf("round trip: %+v", back)
	}
	for _, key := range []string{`"server"`, `"hackTimeMs"`, `"moneyPerThread"`, `"plans"`, `"hackThreads"`, `"incomePerThreadSecond"`, `"bestIncomePerThreadSecond"`} {
		if !bytes.Contains(b.Bytes(), []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	b.Reset()
	if err := WriteAnalysisJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("empty JSON: %v %q", err, b.String())
	}
}

func TestFormatMoney(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   float64
		want string
	}{
		{0, "$0"},
		{950, "$950"},
		{1.5, "$1.50"},
		{999.999, "$1.00k"},
		{1234, "$1.23k"},
		{45.6e6, "$45.6m"},
		{1.23e9, "$1.23b"},
		{15e9, "$15.0b"},
		{118e9, "$118b"},
		{999.9e9, "$1.00t"},
		{2e15, "$2.00q"},
		{5e18, "$5e+18"},
		{-1234, "-$1.23k"},
		{math.Inf(1), "$∞"},
		{math.NaN(), "$NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if got := FormatMoney(tt.in); got != tt.want {
				t.Errorf("FormatMoney(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ms   float64
		want string
	}{
		{0, "0ms"},
		{850, "850ms"},
		{12345, "12.3s"},
		{59990, "1m00s"},
		{66876.86, "1m07s"},
		{247000, "4m07s"},
		{7500000, "2h05m"},
		{-1, "-1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if got := FormatDuration(tt.ms); got != tt.want {
				t.Errorf("FormatDuration(%v) = %q, want %q", tt.ms, got, tt.want)
			}
		})
	}
}
