package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Endpoint is one request/reply endpoint of a service.
type Endpoint struct {
	Name    string
	Subject string
	Handler micro.HandlerFunc
	// Description says what the endpoint does, for "nats micro info"
	// (the endpoint's "description" metadata).
	Description string
}

// AddService starts a NATS micro service (listed by "nats micro ls") with
// its endpoints on their own subjects, and returns once the server has
// their subscriptions, so that every client can reach them.
func AddService(nc *nats.Conn, cfg micro.Config, endpoints ...Endpoint) (micro.Service, error) {
	svc, err := micro.AddService(nc, cfg)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", cfg.Name, err)
	}
	var errs []error
	for _, e := range endpoints {
		opts := []micro.EndpointOpt{micro.WithEndpointSubject(e.Subject)}
		if e.Description != "" {
			opts = append(opts, micro.WithEndpointMetadata(map[string]string{"description": e.Description}))
		}
		errs = append(errs, svc.AddEndpoint(e.Name, e.Handler, opts...))
	}
	if err := errors.Join(errs...); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("service %s: %w", cfg.Name, err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("service %s: %w", cfg.Name, err)
	}
	return svc, nil
}
