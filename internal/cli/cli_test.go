package cli

import (
	"flag"
	"reflect"
	"testing"
)

func TestSplitFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("nats", "", "")
	fs.Bool("verbose", false, "")
	for _, tc := range []struct {
		name      string
		args      []string
		own, rest []string
	}{
		{"before", []string{"--nats", "u", "status", "--json"}, []string{"--nats", "u"}, []string{"status", "--json"}},
		{"after", []string{"cancel", "x", "--batch", "--nats=u"}, []string{"--nats=u"}, []string{"cancel", "x", "--batch"}},
		{"single dash and a bool", []string{"-verbose", "foodnstuff", "-nats", "u", "--for", "1m"}, []string{"-verbose", "-nats", "u"}, []string{"foodnstuff", "--for", "1m"}},
		{"stdin and JSON are no flags", []string{"dispatch", "-", `{"task":"sleep"}`}, nil, []string{"dispatch", "-", `{"task":"sleep"}`}},
		{"after --, nothing is mine", []string{"dispatch", "--", "--nats", "u"}, nil, []string{"dispatch", "--", "--nats", "u"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			own, rest := splitFlags(fs, tc.args)
			if !reflect.DeepEqual(own, tc.own) || !reflect.DeepEqual(rest, tc.rest) {
				t.Errorf("splitFlags(%q) = %q, %q; want %q, %q", tc.args, own, rest, tc.own, tc.rest)
			}
		})
	}
}
