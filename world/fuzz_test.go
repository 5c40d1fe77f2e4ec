package world_test

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/hvmind/hvmind/broker/brokertest"
	"github.com/hvmind/hvmind/world"
)

// FuzzWorldRequests sends any bytes to the world's endpoints, with the
// rules for callers on: every request is answered, nothing panics, and
// the world stays within the game's bounds (money between 0 and the
// maximum, security not below the minimum, RAM used at most the host's,
// the player's money finite and not negative).
func FuzzWorldRequests(f *testing.F) {
	now := float64(time.Now().UnixNano()) / 1e6
	for _, seed := range []struct {
		endpoint uint8
		data     string
	}{
		{0, `{"jobId":"a","task":"hack","target":"n00dles","host":"home","owner":"o","threads":1}`},
		{0, `{"jobId":"b","task":"grow","target":"n00dles","host":"home","owner":"o","threads":1000000,"start":1}`},
		{1, `{"jobId":"a"}`},
		{1, `{"jobId":"a","end":1e308}`},
		{2, `{"jobIds":["a","b"]}`},
		{3, `{"host":"home","owner":"o","threads":2}`},
		{3, `{"host":"home","owner":"o","threads":-5}`},
		{4, `{"host":"home","owner":"o"}`},
		{5, `n00dles`},
		{0, `{"jobId":"c","task":"weaken","target":"n00dles","host":"home","owner":"o","threads":1,"start":` + formatMs(now) + `}`},
	} {
		f.Add(seed.endpoint, []byte(seed.data))
	}
	b := brokertest.New(f)
	nc := b.Connect(f)
	svc, err := world.Serve(f.Context(), nc, world.Options{Scenario: "newgame", Logger: brokertest.Logger(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(svc.Stop)
	c := world.NewClient(b.Connect(f))
	initial, err := c.Servers(f.Context())
	if err != nil {
		f.Fatal(err)
	}
	floor := map[string]float64{} // a server's lowest security: its minimum, or less if it starts below
	for _, s := range initial {
		floor[s.Hostname] = min(s.HackDifficulty, s.MinDifficulty)
	}
	subjects := []string{world.SubjectBegin, world.SubjectFinish, world.SubjectSettle, world.SubjectRAMReserve, world.SubjectRAMRelease, world.SubjectServer}
	f.Fuzz(func(t *testing.T, endpoint uint8, data []byte) {
		subject := subjects[int(endpoint)%len(subjects)]
		if _, err := nc.Request(subject, data, 10*time.Second); err != nil {
			t.Fatalf("%s %q: no answer: %v", subject, data, err)
		}
		servers, err := c.Servers(t.Context())
		if err != nil {
			t.Fatalf("the world stopped answering after %s %q: %v", subject, data, err)
		}
		for _, s := range servers {
			if s.MoneyAvailable < 0 || s.MoneyAvailable > s.MoneyMax || s.HackDifficulty < floor[s.Hostname] || s.RAMUsed > s.MaxRAM+1e-9 || math.IsNaN(s.MoneyAvailable) {
				t.Fatalf("after %s %q: %s out of bounds: %+v", subject, data, s.Hostname, s)
			}
		}
		pl, err := c.Player(t.Context())
		if err != nil || pl.Money < 0 || math.IsNaN(pl.Money) || math.IsInf(pl.Money, 0) {
			t.Fatalf("after %s %q: player %+v, %v", subject, data, pl, err)
		}
	})
}

func formatMs(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
