// deadletter.go: dead-letter exchanges and the x-death history a consumer reads from them,
// and TTLs: per queue, per message, with and without a dead-letter exchange, and x-expires.
package main

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// deadLetters declares a direct dead-letter exchange and the queue its "dead" key reaches,
// and returns them with the arguments that make a queue dead-letter there.
func (t *T) deadLetters(ch *amqp.Channel) (dlx, dead string, args amqp.Table) {
	dlx, dead = t.q("dlx"), t.q("dead")
	t.must(ch.ExchangeDeclare(dlx, "direct", false, false, false, false, nil), "declare dlx")
	t.declareQueue(ch, dead, nil)
	t.bindQueue(ch, dead, "dead", dlx, nil)
	return dlx, dead, amqp.Table{"x-dead-letter-exchange": dlx,
		"x-dead-letter-routing-key": "dead"}
}

// awaitDead waits until a message reaches queue (dead-lettering may be asynchronous).
func (t *T) awaitDead(ch *amqp.Channel, queue, what string) amqp.Delivery {
	var d amqp.Delivery
	t.eventually(what+" reaches "+queue, func() bool {
		var ok bool
		var err error
		d, ok, err = ch.Get(queue, true)
		t.must(err, "basic.get from "+queue)
		return ok
	})
	return d
}

// xDeath checks the newest entry of a dead-lettered message's x-death header and returns it.
func (t *T) xDeath(d amqp.Delivery, reason, queue string, count int64, keys ...string) amqp.Table {
	deaths, ok := d.Headers["x-death"].([]interface{})
	if !ok || len(deaths) == 0 {
		t.Fatalf("dead-lettered %q: x-death header missing or not an array: %#v", d.Body,
			d.Headers["x-death"])
	}
	death, ok := deaths[0].(amqp.Table)
	if !ok {
		t.Fatalf("x-death[0] is %T, want a table", deaths[0])
	}
	var routingKeys []interface{}
	for _, k := range keys {
		routingKeys = append(routingKeys, k)
	}
	want := amqp.Table{"reason": reason, "queue": queue, "count": count, "exchange": "",
		"routing-keys": routingKeys}
	for field, value := range want {
		if !reflect.DeepEqual(death[field], value) {
			t.Fatalf("x-death[0][%q]: want %#v, got %#v (entry %v)", field, value, death[field],
				death)
		}
	}
	if _, ok := death["time"].(time.Time); !ok {
		t.Fatalf("x-death[0][\"time\"] should be a timestamp, got %#v", death["time"])
	}
	return death
}

// testDeadLetter: a message rejected without requeue goes to the dead-letter exchange under
// the configured routing key, keeps its headers, and carries x-death and x-first-death-*;
// dead-lettered again from the same queue, its x-death count grows to 2.
func testDeadLetter(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	ch := pub.ch
	dlx, dead, args := t.deadLetters(ch)
	work := t.declareQueue(ch, t.q("work"), args)

	reject := func(msg amqp.Publishing) amqp.Delivery {
		pub.publish("", work, msg)
		d, ok, err := ch.Get(work, false)
		t.must(err, "basic.get")
		if !ok {
			t.Fatalf("confirmed message not in %s", work)
		}
		t.must(d.Reject(false), "reject without requeue")
		return t.awaitDead(ch, dead, "the rejected message")
	}
	d := reject(amqp.Publishing{Headers: amqp.Table{"app": "kept"}, Body: []byte("doomed")})
	if string(d.Body) != "doomed" || d.Headers["app"] != "kept" {
		t.Fatalf("dead-lettered message: body %q headers %v", d.Body, d.Headers)
	}
	if d.Exchange != dlx || d.RoutingKey != "dead" {
		t.Fatalf("dead-lettered message came from %q with key %q, want %q and \"dead\"",
			d.Exchange, d.RoutingKey, dlx)
	}
	t.xDeath(d, "rejected", work, 1, work)
	for field, want := range map[string]string{"x-first-death-reason": "rejected",
		"x-first-death-queue": work, "x-first-death-exchange": ""} {
		if d.Headers[field] != want {
			t.Fatalf("%s: want %q, got %#v", field, want, d.Headers[field])
		}
	}
	// A retry loop republishes what it got from the dead-letter queue: same queue, same
	// reason, so the one x-death entry counts 2.
	d = reject(amqp.Publishing{Headers: d.Headers, Body: d.Body})
	t.xDeath(d, "rejected", work, 2, work)
	if deaths := d.Headers["x-death"].([]interface{}); len(deaths) != 1 {
		t.Fatalf("x-death should keep one entry per (queue, reason), has %d: %v",
			len(deaths), deaths)
	}
}

// testTTL: per-queue and per-message TTL expire messages into the dead-letter exchange with
// reason "expired"; without one they just disappear; x-expires deletes an unused queue.
func testTTL(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	ch := pub.ch
	_, dead, dlArgs := t.deadLetters(ch)

	queueTTL := amqp.Table{"x-message-ttl": int32(50)}
	for k, v := range dlArgs {
		queueTTL[k] = v
	}
	short := t.declareQueue(ch, t.q("queue-ttl"), queueTTL)
	pub.publish("", short, text("queue-ttl"))
	d := t.awaitDead(ch, dead, "a message past the queue's x-message-ttl")
	if string(d.Body) != "queue-ttl" {
		t.Fatalf("dead-lettered %q, want queue-ttl", d.Body)
	}
	t.xDeath(d, "expired", short, 1, short)

	plain := t.declareQueue(ch, t.q("message-ttl"), dlArgs)
	pub.publish("", plain, amqp.Publishing{Expiration: "50", Body: []byte("message-ttl")})
	d = t.awaitDead(ch, dead, "a message past its own expiration")
	death := t.xDeath(d, "expired", plain, 1, plain)
	if death["original-expiration"] != "50" || d.Expiration != "" {
		t.Fatalf("a message expired by its own TTL: original-expiration %#v, expiration %q "+
			"(want \"50\" and none, so it does not expire again)",
			death["original-expiration"], d.Expiration)
	}

	drop := t.declareQueue(ch, t.q("drop"), amqp.Table{"x-message-ttl": int32(50)})
	pub.publish("", drop, text("gone"))
	t.eventually("an expired message without a dead-letter exchange leaves the queue",
		func() bool { return t.ready(conn, drop) == 0 })
	t.expectBodies("queue after its message expired", t.bodies(ch, drop))

	fleeting := t.declareQueue(ch, t.q("x-expires"), amqp.Table{"x-expires": int32(200)})
	// Probed by publishing, which unlike a declare or basic.get does not count as a use.
	t.eventually(fmt.Sprintf("queue %s with x-expires 200 ms is deleted", fleeting),
		func() bool { return !pub.routes("", fleeting) })
}

// exists asks for a queue with a passive declare on a channel of its own (a 404 closes it).
func (t *T) exists(conn *amqp.Connection, queue string) bool {
	ch := t.channel(conn)
	_, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	var e *amqp.Error
	if errors.As(err, &e) && e.Code == amqp.NotFound {
		return false
	}
	t.must(err, "passive declare of "+queue)
	ch.Close()
	return true
}
