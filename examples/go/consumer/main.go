// Command consumer drains a durable queue with manual acks and a prefetch limit, printing each
// message body on its own line of stdout once the message is acked.
//
// On SIGTERM or SIGINT it shuts down gracefully: the message in hand is finished and acked, the
// consumer is cancelled, and the channel and connection are closed, so the broker requeues only
// what this process never started on. A line on stdout therefore means "processed and acked",
// and no message is both printed here and redelivered to someone else.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type options struct {
	url, queue string
	prefetch   int
	count      int
	work       time.Duration
}

func main() {
	var opt options
	flag.StringVar(&opt.url, "url", envOr("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		"broker URL (default from $AMQP_URL)")
	flag.StringVar(&opt.queue, "queue", "tasks", "durable queue to consume from")
	flag.IntVar(&opt.prefetch, "prefetch", 10, "most unacked messages the broker may send")
	flag.IntVar(&opt.count, "count", 0, "exit after this many messages (0: run until signalled)")
	flag.DurationVar(&opt.work, "work", 0, "time spent on each message, e.g. 200ms")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("consumer: ")

	// Registered before connecting, so a SIGTERM during start-up is not the default kill.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := run(opt, stop); err != nil {
		log.Fatal(err)
	}
}

func run(opt options, stop <-chan os.Signal) error {
	conn, err := amqp.Dial(opt.url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	q, err := ch.QueueDeclare(opt.queue, true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("declare queue %q: %w", opt.queue, err)
	}
	log.Printf("queue %s: %d messages ready", q.Name, q.Messages)
	if err := ch.Qos(opt.prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	const tag = "example-consumer"
	deliveries, err := ch.Consume(opt.queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))

	done := 0
	for opt.count == 0 || done < opt.count {
		// A signal that arrived while a message was in hand wins over the next delivery.
		select {
		case sig := <-stop:
			log.Printf("%v: stopping after %d messages", sig, done)
			return shutdown(conn, ch, tag, deliveries)
		default:
		}
		select {
		case sig := <-stop:
			log.Printf("%v: stopping after %d messages", sig, done)
			return shutdown(conn, ch, tag, deliveries)
		case err := <-closed:
			return fmt.Errorf("connection lost: %v", err)
		case d, ok := <-deliveries:
			if !ok {
				// The client closes deliveries when the connection drops, too.
				select {
				case err := <-closed:
					return fmt.Errorf("connection lost: %v", err)
				case <-time.After(time.Second):
					return errors.New("the broker cancelled the consumer")
				}
			}
			if err := handle(d, opt.work); err != nil {
				return err
			}
			done++
		}
	}
	log.Printf("consumed %d messages", done)
	return shutdown(conn, ch, tag, deliveries)
}

// handle does the work for one message, acks it, and only then reports it on stdout.
func handle(d amqp.Delivery, work time.Duration) error {
	log.Printf("working on %s (redelivered: %v)", d.Body, d.Redelivered)
	time.Sleep(work)
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack %s: %w", d.Body, err)
	}
	fmt.Printf("%s\n", d.Body)
	return nil
}

// shutdown cancels the consumer and waits until the client has handed over every delivery the
// broker sent before basic.cancel-ok: those were never started on, so they go back to the
// queue when the channel closes. Then the channel and connection close cleanly.
func shutdown(conn *amqp.Connection, ch *amqp.Channel, tag string,
	deliveries <-chan amqp.Delivery) error {
	if err := ch.Cancel(tag, false); err != nil {
		return fmt.Errorf("cancel consumer: %w", err)
	}
	unstarted := 0
	flushed := time.NewTimer(5 * time.Second)
	defer flushed.Stop()
drain:
	for {
		select {
		case _, ok := <-deliveries:
			if !ok {
				break drain
			}
			unstarted++
		case <-flushed.C:
			return errors.New("deliveries still arriving 5 s after basic.cancel-ok")
		}
	}
	if unstarted > 0 {
		log.Printf("%d prefetched messages left for redelivery", unstarted)
	}
	if err := ch.Close(); err != nil {
		return fmt.Errorf("close channel: %w", err)
	}
	if err := conn.Close(); err != nil {
		return fmt.Errorf("close connection: %w", err)
	}
	return nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
