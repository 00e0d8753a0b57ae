// routing.go: routing beyond one exchange and one queue: exchange-to-exchange bindings (and a
// cycle of them) and the headers exchange with x-match all and any.
package main

import (
	amqp "github.com/rabbitmq/amqp091-go"
)

// testExchangeToExchange: a message published to src reaches queues bound to dst through
// exchange.bind, stops after exchange.unbind, and a cycle delivers each queue one copy.
func testExchangeToExchange(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	ch := pub.ch
	src, dst := t.q("src"), t.q("dst")
	t.must(ch.ExchangeDeclare(src, "topic", false, false, false, false, nil), "declare src")
	t.must(ch.ExchangeDeclare(dst, "direct", false, false, false, false, nil), "declare dst")
	t.must(ch.ExchangeBind(dst, "k.a", src, false, nil), "bind dst to src")
	viaDst := t.declareQueue(ch, t.q("via-dst"), nil)
	onSrc := t.declareQueue(ch, t.q("on-src"), nil)
	t.bindQueue(ch, viaDst, "k.a", dst, nil)
	t.bindQueue(ch, onSrc, "k.#", src, nil)

	pub.publish(src, "k.a", text("m1"))
	pub.publish(src, "k.b", text("m2"))
	pub.publish(dst, "k.a", text("m3"))
	t.expectBodies("queue bound to dst", t.bodies(ch, viaDst), "m1", "m3")
	t.expectBodies("queue bound to src", t.bodies(ch, onSrc), "m1", "m2")

	t.must(ch.ExchangeUnbind(dst, "k.a", src, false, nil), "unbind dst from src")
	pub.publish(src, "k.a", text("m4"))
	t.expectBodies("queue bound to dst after exchange.unbind", t.bodies(ch, viaDst))
	t.expectBodies("queue bound to src", t.bodies(ch, onSrc), "m4")

	// src -> dst -> src: routing must stop, and each queue still gets the message once.
	t.must(ch.ExchangeBind(dst, "k.a", src, false, nil), "bind dst to src again")
	t.must(ch.ExchangeBind(src, "k.a", dst, false, nil), "bind src to dst (a cycle)")
	pub.publish(src, "k.a", text("m5"))
	t.expectBodies("queue bound to dst, with a cycle", t.bodies(ch, viaDst), "m5")
	t.expectBodies("queue bound to src, with a cycle", t.bodies(ch, onSrc), "m5")
}

// testHeadersExchange: x-match all needs every bound header, any needs one; x- arguments
// are not matched against message headers.
func testHeadersExchange(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	ch := pub.ch
	ex := t.q("headers")
	t.must(ch.ExchangeDeclare(ex, "headers", false, false, false, false, nil), "declare")
	all := t.declareQueue(ch, t.q("all"), nil)
	anyq := t.declareQueue(ch, t.q("any"), nil)
	t.bindQueue(ch, all, "", ex, amqp.Table{"x-match": "all", "format": "pdf", "type": "report"})
	t.bindQueue(ch, anyq, "", ex, amqp.Table{"x-match": "any", "format": "pdf", "type": "report"})

	send := func(body string, headers amqp.Table) {
		pub.publish(ex, "ignored", amqp.Publishing{Headers: headers, Body: []byte(body)})
	}
	send("both", amqp.Table{"format": "pdf", "type": "report"})
	send("format-only", amqp.Table{"format": "pdf"})
	send("neither", amqp.Table{"format": "zip", "type": "log"})
	send("superset", amqp.Table{"format": "pdf", "type": "report", "pages": int32(3)})
	send("no-headers", nil)
	t.expectBodies("x-match all", t.bodies(ch, all), "both", "superset")
	t.expectBodies("x-match any", t.bodies(ch, anyq), "both", "format-only", "superset")
}
