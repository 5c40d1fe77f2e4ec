package broker

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// AsyncReply answers a micro request from another goroutine than its
// handler's. micro's Request records the answer in fields that its service
// reads once the handler returns, so a handler that hands the request to
// another goroutine must not answer through it; it answers here instead,
// with the same headers micro would set.
type AsyncReply struct {
	NC      *nats.Conn
	Subject string
}

// ReplyLater captures where to answer a request.
func ReplyLater(nc *nats.Conn, req micro.Request) AsyncReply {
	return AsyncReply{NC: nc, Subject: req.Reply()}
}

// Respond sends data as the answer.
func (r AsyncReply) Respond(data []byte) error { return r.NC.Publish(r.Subject, data) }

// Error sends an error answer: micro's error headers and a body.
func (r AsyncReply) Error(code, description string, data []byte) error {
	m := nats.NewMsg(r.Subject)
	m.Header.Set(micro.ErrorCodeHeader, code)
	m.Header.Set(micro.ErrorHeader, description)
	m.Data = data
	return r.NC.PublishMsg(m)
}
