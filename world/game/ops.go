package game

// The hacking operations: the tasks a worker runs against a target.
const (
	OpHack   = "hack"
	OpGrow   = "grow"
	OpWeaken = "weaken"
)

// IsOperation reports whether task is hack, grow or weaken.
func IsOperation(task string) bool {
	return task == OpHack || task == OpGrow || task == OpWeaken
}
