// Package game is Bitburner's hacking rules (game version 2.6, BitNode 1,
// every BitNode multiplier 1) as pure functions, and the networks they act
// on: servers, the player and scenarios to load. It holds no state and
// talks to nothing; the world service (package world) keeps a network's
// state and applies these rules to it, and the planner plans with them.
// RULES.md beside this file states every rule the functions follow.
package game
