package webui_test

import (
	"log"
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/hvmind/hvmind/webui"
)

// Serve the live timeline of the jobs on a broker, as hvmind-pool --http
// does (there with the pool's status and the game's charts).
func Example() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	ui, err := webui.New(nc, webui.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer ui.Close()
	log.Fatal(http.ListenAndServe("127.0.0.1:7464", ui.Handler()))
}
