package live

import (
	"bytes"
	"embed"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// scripts are the executor and its operation scripts, as the game runs them.
//
//go:embed executor/hvmind.js executor/hvmind-hack.js executor/hvmind-grow.js executor/hvmind-weaken.js
var scripts embed.FS

// ExecutorFile is the executor's file name, in the game and on the
// Handler's paths.
const ExecutorFile = "hvmind.js"

// Script is the content of one of the scripts the game runs: ExecutorFile
// or an operation script (hvmind-hack.js, hvmind-grow.js,
// hvmind-weaken.js), as kept in the source.
func Script(name string) ([]byte, bool) {
	b, err := scripts.ReadFile("executor/" + name)
	return b, err == nil
}

// ScriptNames are the names of the scripts the game runs: the executor
// first, then the operation scripts.
func ScriptNames() []string {
	return []string{ExecutorFile, "hvmind-hack.js", "hvmind-grow.js", "hvmind-weaken.js"}
}

// Handler serves the scripts at /<name>: the executor with the address it
// was asked at filled in (so that it downloads its operation scripts from
// there) and the broker's WebSocket listener on wsPort, at the host the
// player's browser asked this server by.
//
// In the game's terminal: wget http://ADDR/hvmind.js hvmind.js, then
// run hvmind.js (see InstallCommands).
func Handler(wsPort int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		body, ok := Script(name)
		if !ok || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		if name == ExecutorFile {
			host := r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			ws := "ws://" + net.JoinHostPort(host, strconv.Itoa(wsPort))
			body = bytes.Replace(body, []byte("__HVMIND_BROKER_URL__"), []byte(ws), 1)
			body = bytes.Replace(body, []byte("__HVMIND_SERVED_FROM__"), []byte("http://"+r.Host), 1)
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		// The game fetches from its own page's origin.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	})
}

// InstallCommands are what the player types in the game's terminal, one
// after the other, to install and start the executor served by Handler at
// httpAddr (host:port). Two commands, not one line: the terminal's wget
// ends after the line's next command has run, and "wget …; run
// hvmind.js" runs a file not there yet (or the old one).
func InstallCommands(httpAddr string) []string {
	return []string{"wget http://" + httpAddr + "/" + ExecutorFile + " " + ExecutorFile, "run " + ExecutorFile}
}
