// helpers.go: the steps the tests share. Each waits at most `patience` and fails the test by
// name when the broker does not do what it should.
package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// recv takes one value from c, or fails the test after patience.
func recv[V any](t *T, c <-chan V, what string) V {
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatalf("waiting for %s: the client closed the channel (connection or channel "+
				"closed?)", what)
		}
		return v
	case <-timer.C:
		t.Fatalf("no %s within %v", what, patience)
	}
	panic("unreachable")
}

// eventually polls cond every 20 ms until it holds, or fails after patience naming what.
func (t *T) eventually(what string, cond func() bool) {
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", patience, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publisher is a channel in confirm mode. Its publish returns only when the broker has
// confirmed the message, so the message has been routed before the test looks at a queue:
// "nothing arrived" can then be checked at once, with no waiting.
type publisher struct {
	t        *T
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
	returns  chan amqp.Return
}

func (t *T) publisher(conn *amqp.Connection) *publisher {
	ch := t.channel(conn)
	t.must(ch.Confirm(false), "confirm.select")
	return &publisher{t, ch, ch.NotifyPublish(make(chan amqp.Confirmation, 1)),
		ch.NotifyReturn(make(chan amqp.Return, 16))}
}

func (p *publisher) publish(exchange, key string, msg amqp.Publishing) {
	p.publishMandatory(exchange, key, false, msg)
}

func (p *publisher) publishMandatory(exchange, key string, mandatory bool, msg amqp.Publishing) {
	tag := p.ch.GetNextPublishSeqNo()
	err := p.ch.PublishWithContext(context.Background(), exchange, key, mandatory, false, msg)
	p.t.must(err, fmt.Sprintf("publish to exchange %q key %q", exchange, key))
	c := recv(p.t, (<-chan amqp.Confirmation)(p.confirms),
		fmt.Sprintf("confirm of message %d", tag))
	if c.DeliveryTag != tag || !c.Ack {
		p.t.Fatalf("publish to %q/%q: want ack of tag %d, got %+v", exchange, key, tag, c)
	}
}

// routes says whether the broker can route a message to exchange with key right now: a
// mandatory publish that is not routed comes back as basic.return before its confirm.
func (p *publisher) routes(exchange, key string) bool {
	p.publishMandatory(exchange, key, true, text("probe"))
	select {
	case <-p.returns:
		return false
	default:
		return true
	}
}

func text(body string) amqp.Publishing {
	return amqp.Publishing{Body: []byte(body)}
}

// declareQueue declares a non-durable queue with the given arguments and returns its name.
func (t *T) declareQueue(ch *amqp.Channel, name string, args amqp.Table) string {
	q, err := ch.QueueDeclare(name, false, false, false, false, args)
	t.must(err, "declare queue "+name)
	return q.Name
}

func (t *T) bindQueue(ch *amqp.Channel, queue, key, exchange string, args amqp.Table) {
	t.must(ch.QueueBind(queue, key, exchange, false, args),
		fmt.Sprintf("bind queue %s to %s with key %q", queue, exchange, key))
}

// bodies empties a queue with basic.get (auto-ack) and returns the bodies in order.
func (t *T) bodies(ch *amqp.Channel, queue string) []string {
	var got []string
	for len(got) < 10000 {
		d, ok, err := ch.Get(queue, true)
		t.must(err, "basic.get from "+queue)
		if !ok {
			return got
		}
		got = append(got, string(d.Body))
	}
	t.Fatalf("queue %s never runs empty", queue)
	return nil
}

func (t *T) expectBodies(what string, got []string, want ...string) {
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: want %q, got %q", what, want, got)
	}
}

// ready is the number of ready messages the broker reports in queue.declare-ok.
func (t *T) ready(conn *amqp.Connection, queue string) int {
	ch := t.channel(conn)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	t.must(err, "passive declare of "+queue)
	return q.Messages
}

// expectCode checks that err is the broker's channel or connection error with this reply code.
func (t *T) expectCode(err error, code int, what string) *amqp.Error {
	var e *amqp.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: want AMQP error %d, got %v", what, code, err)
	}
	if e.Code != code {
		t.Fatalf("%s: want reply code %d, got %d %s", what, code, e.Code, e.Reason)
	}
	return e
}
