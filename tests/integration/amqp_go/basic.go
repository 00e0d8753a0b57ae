// basic.go: the basic class as a Go service uses it: publish and consume with every property,
// publisher confirms, mandatory returns, nack/reject with requeue, prefetch, and the
// broker-initiated cancel a consumer gets when its queue is deleted.
package main

import (
	"bytes"
	"fmt"
	"reflect"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// testPublishConsume: bodies from empty to several frames long, and one message with every
// basic property and a header table of every common field type, come back byte for byte.
func testPublishConsume(t *T) {
	conn := t.dial(t.url)
	ch := t.channel(conn)
	q := t.declareQueue(ch, t.q("q"), nil)

	frame := conn.Config.FrameSize
	sizes := []int{0, 1, 100, 4096, frame - 9, frame - 8, frame + 1, 3*frame + 7, 1 << 20}
	var sent [][]byte
	for i, size := range sizes {
		body := make([]byte, size)
		for j := range body {
			body[j] = byte((i + j) % 251)
		}
		sent = append(sent, body)
	}
	for i := 1; i <= 1000; i++ {
		sent = append(sent, []byte(fmt.Sprintf("small-%d", i)))
	}
	for _, body := range sent {
		t.must(ch.Publish("", q, false, false, amqp.Publishing{Body: body}), "publish")
	}
	full := amqp.Publishing{
		Headers: amqp.Table{
			"string": "text", "int32": int32(-7), "int64": int64(1) << 40, "bool": true,
			"float64": 2.5, "table": amqp.Table{"inner": "v"},
			"array": []interface{}{"a", int32(1), false}, "bytes": []byte{0, 1, 255},
			"void": nil,
		},
		ContentType:     "application/json",
		ContentEncoding: "identity",
		DeliveryMode:    amqp.Persistent,
		Priority:        5,
		CorrelationId:   "corr-1",
		ReplyTo:         "reply.here",
		MessageId:       "id-42",
		Timestamp:       time.Unix(1700000000, 0),
		Type:            "order.created",
		UserId:          "guest",
		AppId:           "amqp_go",
		Body:            []byte(`{"order":1}`),
	}
	t.must(ch.Publish("", q, false, false, full), "publish with every property")

	deliveries, err := ch.Consume(q, "pc", false, false, false, false, nil)
	t.must(err, "consume")
	for i, body := range sent {
		d := recv(t, deliveries, fmt.Sprintf("delivery %d", i+1))
		if !bytes.Equal(d.Body, body) {
			t.Fatalf("delivery %d: body of %d bytes differs from the %d bytes sent",
				i+1, len(d.Body), len(body))
		}
		if d.DeliveryTag != uint64(i+1) || d.Redelivered || d.Exchange != "" ||
			d.RoutingKey != q || d.ConsumerTag != "pc" {
			t.Fatalf("delivery %d: tag %d redelivered %v exchange %q key %q consumer %q",
				i+1, d.DeliveryTag, d.Redelivered, d.Exchange, d.RoutingKey, d.ConsumerTag)
		}
	}
	d := recv(t, deliveries, "the message with every property")
	got := amqp.Publishing{
		Headers: d.Headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
		UserId: d.UserId, AppId: d.AppId, Body: d.Body,
	}
	if !got.Timestamp.Equal(full.Timestamp) {
		t.Fatalf("timestamp: sent %v, got %v", full.Timestamp, got.Timestamp)
	}
	got.Timestamp = full.Timestamp
	if !reflect.DeepEqual(got, full) {
		t.Fatalf("properties changed in transit:\nsent %#v\ngot  %#v", full, got)
	}
	t.must(d.Ack(true), "ack everything")
	if n := t.ready(conn, q); n != 0 {
		t.Fatalf("%d messages still ready after all were delivered and acked", n)
	}
}

// testStandardExchanges: the amq.* exchanges every broker predeclares exist and route.
func testStandardExchanges(t *T) {
	conn := t.dial(t.url)
	ch := t.channel(conn)
	for _, ex := range []struct{ name, kind string }{
		{"amq.direct", "direct"}, {"amq.fanout", "fanout"}, {"amq.topic", "topic"},
		{"amq.headers", "headers"},
	} {
		t.must(ch.ExchangeDeclarePassive(ex.name, ex.kind, true, false, false, false, nil),
			"passive declare of "+ex.name)
	}
	q := t.declareQueue(ch, t.q("q"), nil)
	t.bindQueue(ch, q, "orders.*", "amq.topic", nil)
	pub := t.publisher(conn)
	pub.publish("amq.topic", "orders.eu", text("routed"))
	pub.publish("amq.topic", "invoices.eu", text("not routed"))
	t.expectBodies("queue bound to amq.topic with orders.*", t.bodies(ch, q), "routed")
}

// testConfirms: every publish on a confirm channel is acked, with tags 1..n in order.
func testConfirms(t *T) {
	const n = 300
	conn := t.dial(t.url)
	ch := t.channel(conn)
	q, err := ch.QueueDeclare(t.q("durable"), true, false, false, false, nil)
	t.must(err, "declare durable queue")
	t.cleanup(func() { ch.QueueDelete(q.Name, false, false, false) })
	t.must(ch.Confirm(false), "confirm.select")
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
	for i := 1; i <= n; i++ {
		if next := ch.GetNextPublishSeqNo(); next != uint64(i) {
			t.Fatalf("next publish sequence number %d, want %d", next, i)
		}
		t.must(ch.Publish("", q.Name, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprintf("c-%d", i)),
		}), "publish")
	}
	for i := 1; i <= n; i++ {
		c := recv(t, (<-chan amqp.Confirmation)(confirms), fmt.Sprintf("confirm %d", i))
		if c.DeliveryTag != uint64(i) || !c.Ack {
			t.Fatalf("confirm %d: got tag %d ack %v", i, c.DeliveryTag, c.Ack)
		}
	}
	if ready := t.ready(conn, q.Name); ready != n {
		t.Fatalf("%d messages confirmed but %d ready", n, ready)
	}
}

// testMandatoryReturn: an unroutable mandatory message comes back as basic.return 312
// NO_ROUTE before its confirm; a routable or non-mandatory one does not.
func testMandatoryReturn(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	returns := pub.returns
	ex := t.q("direct")
	t.must(pub.ch.ExchangeDeclare(ex, "direct", false, false, false, false, nil),
		"declare exchange")
	q := t.declareQueue(pub.ch, t.q("bound"), nil)
	t.bindQueue(pub.ch, q, "here", ex, nil)

	expectReturn := func(exchange, key, body string) {
		pub.publishMandatory(exchange, key, true, amqp.Publishing{
			MessageId: "m-" + body, Body: []byte(body)})
		select {
		case r := <-returns:
			if r.ReplyCode != amqp.NoRoute || r.ReplyText != "NO_ROUTE" ||
				r.Exchange != exchange || r.RoutingKey != key || string(r.Body) != body ||
				r.MessageId != "m-"+body {
				t.Fatalf("basic.return for %q: got code %d %q exchange %q key %q body %q "+
					"message-id %q", body, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey,
					r.Body, r.MessageId)
			}
		default:
			t.Fatalf("mandatory %q to %q/%q was acked without a basic.return before the ack",
				body, exchange, key)
		}
	}
	expectReturn(ex, "nowhere", "lost")
	expectReturn("", t.q("no-such-queue"), "lost-too")

	pub.publishMandatory(ex, "here", true, text("kept"))
	pub.publishMandatory(ex, "nowhere", false, text("dropped quietly"))
	select {
	case r := <-returns:
		t.Fatalf("unexpected basic.return %d %s of %q", r.ReplyCode, r.ReplyText, r.Body)
	default:
	}
	t.expectBodies("the bound queue", t.bodies(pub.ch, q), "kept")
}

// testNackRequeue: nack and reject with requeue hand the message out again marked
// redelivered; without requeue it is gone; a closed channel requeues what it held, and a
// multiple nack requeues in the original order.
func testNackRequeue(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	ch := t.channel(conn)
	q := t.declareQueue(ch, t.q("q"), nil)
	pub.publish("", q, text("first"))

	deliveries, err := ch.Consume(q, "nr", false, false, false, false, nil)
	t.must(err, "consume")
	d := recv(t, deliveries, "first delivery")
	if d.Redelivered {
		t.Fatalf("a first delivery is marked redelivered")
	}
	t.must(d.Nack(false, true), "nack with requeue")
	d = recv(t, deliveries, "delivery after nack")
	if string(d.Body) != "first" || !d.Redelivered {
		t.Fatalf("after nack+requeue: body %q redelivered %v", d.Body, d.Redelivered)
	}
	t.must(d.Reject(true), "reject with requeue")
	d = recv(t, deliveries, "delivery after reject")
	if string(d.Body) != "first" || !d.Redelivered {
		t.Fatalf("after reject+requeue: body %q redelivered %v", d.Body, d.Redelivered)
	}
	t.must(d.Reject(false), "reject without requeue")
	t.must(ch.Cancel("nr", false), "cancel")
	for range deliveries {
		t.Fatalf("a delivery after reject without requeue")
	}
	if n := t.ready(conn, q); n != 0 {
		t.Fatalf("a rejected message (no requeue) is still in the queue: %d ready", n)
	}

	// Unacked deliveries of a channel that closes go back to the queue.
	for _, body := range []string{"a", "b", "c"} {
		pub.publish("", q, text(body))
	}
	other := t.channel(conn)
	held, err := other.Consume(q, "held", false, false, false, false, nil)
	t.must(err, "consume on a second channel")
	for i := 0; i < 3; i++ {
		recv(t, held, "delivery to the second channel")
	}
	t.must(other.Close(), "close the second channel")
	var again []amqp.Delivery
	t.eventually("the closed channel's 3 unacked messages are back", func() bool {
		for {
			d, ok, err := ch.Get(q, false)
			t.must(err, "basic.get")
			if !ok {
				return len(again) == 3
			}
			again = append(again, d)
		}
	})
	for i, d := range again {
		if want := []string{"a", "b", "c"}[i]; string(d.Body) != want || !d.Redelivered {
			t.Fatalf("requeued by channel close: #%d is %q redelivered %v, want %q redelivered",
				i+1, d.Body, d.Redelivered, want)
		}
	}
	// Multiple nack of all three: requeued in their original order.
	t.must(again[2].Nack(true, true), "nack multiple with requeue")
	var bodies []string
	for i := 0; i < 3; i++ {
		d, ok, err := ch.Get(q, true)
		t.must(err, "basic.get")
		if !ok {
			t.Fatalf("only %d of 3 messages back after a multiple nack", i)
		}
		bodies = append(bodies, string(d.Body))
	}
	t.expectBodies("order after a multiple nack", bodies, "a", "b", "c")
}

// testPrefetch: with basic.qos 2 the broker holds back the third message until an ack.
func testPrefetch(t *T) {
	conn := t.dial(t.url)
	pub := t.publisher(conn)
	q := t.declareQueue(pub.ch, t.q("q"), nil)
	for i := 1; i <= 5; i++ {
		pub.publish("", q, text(fmt.Sprintf("p-%d", i)))
	}
	ch := t.channel(conn)
	t.must(ch.Qos(2, 0, false), "basic.qos 2")
	deliveries, err := ch.Consume(q, "pf", false, false, false, false, nil)
	t.must(err, "consume")
	recv(t, deliveries, "delivery 1")
	second := recv(t, deliveries, "delivery 2")
	if n := t.ready(conn, q); n != 3 {
		t.Fatalf("prefetch 2 with 2 unacked: want 3 messages ready, broker says %d", n)
	}
	select {
	case d := <-deliveries:
		t.Fatalf("got %q while 2 messages were unacked with prefetch 2", d.Body)
	case <-time.After(300 * time.Millisecond):
	}
	t.must(second.Ack(true), "ack 2 messages at once (multiple)")
	recv(t, deliveries, "delivery 3")
	fourth := recv(t, deliveries, "delivery 4")
	if n := t.ready(conn, q); n != 1 {
		t.Fatalf("after acking 2 and receiving 2 more: want 1 ready, broker says %d", n)
	}
	t.must(fourth.Ack(true), "ack")
	last := recv(t, deliveries, "delivery 5")
	if string(last.Body) != "p-5" {
		t.Fatalf("fifth delivery is %q, want p-5", last.Body)
	}
	t.must(last.Ack(false), "ack")
}

// testConsumerCancelNotify: deleting a queue cancels its consumers with basic.cancel, which
// amqp091-go reports on NotifyCancel and by closing the deliveries channel.
func testConsumerCancelNotify(t *T) {
	conn := t.dial(t.url)
	ch := t.channel(conn)
	q := t.declareQueue(ch, t.q("q"), nil)
	cancels := ch.NotifyCancel(make(chan string, 1))
	deliveries, err := ch.Consume(q, "doomed-consumer", false, false, false, false, nil)
	t.must(err, "consume")
	_, err = t.channel(conn).QueueDelete(q, false, false, false)
	t.must(err, "delete the queue")
	if tag := recv(t, (<-chan string)(cancels), "basic.cancel"); tag != "doomed-consumer" {
		t.Fatalf("basic.cancel names consumer %q", tag)
	}
	select {
	case _, open := <-deliveries:
		if open {
			t.Fatalf("a delivery from a deleted queue")
		}
	case <-time.After(patience):
		t.Fatalf("deliveries channel still open after basic.cancel")
	}
	if ch.IsClosed() {
		t.Fatalf("the channel closed: a cancelled consumer must leave it open")
	}
}
