package game

import (
	"errors"
	"fmt"
	"math"
)

// The constants of the rules (RULES.md).
const (
	// ThreadRAM is the RAM one worker thread costs, in GB.
	ThreadRAM = 1.75
	// MaxSecurity is the highest security a server can have.
	MaxSecurity = 100.0
	// MinSecurityFloor is the lowest security any server can have.
	MinSecurityFloor = 1.0
	// HackSecurityPerThread is the security one successful hack thread adds.
	HackSecurityPerThread = 0.002
	// GrowSecurityPerThread is the security one effective grow thread adds.
	GrowSecurityPerThread = 0.004
	// WeakenPerThreadBase is the security one weaken thread removes on a 1-core host.
	WeakenPerThreadBase = 0.05
	// GrowthBaseIncrement is the 0.03 of the grow rate ln(1 + 0.03/sec).
	GrowthBaseIncrement = 0.03
	// GrowthRateCap is the growth rate 1.0035 that caps ln(1 + 0.03/sec).
	GrowthRateCap = 1.0035
	// HackMoneyBalance is the 240 that divides the hack fraction per thread.
	HackMoneyBalance = 240.0
)

// Sentinel errors of CheckHack.
var (
	// ErrNoRoot means the player has no admin rights on the target.
	ErrNoRoot = errors.New("no root access")
	// ErrLevelTooLow means the player's hacking level is below the target's requiredHackingSkill.
	ErrLevelTooLow = errors.New("hacking level too low")
)

// Hacker is the attacker side of every formula: a hacking level and the
// player's multipliers. Use Player.Hacker for the live state, or build one for
// what-if maths.
type Hacker struct {
	Level int   `json:"hackingLevel"`
	Mults Mults `json:"mults"`
}

// HackingLevel is the level reached with exp hacking experience:
// max(1, floor(hackingMult * (32 * ln(exp + 534.6) - 200))). Negative exp counts as 0.
func HackingLevel(exp, hackingMult float64) int {
	exp = math.Max(exp, 0)
	l := math.Floor(hackingMult * (32*math.Log(exp+534.6) - 200))
	if !(l >= 1) { // also catches NaN
		return 1
	}
	if l > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(l)
}

// ExpForLevel is the least hacking exp at which HackingLevel(exp,
// hackingMult) reaches level: 0 for levels every player has, +Inf for
// levels no exp reaches.
// With hackingMult 1, level 10 needs 173.44 and level 100 needs 11,255.3.
func ExpForLevel(level int, hackingMult float64) float64 {
	if level <= 1 || hackingMult <= 0 {
		return 0
	}
	reaches := func(e float64) bool { return HackingLevel(e, hackingMult) >= level }
	if reaches(0) {
		return 0
	}
	// The closed form loses precision to rounding (exp - 534.6 cancels), so
	// bisect between floats around it for the least exp that reaches level.
	est := math.Exp((float64(level)/hackingMult+200)/32) - 534.6
	width := 1e-6 * (math.Abs(est) + 534.6)
	lo, hi := math.Max(est-width, 0), est+width
	for i := 0; i < 64 && !reaches(hi); i++ {
		hi += width
		width *= 2
	}
	if !reaches(hi) {
		return math.Inf(1) // unreachable level
	}
	if reaches(lo) {
		lo = 0
	}
	for {
		mid := lo + (hi-lo)/2
		if mid <= lo || mid >= hi {
			return hi
		}
		if reaches(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
}

// CheckHack reports why h may not hack s: ErrNoRoot without admin rights,
// ErrLevelTooLow when h.Level < s.RequiredHackingSkill (both wrapped with detail).
// Grow and weaken only need root.
func CheckHack(s *Server, h Hacker) error {
	if !s.HasAdminRights {
		return fmt.Errorf("%s: %w", s.Hostname, ErrNoRoot)
	}
	if h.Level < s.RequiredHackingSkill {
		return fmt.Errorf("%s: %w (level %d < required %d)", s.Hostname, ErrLevelTooLow, h.Level, s.RequiredHackingSkill)
	}
	return nil
}

// HackTimeMs is the duration of a hack started now, in milliseconds:
// 5 * (2.5 * req * sec + 500) / (L + 50) / mults.hacking_speed seconds, with
// sec = s.HackDifficulty and req = s.RequiredHackingSkill. For what-if maths
// pass a copy of the server with HackDifficulty changed (see Prepped).
func HackTimeMs(s *Server, h Hacker) float64 {
	skillFactor := (2.5*float64(s.RequiredHackingSkill)*s.HackDifficulty + 500) / float64(h.Level+50)
	return 5 * skillFactor / h.Mults.HackingSpeed * 1000
}

// GrowTimeMs is the duration of a grow started now: 3.2 hack times, in milliseconds.
func GrowTimeMs(s *Server, h Hacker) float64 {
	return 3.2 * HackTimeMs(s, h)
}

// WeakenTimeMs is the duration of a weaken started now: 4 hack times, in milliseconds.
func WeakenTimeMs(s *Server, h Hacker) float64 {
	return 4 * HackTimeMs(s, h)
}

// HackChance is the probability that a hack succeeds:
// clamp01(((1.75L - req) / 1.75L) * ((100 - sec)/100) * mults.hacking_chance),
// and 0 when sec >= 100 or the player has no root on s (as in the game).
func HackChance(s *Server, h Hacker) float64 {
	sec := s.HackDifficulty
	if !s.HasAdminRights || sec >= MaxSecurity {
		return 0
	}
	skill := math.Max(1.75*float64(h.Level), 1)
	skillChance := (skill - float64(s.RequiredHackingSkill)) / skill
	chance := skillChance * ((MaxSecurity - sec) / MaxSecurity) * h.Mults.HackingChance
	return clamp01(chance)
}

// HackPercent is the fraction of the server's money one hack thread steals:
// clamp01(((100 - sec)/100) * ((L - (req - 1)) / L) * mults.hacking_money / 240),
// 0 when sec >= 100 (and so 0 when L < req - 1).
func HackPercent(s *Server, h Hacker) float64 {
	sec := s.HackDifficulty
	if sec >= MaxSecurity || h.Level <= 0 {
		return 0
	}
	level := float64(h.Level)
	skillMult := (level - (float64(s.RequiredHackingSkill) - 1)) / level
	pct := ((MaxSecurity - sec) / MaxSecurity) * skillMult * h.Mults.HackingMoney / HackMoneyBalance
	return clamp01(pct)
}

// HackStolen is the money a successful hack of threads threads takes from a
// server holding money: min(money * pct * threads, money).
func HackStolen(money, pct float64, threads int) float64 {
	if money <= 0 || threads <= 0 || pct <= 0 {
		return 0
	}
	return math.Min(money*pct*float64(threads), money)
}

// HackSecurityIncrease is the security a successful hack of threads threads
// adds: 0.002 * min(threads, ceil(1/pct)) (all threads count when pct is 0).
func HackSecurityIncrease(threads int, pct float64) float64 {
	if threads <= 0 {
		return 0
	}
	n := float64(threads)
	if pct > 0 {
		n = math.Min(n, math.Ceil(1/pct))
	}
	return HackSecurityPerThread * n
}

// coreBonus is 1 + (cores-1)/16; cores below 1 count as 1.
func coreBonus(cores int) float64 {
	if cores < 1 {
		cores = 1
	}
	return 1 + float64(cores-1)/16
}

// GrowLog is k, the natural log of the money multiplier of one grow thread
// run on a host with cores cores:
// min(ln(1 + 0.03/sec), ln(1.0035)) * (serverGrowth/100) * mults.hacking_grow * (1 + (cores-1)/16).
// Cores below 1 count as 1.
func GrowLog(s *Server, h Hacker, cores int) float64 {
	rate := math.Min(math.Log1p(GrowthBaseIncrement/s.HackDifficulty), math.Log(GrowthRateCap))
	return rate * (s.ServerGrowth / 100) * h.Mults.HackingGrow * coreBonus(cores)
}

// GrowMoney is the money of s after a grow of threads threads from money:
// min(moneyMax, (money + threads) * max(1, exp(k * threads))), with k = GrowLog.
// Negative money counts as 0.
func GrowMoney(s *Server, h Hacker, money float64, threads, cores int) float64 {
	money = math.Max(money, 0)
	if threads <= 0 {
		return math.Min(money, s.MoneyMax)
	}
	t := float64(threads)
	k := GrowLog(s, h, cores)
	return math.Min(s.MoneyMax, (money+t)*math.Max(1, math.Exp(k*t)))
}

// GrowThreads is the fewest grow threads, on a host with cores cores, that
// take s from money from to money to (to capped at moneyMax, from floored at
// 0; 0 when to <= from), at the security in s.HackDifficulty.
func GrowThreads(s *Server, h Hacker, from, to float64, cores int) int {
	return SolveGrowThreads(GrowLog(s, h, cores), from, math.Min(to, s.MoneyMax))
}

// maxGrowThreads saturates SolveGrowThreads for absurd inputs.
const maxGrowThreads = 1 << 53

// SolveGrowThreads is the smallest integer x >= 0 with
// (o + x) * exp(k * x) >= n, where o = max(from, 0) and n = to; 0 when n <= o.
// It runs Newton's method on ln((o + x)/n) + k x, then checks the integers
// around the root (the answer x satisfies the inequality and x-1 does not).
// k <= 0 means no growth beyond the threads' own money. Results saturate at 2^53.
func SolveGrowThreads(k, from, to float64) int {
	o, n := math.Max(from, 0), to
	if !(n > o) { // also n NaN
		return 0
	}
	if math.IsInf(n, 1) || math.IsNaN(k) {
		return maxGrowThreads
	}
	k = math.Max(k, 0)
	ok := func(x float64) bool { return (o+x)*math.Exp(k*x) >= n }

	// Newton's method from the game's first guess; the function is concave
	// and increasing, so a step never needs to go below -o.
	x := (n - o) / (1 + (n/16+o*15/16)*k)
	for i := 0; i < 100; i++ {
		ox := o + x
		next := (x - ox*math.Log(ox/n)) / (1 + ox*k)
		if o+next <= 0 {
			next = (x - o) / 2 // keep o+x positive: halfway to -o
		}
		diff := next - x
		x = next
		if math.IsNaN(x) || math.Abs(diff) < 1 {
			break
		}
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		x = 0
	}
	c := math.Min(math.Max(math.Ceil(x), 0), maxGrowThreads)

	// Bracket the answer in (lo, hi] with ok(hi) and !ok(lo) (lo = -1 stands
	// for "x >= 0"), normally within a step of the root, then bisect.
	hi := c
	for step := 1.0; !ok(hi); step *= 2 {
		if hi >= maxGrowThreads {
			return maxGrowThreads
		}
		hi = math.Min(c+step, maxGrowThreads)
	}
	lo := hi - 1
	for step := 2.0; lo >= 0 && ok(lo); step *= 2 {
		hi = lo
		lo = hi - step
	}
	lo = math.Max(lo, -1)
	for hi-lo > 1 {
		mid := math.Floor((lo + hi) / 2)
		if ok(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return int(hi)
}

// GrowSecurityIncrease is the security a grow of threads threads adds, when
// needed is the fewest threads that would have reached the new money:
// 0.004 * min(threads, needed).
func GrowSecurityIncrease(threads, needed int) float64 {
	n := max(min(threads, needed), 0)
	return GrowSecurityPerThread * float64(n)
}

// GrowEffect applies the grow rule to s from its current money: the new money
// and the security the grow adds (none when the money does not change, e.g.
// a grow at max money).
func GrowEffect(s *Server, h Hacker, threads, cores int) (newMoney, securityIncrease float64) {
	old := math.Max(s.MoneyAvailable, 0)
	newMoney = GrowMoney(s, h, old, threads, cores)
	if newMoney == old || threads <= 0 {
		return newMoney, 0
	}
	needed := SolveGrowThreads(GrowLog(s, h, cores), old, newMoney)
	return newMoney, GrowSecurityIncrease(threads, needed)
}

// WeakenPerThread is the security one weaken thread removes on a host with
// cores cores: 0.05 * (1 + (cores-1)/16). Cores below 1 count as 1.
func WeakenPerThread(cores int) float64 {
	return WeakenPerThreadBase * coreBonus(cores)
}

// WeakenAmount is the security a weaken of threads threads removes on a
// host with cores cores (before clamping): 0.05 * threads * (1 + (cores-1)/16).
func WeakenAmount(threads, cores int) float64 {
	if threads <= 0 {
		return 0
	}
	return WeakenPerThreadBase * float64(threads) * coreBonus(cores)
}

// SecurityFloor is the lowest security s can have: max(1, minDifficulty).
func SecurityFloor(s *Server) float64 {
	return math.Max(MinSecurityFloor, s.MinDifficulty)
}

// ClampSecurity clamps sec into [max(1, minDifficulty), 100] for s.
func ClampSecurity(s *Server, sec float64) float64 {
	return math.Min(MaxSecurity, math.Max(SecurityFloor(s), sec))
}

// ExpPerThread is the hacking exp one thread of an operation on s earns:
// (3 + 0.3 * baseDifficulty) * mults.hacking_exp for grow, weaken and a
// successful hack, a quarter of that for a failed hack.
// (RULES.md: unlike the game, baseDifficulty 0 still gives 3.)
func ExpPerThread(s *Server, m Mults, success bool) float64 {
	exp := (3 + 0.3*s.BaseDifficulty) * m.HackingExp
	if !success {
		exp /= 4
	}
	return exp
}

// HostThreads is how many more threads s can hold as a host:
// floor((maxRam - ramUsed) / 1.75), and 0 without admin rights or RAM.
func HostThreads(s *Server) int {
	if !s.HasAdminRights || s.MaxRAM <= 0 {
		return 0
	}
	return ThreadsForRAM(s.MaxRAM - s.RAMUsed)
}

// ThreadsForRAM is how many threads fit in ram GB: floor(ram / 1.75), at least 0.
func ThreadsForRAM(ram float64) int {
	if !(ram > 0) {
		return 0
	}
	return int(math.Floor(ram / ThreadRAM))
}

// Prepped returns a copy of s as a batcher wants it: security at its floor
// and money at moneyMax. Use it for what-if maths.
func Prepped(s *Server) Server {
	p := *s
	p.HackDifficulty = SecurityFloor(s)
	p.MoneyAvailable = s.MoneyMax
	return p
}

func clamp01(v float64) float64 {
	if !(v > 0) { // also NaN
		return 0
	}
	return math.Min(v, 1)
}
