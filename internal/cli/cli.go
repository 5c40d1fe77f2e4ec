// Package cli is what the programs share: flags layered over the config
// file and the environment, the logger, signals, the broker connection and
// the way a program exits.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/hvmind/hvmind/broker"
	"github.com/hvmind/hvmind/config"
)

// ErrUsage marks an error in how a program was called (errors.Is): it
// exits with status 2 rather than 1.
var ErrUsage = errors.New("usage")

// usageError is an error that is ErrUsage without saying so in its text.
type usageError struct{ err error }

func (e usageError) Error() string        { return e.err.Error() }
func (e usageError) Unwrap() error        { return e.err }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Usage marks err as an error in how the program was called.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// Usagef is a usage error with a message.
func Usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// Program is one program's settings, flags and logger.
type Program struct {
	// Name is the program's name, as in its logs and messages.
	Name string
	// Config holds the job system's settings, filled by Parse.
	Config config.Config
	// Flags is the program's flag set: the common flags are on it; the
	// program adds its own before Parse.
	Flags *flag.FlagSet
	// Log is the logger the settings ask for, set by Parse.
	Log zerolog.Logger
}

// New returns a program with the default settings and the flags every
// program has. usage is the first lines of its help, before the flags.
func New(name, usage string) *Program {
	p := &Program{Name: name, Config: config.Default()}
	p.Flags = flag.NewFlagSet(name, flag.ContinueOnError)
	p.Config.RegisterCommon(p.Flags)
	p.Flags.Usage = func() {
		fmt.Fprint(p.Flags.Output(), usage)
		p.Flags.PrintDefaults()
	}
	return p
}

// Parse parses args, fills what they leave out from the environment and
// the config file, and builds the logger.
func (p *Program) Parse(args []string) error {
	if err := p.Config.Parse(p.Flags, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Usage(err)
	}
	if err := p.Config.Validate(); err != nil {
		return Usage(err)
	}
	log, err := p.Config.Logger(p.Name)
	if err != nil {
		return Usage(err)
	}
	p.Log = log
	return nil
}

// ParseCommands is Parse for a program with commands: the program's own
// flags may stand anywhere in args, before or after the command and its
// arguments. It returns the rest, in order: the command, its arguments
// and its flags, for ParseCommand.
func (p *Program) ParseCommands(args []string) ([]string, error) {
	own, rest := splitFlags(p.Flags, args)
	if err := p.Config.ParseLeading(p.Flags, own); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, Usage(err)
	}
	if err := p.Config.Validate(); err != nil {
		return nil, Usage(err)
	}
	log, err := p.Config.Logger(p.Name)
	if err != nil {
		return nil, Usage(err)
	}
	p.Log = log
	return rest, nil
}

// ParseCommand parses a command's flags, which may come before, between or
// after its arguments, fills those not given from the environment and the
// config file (whose every key must be a flag of the program or of the
// command), and returns the arguments.
func (p *Program) ParseCommand(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, Usage(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := p.Config.Fill(fs); err != nil {
		return nil, Usage(err)
	}
	if err := p.Config.CheckFileKeys(p.Flags, fs); err != nil {
		return nil, Usage(err)
	}
	return pos, nil
}

// splitFlags takes out of args the flags fs defines (with their values),
// wherever they stand, and returns them and the rest, each in order.
func splitFlags(fs *flag.FlagSet, args []string) (own, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(rest, args[i:]...)
		}
		name, hasValue := flagName(a)
		f := fs.Lookup(name)
		if name == "" || f == nil {
			rest = append(rest, a)
			continue
		}
		own = append(own, a)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) && i+1 < len(args) {
			own = append(own, args[i+1])
			i++
		}
	}
	return own, rest
}

// flagName is the name of a flag argument ("--name", "-name", "--name=v";
// hasValue for the last), or "" for an argument that is not a flag.
func flagName(a string) (name string, hasValue bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", false
	}
	a = strings.TrimPrefix(a[1:], "-")
	if a == "" || a[0] == '-' || a[0] == '=' {
		return "", false
	}
	name, _, hasValue = strings.Cut(a, "=")
	return name, hasValue
}

// SignalContext returns a context that ends at the first SIGINT or
// SIGTERM, when the program should stop gracefully; a second signal exits
// at once with status 1. stop releases the signals.
func (p *Program) SignalContext() (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			p.Log.Info().Str("signal", s.String()).Msg("stopping; a second signal stops at once")
			cancel()
		case <-done:
			return
		}
		select {
		case <-sig:
			p.Log.Warn().Msg("second signal: stopping now")
			os.Exit(1)
		case <-done:
		}
	}()
	dump := make(chan os.Signal, 1)
	signal.Notify(dump, syscall.SIGUSR1)
	go func() {
		for {
			select {
			case <-dump:
				p.Log.Warn().Msg("SIGUSR1: writing every goroutine's stack to standard error")
				writeStacks(os.Stderr)
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(sig)
		signal.Stop(dump)
		close(done)
		cancel()
	}
}

// writeStacks writes the stacks of every goroutine to w: what a process
// that seems stuck is doing, without stopping it (SIGQUIT, Go's own, ends
// it).
func writeStacks(w io.Writer) {
	_ = pprof.Lookup("goroutine").WriteTo(w, 2) // 2: as an unrecovered panic prints them
}

// Open connects to the broker the settings name (--nats, NATS_URL), or
// with embed and no URL starts the embedded one (--listen, --data).
func (p *Program) Open(ctx context.Context, embed bool) (*broker.Conn, error) {
	sync, err := p.Config.BrokerSync()
	if err != nil {
		return nil, err
	}
	if p.Config.WebSocket != "" && (p.Config.NATS != "" || !embed) {
		return nil, Usagef("--websocket opens a listener of the embedded broker; a nats-server of your own opens its own (its websocket block)")
	}
	return broker.Open(ctx, broker.OpenOptions{
		URL: p.Config.NATS, Auth: p.Config.Auth, Embed: embed, Listen: p.Config.Listen, WebSocket: p.Config.WebSocket, DataDir: p.Config.DataDir, Sync: sync, ConfigFile: p.Config.NATSConfig,
		Name: p.Name, Logger: p.Log,
	})
}

// StopWhenBrokerGone returns a context that also ends once nc has been
// disconnected for grace (never when grace is 0 or less), for a program
// that has nothing to do without its broker. The watch ends with ctx.
func (p *Program) StopWhenBrokerGone(ctx context.Context, nc *nats.Conn, grace time.Duration) context.Context {
	if grace <= 0 {
		return ctx
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		t := time.NewTicker(grace / 20)
		defer t.Stop()
		var since time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				switch {
				case nc.IsConnected():
					since = time.Time{}
				case since.IsZero():
					since = now
				case now.Sub(since) >= grace:
					p.Log.Warn().Dur("grace", grace).Msg("the broker has been unreachable too long: stopping")
					return
				}
			}
		}
	}()
	return ctx
}

// Exit ends the program: status 0 without an error; with one, the error
// on stderr and status 2 for a usage error, else code (1 when 0).
func Exit(name string, code int, err error, stderr io.Writer) {
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		code = 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintln(stderr, name+":", err)
		code = 2
	default:
		fmt.Fprintln(stderr, name+":", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
