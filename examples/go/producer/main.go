// Command producer publishes -count messages to a durable queue with publisher confirms and
// exits 0 once the broker has confirmed every one of them.
//
// It is the shape of a Go service that must not lose what it sends: the queue is declared
// durable, messages are persistent, and a message counts as sent only when its confirm (basic.ack)
// has come back. At most -window messages are in flight unconfirmed, so memory stays bounded
// and a broker that stops confirming stops the producer instead of filling its memory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	url := flag.String("url", envOr("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		"broker URL (default from $AMQP_URL)")
	queue := flag.String("queue", "tasks", "durable queue to publish to")
	count := flag.Int("count", 10, "number of messages to publish")
	prefix := flag.String("prefix", "msg-", "message body is this prefix followed by 1..count")
	window := flag.Int("window", 100, "most messages in flight without a confirm")
	timeout := flag.Duration("timeout", 60*time.Second, "give up if not all confirmed by then")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("producer: ")

	if *window < 1 {
		log.Fatal("-window must be at least 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *url, *queue, *prefix, *count, *window); err != nil {
		log.Fatal(err)
	}
	log.Printf("%d messages confirmed", *count)
}

func run(ctx context.Context, url, queue, prefix string, count, window int) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %q: %w", queue, err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("enable publisher confirms: %w", err)
	}
	// Confirms arrive in publishing order on this channel. NotifyPublish is used rather than
	// DeferredConfirmation: in amqp091-go 1.5.0 (Debian's) a confirm that arrives before its
	// DeferredConfirmation is registered is lost and Wait never returns (amqp091-go issue
	// #182), and a fast broker on loopback wins that race now and then.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window))
	// A message the broker cannot route comes back as basic.return before its ack: without
	// this listener it would be confirmed and silently dropped.
	returns := ch.NotifyReturn(make(chan amqp.Return, window))

	unconfirmed := 0
	for i := 1; i <= count; i++ {
		if unconfirmed == window {
			if err := awaitConfirm(ctx, confirms, returns); err != nil {
				return err
			}
			unconfirmed--
		}
		err := ch.PublishWithContext(ctx, "", queue, true, false, amqp.Publishing{
			ContentType:  "text/plain",
			DeliveryMode: amqp.Persistent,
			Body:         []byte(fmt.Sprintf("%s%d", prefix, i)),
		})
		if err != nil {
			return fmt.Errorf("publish message %d: %w", i, err)
		}
		unconfirmed++
	}
	for ; unconfirmed > 0; unconfirmed-- {
		if err := awaitConfirm(ctx, confirms, returns); err != nil {
			return err
		}
	}
	return nil
}

// awaitConfirm waits for the next confirm, which must be an ack for a message that was routed.
func awaitConfirm(ctx context.Context, confirms <-chan amqp.Confirmation,
	returns <-chan amqp.Return) error {
	select {
	case c, ok := <-confirms:
		if !ok {
			return errors.New("the channel closed before every message was confirmed")
		}
		if !c.Ack {
			return fmt.Errorf("message %d: the broker refused it (basic.nack)", c.DeliveryTag)
		}
		select {
		case r := <-returns:
			return fmt.Errorf("message %q returned: %d %s", r.Body, r.ReplyCode, r.ReplyText)
		default:
			return nil
		}
	case <-ctx.Done():
		return errors.New("not every message was confirmed before the deadline")
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
