// Command consumer reads a Kafka topic as a member of a consumer group with
// segmentio/kafka-go, commits each message's offset once it is processed, and only then
// prints its value on stdout: a line on stdout means "processed and committed".
//
// On SIGTERM or SIGINT it shuts down gracefully: the message in hand is finished and
// committed, then the reader closes, which leaves the group so that its partitions move to
// the other members at once. It exits 0. The next member of the group starts after the last
// committed offset, so no message is both printed here and processed again elsewhere.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

type options struct {
	brokers, topic, group string
	count                 int
	work                  time.Duration
}

func main() {
	var opt options
	flag.StringVar(&opt.brokers, "brokers", envOr("KAFKA_BROKERS", "127.0.0.1:9092"),
		"comma-separated bootstrap brokers (default from $KAFKA_BROKERS)")
	flag.StringVar(&opt.topic, "topic", "orders", "topic to read")
	flag.StringVar(&opt.group, "group", "example-consumer", "consumer group")
	flag.IntVar(&opt.count, "count", 0, "exit after this many messages (0: run until signalled)")
	flag.DurationVar(&opt.work, "work", 0, "time spent on each message, e.g. 200ms")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("consumer: ")

	// Registered before connecting, so a SIGTERM during start-up is not the default kill.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, opt); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, opt options) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           strings.Split(opt.brokers, ","),
		GroupID:           opt.group,
		Topic:             opt.topic,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           500 * time.Millisecond,
		HeartbeatInterval: time.Second,
		SessionTimeout:    10 * time.Second,
		CommitInterval:    0, // commit synchronously in CommitMessages
	})
	done := 0
	for opt.count == 0 || done < opt.count {
		// kafka-go 0.2.1's FetchMessage may hand out a message it already holds even after
		// the context is cancelled: stop here once a signal came.
		if ctx.Err() != nil {
			log.Printf("stopping after %d messages", done)
			break
		}
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				log.Printf("stopping after %d messages", done)
				break
			}
			r.Close()
			return fmt.Errorf("fetch: %w", err)
		}
		// The message in hand is finished and committed even if a signal comes meanwhile.
		if err := handle(r, m, opt.work); err != nil {
			r.Close()
			return err
		}
		done++
	}
	if ctx.Err() == nil {
		log.Printf("consumed %d messages", done)
	}
	if err := r.Close(); err != nil {
		return fmt.Errorf("close reader: %w", err)
	}
	return nil
}

// handle does the work for one message, commits its offset, and only then reports it.
func handle(r *kafka.Reader, m kafka.Message, work time.Duration) error {
	log.Printf("working on %s (partition %d, offset %d)", m.Value, m.Partition, m.Offset)
	time.Sleep(work)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.CommitMessages(ctx, m); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("commit %s: no answer within 10 s", m.Value)
		}
		return fmt.Errorf("commit %s: %w", m.Value, err)
	}
	fmt.Printf("%s\n", m.Value)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
