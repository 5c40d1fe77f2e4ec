package hvmind_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The layout of the tree, checked: HVMind is a job system (job, broker,
// pool, worker, serverpool, config) that knows nothing of the game, and the
// game (world, planner) beside it, plugged in through the job system's
// interfaces. Imports run one way; a package may import only what its row
// below allows (its tests too, and broker/brokertest in tests everywhere).
// A new package needs a row: decide where it stands.

const module = "github.com/hvmind/hvmind"

// jobSystem is the job system's packages, in the order they may import
// each other (a package may import those before it that its row names).
var jobSystem = []string{"job", "pool/timeline", "internal/boxtable", "broker", "serverpool", "worker", "pool", "webui", "config"}

// allowed is, per package (a trailing "/..." covers those under it), the
// module's packages it may import.
var allowed = map[string][]string{
	"job":               nil,
	"pool/timeline":     nil,
	"internal/boxtable": nil,
	"broker":            {"job"},
	"broker/brokertest": {"broker"},
	"serverpool":        {"broker", "job"},
	"worker":            {"broker", "job"},
	"pool":              {"broker", "job", "serverpool", "pool/timeline", "internal/boxtable"},
	"webui":             {"broker", "job", "pool"},
	"config":            {"broker", "job", "pool", "serverpool", "worker"},
	"internal/cli":      {"broker", "config"},
	"examples/...":      {"broker", "job", "pool", "serverpool", "worker", "pool/timeline"},

	// The game: its rules, the world service, and the world's plug-ins of
	// the job system's interfaces.
	"world/game":  {"job"},
	"world":       {"broker", "job", "world/game"},
	"world/tasks": {"job", "pool", "worker", "webui", "world", "world/game"},
	"world/hosts": {"serverpool", "world", "world/game"},
	"planner":     {"job", "pool", "serverpool", "world", "world/game", "internal/boxtable"},
	// The live game: the executor inside it and the protocol with it.
	"live": {"broker", "job", "world", "world/game"},

	// Benchmarks and programs wire everything; no package imports a program.
	"bench":   {"broker", "job", "pool", "serverpool", "worker", "planner", "world", "world/game", "world/hosts", "world/tasks", "live"},
	"cmd/...": {"broker", "config", "internal/cli", "internal/boxtable", "job", "pool", "serverpool", "worker", "webui", "planner", "bench", "world", "world/game", "world/hosts", "world/tasks", "live"},
	"e2e":     nil,
	"":        nil, // this test
}

// testsAlsoAllowed is what a package's tests may import beyond its row
// (and broker/brokertest, which every test may use).
var testsAlsoAllowed = map[string][]string{
	"pool":        {"worker"}, // the pool's tests run real workers in process
	"world/tasks": {"broker"},
	"live":        {"broker"},                 // the executor's tests start a broker with a WebSocket listener
	"e2e":         {"broker", "job", "world"}, // the programs are run as processes; the chaos audit reads the world
}

type listed struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
}

// goList runs go list -json with args.
func goList(t *testing.T, args ...string) []listed {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-json"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("go list %v: %v", args, err)
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// local is a module package's path within the module ("" for the root),
// or false for another module's.
func local(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rest, ok := strings.CutPrefix(path, module+"/")
	return rest, ok
}

// rule is the row of allowed that covers pkg.
func rule(pkg string) ([]string, bool) {
	if r, ok := allowed[pkg]; ok {
		return r, true
	}
	for k, r := range allowed {
		if prefix, ok := strings.CutSuffix(k, "/..."); ok && strings.HasPrefix(pkg, prefix+"/") {
			return r, true
		}
	}
	return nil, false
}

// The job system's packages depend on nothing of the game, however deep.
func TestJobSystemKnowsNothingOfTheGame(t *testing.T) {
	t.Parallel()
	for _, p := range goList(t, "-deps=false", "./pool/...", "./worker/...", "./serverpool/...", "./job/...", "./broker/...", "./config/...") {
		deps := goList(t, "-deps", p.ImportPath)
		for _, d := range deps {
			rel, ok := local(d.ImportPath)
			if !ok {
				continue
			}
			if rel == "world" || strings.HasPrefix(rel, "world/") || rel == "planner" || strings.HasPrefix(rel, "planner/") {
				t.Errorf("%s depends on %s: the job system must not know the game", p.ImportPath, d.ImportPath)
			}
		}
	}
}

// The job system's documentation speaks of jobs, threads, workers and
// hosts, not of the game.
func TestJobSystemDocsSpeakNoGame(t *testing.T) {
	t.Parallel()
	game := regexp.MustCompile(`(?i)\b(hack\w*|grow|weaken\w*|world|bitburner|game|ram|gb|home|n00dles|foodnstuff|target)\b`)
	for _, pkg := range jobSystem {
		out, err := exec.Command("go", "doc", "-all", "./"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go doc %s: %v\n%s", pkg, err, out)
		}
		for i, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "Is(target error)") || strings.Contains(line, "As(target any)") {
				continue // the errors package's parameter names
			}
			if m := game.FindString(line); m != "" {
				t.Errorf("go doc %s, line %d speaks of %q: %s", pkg, i+1, m, strings.TrimSpace(line))
			}
		}
	}
}

// Every package imports only what its row allows, in its code and its tests.
func TestImportsRunOneWay(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, p := range goList(t, "./...") {
		pkg, _ := local(p.ImportPath)
		seen[pkg] = true
		want, ok := rule(pkg)
		if !ok {
			t.Errorf("package %q has no row in layout_test.go: decide what it may import", pkg)
			continue
		}
		inCode := map[string]bool{pkg: true}
		for _, a := range want {
			inCode[a] = true
		}
		inTests := map[string]bool{"broker/brokertest": true}
		for _, a := range testsAlsoAllowed[pkg] {
			inTests[a] = true
		}
		check := func(imports []string, test bool) {
			for _, imp := range imports {
				rel, mine := local(imp)
				if !mine || inCode[rel] || (test && inTests[rel]) {
					continue
				}
				kind := "imports"
				if test {
					kind = "imports in its tests"
				}
				t.Errorf("%s %s %s, which its row in layout_test.go does not allow", orRoot(pkg), kind, rel)
			}
		}
		check(p.Imports, false)
		check(append(p.TestImports, p.XTestImports...), true)
	}
	for _, pkg := range jobSystem {
		if !seen[pkg] {
			t.Errorf("the job system's package %s is gone: update layout_test.go", pkg)
		}
	}
	// The rows themselves keep the direction: the job system's rows name
	// only job-system packages that come before them.
	for i, pkg := range jobSystem {
		before := map[string]bool{}
		for _, q := range jobSystem[:i] {
			before[q] = true
		}
		for _, a := range allowed[pkg] {
			if !before[a] {
				t.Errorf("the row of %s allows %s, which is not below it in the job system", pkg, a)
			}
		}
	}
}

func orRoot(pkg string) string {
	if pkg == "" {
		return "the module's root"
	}
	return pkg
}
