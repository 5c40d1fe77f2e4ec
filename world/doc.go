// Package world is the simulated Bitburner network as a service on NATS:
// the single writer of the network's state (servers, player, the RAM each
// worker holds), which applies the game's rules (package game) to the
// hack, grow and weaken operations workers begin and finish, keeps every
// change in a key-value bucket so that any restart resumes where it was,
// and answers the world's micro service (Serve, Client).
//
// The world plugs into the job system from beside it: world/tasks has the
// operations' task handlers and their split policy, world/hosts offers the
// servers with RAM as the pool's capacity.
package world
