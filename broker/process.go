package broker

// Worker processes (see worker.Process) take launch requests on their own
// subjects. The names live here, with every other subject, so that a
// launcher and the process agree without importing each other.

// SubjectProcs prefixes a worker process's name: hvmind.procs.<name>.<endpoint>.
const SubjectProcs = "hvmind.procs."

// ProcessSubject is the subject of a worker process's endpoint ("launch",
// "status" or "stop"): hvmind.procs.<name>.<endpoint>.
func ProcessSubject(name, endpoint string) string {
	return SubjectProcs + name + "." + endpoint
}

// WorkerSpec is a worker to start: what a launcher passes to a worker
// process (as JSON on its launch subject) or to a worker's command line.
type WorkerSpec struct {
	// ID names the worker; its jobs arrive on JobsSubject(ID).
	ID string `json:"id"`
	// Host is the host the worker runs on.
	Host string `json:"host"`
	// Threads is the capacity the worker offers.
	Threads int `json:"threads"`
	// Reserve makes the worker hold its threads on Host with the capacity
	// provider while it lives (see serverpool.Provider).
	Reserve bool `json:"reserve,omitempty"`
	// OnDemand marks a worker launched for a job that did not fit: the pool
	// stops it when it has been idle for a while.
	OnDemand bool `json:"onDemand,omitempty"`
}

// StopRequest asks a worker process to stop some of its workers (on its
// "stop" subject): the one request that stops a process's thousands of
// workers, where a stop message on each worker's queue is a message to
// store and acknowledge for each.
type StopRequest struct {
	// Workers are the ids to stop; the process ignores those it does not
	// run.
	Workers []string `json:"workers"`
	// Reason is logged by each worker.
	Reason string `json:"reason"`
}

// StopReply names the workers a stop request stopped: those of its
// workers that were taking jobs. A worker not named (still setting up
// its queue, or run by another process) needs a stop message on its queue.
type StopReply struct {
	Stopped []string `json:"stopped"`
}
