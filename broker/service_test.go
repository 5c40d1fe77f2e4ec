package broker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/hvmind/hvmind/broker"
)

// An endpoint's description is what "nats micro info" shows of it.
func TestServiceDescribesEndpoints(t *testing.T) {
	t.Parallel()
	nc := startEmbedded(t)
	svc, err := broker.AddService(nc, micro.Config{Name: "described", Version: "1.0.0"},
		broker.Endpoint{Name: "echo", Subject: "test.echo", Handler: func(r micro.Request) { _ = r.Respond(r.Data()) },
			Description: "answers what it is sent"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	msg, err := nc.Request("$SRV.INFO.described", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Endpoints) != 1 || info.Endpoints[0].Metadata["description"] != "answers what it is sent" || info.Endpoints[0].Subject != "test.echo" {
		t.Errorf("endpoints %+v, want echo on test.echo with its description", info.Endpoints)
	}
}
