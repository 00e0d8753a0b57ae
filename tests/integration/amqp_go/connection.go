// connection.go: what belongs to a connection: exclusive queues, heartbeats, flow control
// with connection.blocked, and the channel errors the broker raises (with their reply codes)
// without taking the connection down.
package main

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// testExclusiveQueue: a server-named exclusive queue is locked to its connection (405 for
// others) and deleted when that connection closes.
func testExclusiveQueue(t *T) {
	owner := t.dial(t.url)
	och := t.channel(owner)
	q, err := och.QueueDeclare("", false, false, true, false, nil)
	t.must(err, "declare a server-named exclusive queue")
	if q.Name == "" {
		t.Fatalf("queue.declare-ok gave no name for a server-named queue")
	}
	t.must(och.Publish("", q.Name, false, false, text("mine")), "publish")

	other := t.dial(t.url)
	_, err = t.channel(other).QueueDeclarePassive(q.Name, false, false, false, false, nil)
	t.expectCode(err, amqp.ResourceLocked, "passive declare of another connection's "+
		"exclusive queue")
	_, err = t.channel(other).Consume(q.Name, "", false, false, false, false, nil)
	t.expectCode(err, amqp.ResourceLocked, "consume from another connection's exclusive queue")

	t.expectBodies("the owner reads its exclusive queue", t.bodies(och, q.Name), "mine")
	t.must(owner.Close(), "close the owning connection")
	t.eventually("the exclusive queue is gone after its connection closed",
		func() bool { return !t.exists(other, q.Name) })
}

// testHeartbeats: with a 1 s heartbeat the connection survives 4 idle seconds (amqp091-go
// drops it if the broker sends nothing for 1.5 s) and still works afterwards.
func testHeartbeats(t *T) {
	conn := t.dial(t.url, amqp.Config{Heartbeat: time.Second})
	if conn.Config.Heartbeat != time.Second {
		t.Fatalf("negotiated heartbeat %v, want 1s", conn.Config.Heartbeat)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	idle := time.NewTimer(4 * time.Second)
	defer idle.Stop()
	select {
	case err := <-closed:
		t.Fatalf("connection closed while idle with 1 s heartbeats: %v", err)
	case <-idle.C:
	}
	pub := t.publisher(conn)
	q := t.declareQueue(pub.ch, t.q("q"), nil)
	pub.publish("", q, text("still here"))
	t.expectBodies("after idling", t.bodies(pub.ch, q), "still here")
}

// testChannelErrors: each mistake closes its channel with the code the spec gives, and the
// connection and its other channels carry on.
func testChannelErrors(t *T) {
	conn := t.dial(t.url)
	fresh := func() *amqp.Channel { return t.channel(conn) }
	missing := t.q("missing")

	ch := fresh()
	_, err := ch.QueueDeclarePassive(missing, false, false, false, false, nil)
	e := t.expectCode(err, amqp.NotFound, "passive declare of a missing queue")
	if !e.Server {
		t.Fatalf("404 on passive declare did not come from the server: %v", e)
	}
	if !ch.IsClosed() || conn.IsClosed() {
		t.Fatalf("after a channel error: channel closed %v (want true), connection closed %v "+
			"(want false)", ch.IsClosed(), conn.IsClosed())
	}

	ch = fresh()
	durable := t.q("durable")
	_, err = ch.QueueDeclare(durable, true, false, false, false, nil)
	t.must(err, "declare a durable queue")
	t.cleanup(func() { fresh().QueueDelete(durable, false, false, false) })
	_, err = ch.QueueDeclare(durable, false, false, false, false, nil)
	t.expectCode(err, amqp.PreconditionFailed, "redeclare a durable queue as transient")

	ch = fresh()
	ex := t.q("direct")
	t.must(ch.ExchangeDeclare(ex, "direct", false, false, false, false, nil), "declare")
	err = ch.ExchangeDeclare(ex, "fanout", false, false, false, false, nil)
	t.expectCode(err, amqp.PreconditionFailed, "redeclare a direct exchange as fanout")

	ch = fresh()
	q := t.declareQueue(ch, t.q("q"), nil)
	t.expectCode(ch.QueueBind(q, "k", missing, false, nil), amqp.NotFound,
		"bind to a missing exchange")

	ch = fresh()
	err = ch.ExchangeDeclare("amq.go-it", "direct", false, false, false, false, nil)
	t.expectCode(err, amqp.AccessRefused, "declare an exchange in the reserved amq. namespace")

	pub := t.publisher(conn)
	pub.publish("", q, text("occupant"))
	ch = fresh()
	_, err = ch.QueueDelete(q, false, true, false)
	t.expectCode(err, amqp.PreconditionFailed, "delete a non-empty queue with if-empty")

	// Errors of asynchronous methods arrive as channel.close, seen through NotifyClose.
	ch = fresh()
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	t.must(ch.PublishWithContext(context.Background(), missing, "k", false, false,
		text("x")), "send basic.publish")
	t.expectCode(recv(t, (<-chan *amqp.Error)(closes), "channel.close after publishing to "+
		"a missing exchange"), amqp.NotFound, "publish to a missing exchange")

	ch = fresh()
	closes = ch.NotifyClose(make(chan *amqp.Error, 1))
	t.must(ch.Ack(999, false), "send basic.ack")
	t.expectCode(recv(t, (<-chan *amqp.Error)(closes), "channel.close after acking an "+
		"unknown delivery tag"), amqp.PreconditionFailed, "ack of an unknown delivery tag")

	if conn.IsClosed() {
		t.Fatalf("channel errors closed the connection")
	}
	t.expectBodies("a new channel after 8 channel errors", t.bodies(fresh(), q), "occupant")
}

// testBlocked: on a broker with a 1 MiB memory high watermark, publishing 64 KiB messages
// that nobody consumes raises connection.blocked; deleting the queue frees the memory and
// connection.unblocked follows; the connection then publishes again.
func testBlocked(t *T) {
	conn := t.dial(t.blockedURL)
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch := t.channel(conn)
	q := t.declareQueue(ch, t.q("ballast"), nil)

	stop := make(chan struct{})
	published := make(chan error, 1)
	go func() {
		body := make([]byte, 64<<10)
		for i := 0; i < 256; i++ { // 16 MiB at most
			select {
			case <-stop:
				published <- nil
				return
			default:
			}
			if err := ch.Publish("", q, false, false, amqp.Publishing{Body: body}); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	b := recv(t, (<-chan amqp.Blocking)(blocked), "connection.blocked while filling 1 MiB")
	close(stop)
	if !b.Active || b.Reason == "" {
		t.Fatalf("first flow-control notification: %+v, want blocked with a reason", b)
	}

	_, err := t.channel(t.dial(t.blockedURL)).QueueDelete(q, false, false, false)
	t.must(err, "delete the ballast queue from another connection")
	b = recv(t, (<-chan amqp.Blocking)(blocked), "connection.unblocked after freeing memory")
	if b.Active {
		t.Fatalf("after freeing the memory: %+v, want unblocked", b)
	}
	t.must(recv(t, (<-chan error)(published), "the publisher to finish after unblocking"),
		"publish ballast")

	pub := t.publisher(conn)
	after := t.declareQueue(pub.ch, t.q("after"), nil)
	pub.publish("", after, text("flowing"))
	t.expectBodies("after unblocking", t.bodies(pub.ch, after), "flowing")
}
