package world

import (
	"errors"
	"fmt"

	"github.com/hvmind/hvmind/world/game"
)

// Sentinel errors of the world service. The service answers each with a
// code (see ErrorReply), and the Client turns the code back into the
// sentinel, so errors.Is works across the wire. ErrNoRoot and
// ErrLevelTooLow (formulas.go) are answered the same way.
var (
	// ErrUnknownTarget means the target of an operation is not a server of the world.
	ErrUnknownTarget = errors.New("unknown target")
	// ErrUnknownHost means the host a worker runs on is not a server of the world.
	ErrUnknownHost = errors.New("unknown host")
	// ErrNoRAM means a host has not enough free RAM for a reservation.
	ErrNoRAM = errors.New("not enough free RAM")
	// ErrInvalid means a malformed or inconsistent request.
	ErrInvalid = errors.New("invalid request")
	// ErrNotBegun means a finish for a job the world has no begin for.
	ErrNotBegun = errors.New("operation was never begun")
	// ErrSettled means a begin or finish of a job whose operation was
	// settled (see SettleRequest): nothing of it applies.
	ErrSettled = errors.New("operation was settled")
	// ErrUnavailable means the world could not store a change; nothing was
	// applied and the request may be retried.
	ErrUnavailable = errors.New("world store unavailable")
	// ErrScenarioMismatch means the broker holds a world of another scenario.
	ErrScenarioMismatch = errors.New("the stored world is of another scenario")
	// ErrAlreadyRunning means another world service answers on this broker.
	ErrAlreadyRunning = errors.New("a world service is already running")
	// ErrNotRunning means no world service answers.
	ErrNotRunning = errors.New("no world service is running")
	// ErrNotOwner means a worker asked, on its own subjects (see
	// WorkerSubject), for an operation or a reservation of another.
	ErrNotOwner = errors.New("not this worker's")
)

// Error codes of ErrorReply.Code, one per sentinel.
const (
	CodeInvalid       = "invalid"
	CodeUnknownTarget = "unknown_target"
	CodeUnknownHost   = "unknown_host"
	CodeNoRoot        = "no_root"
	CodeLevelTooLow   = "level_too_low"
	CodeNoRAM         = "no_ram"
	CodeNotBegun      = "not_begun"
	CodeSettled       = "settled"
	CodeUnavailable   = "unavailable"
	CodeNotOwner      = "not_owner"
	CodeInternal      = "internal"
)

// ErrorReply is the JSON body of an error answer of the world service.
type ErrorReply struct {
	Error string `json:"error"`
	// Code is a short machine-readable kind: one of the Code constants.
	Code string `json:"code"`
}

// codes maps each sentinel to its code and micro status.
var codes = []struct {
	err    error
	code   string
	status string
}{
	{ErrInvalid, CodeInvalid, "400"},
	{ErrUnknownTarget, CodeUnknownTarget, "404"},
	{ErrUnknownHost, CodeUnknownHost, "404"},
	{game.ErrNoRoot, CodeNoRoot, "403"},
	{game.ErrLevelTooLow, CodeLevelTooLow, "403"},
	{ErrNoRAM, CodeNoRAM, "409"},
	{ErrNotBegun, CodeNotBegun, "404"},
	{ErrSettled, CodeSettled, "409"},
	{ErrUnavailable, CodeUnavailable, "503"},
	{ErrNotOwner, CodeNotOwner, "403"},
}

// errorCode is the code and status of err.
func errorCode(err error) (code, status string) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return CodeInternal, "500"
}

// RemoteError is an error answer of the world service.
type RemoteError struct {
	ErrorReply
	// Status is the micro service status code (400, 403, 404, 409, 503…).
	Status string
}

func (e *RemoteError) Error() string { return e.ErrorReply.Error }

// Is lets errors.Is match a remote error against the world's sentinels.
func (e *RemoteError) Is(target error) bool {
	for _, c := range codes {
		if c.err == target {
			return e.Code == c.code
		}
	}
	return false
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// invalidJobID is the error of a job id that job.ValidID refuses, its
// message led by prefix ("settle: ", or "").
func invalidJobID(prefix, id string) error {
	return invalidf("%sjob id %q: want 1-128 letters, digits, '-', '_' or '.'", prefix, id)
}
