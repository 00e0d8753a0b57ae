// Command producer writes -count messages to a Kafka topic with segmentio/kafka-go, each
// acknowledged by the broker with acks=all before the program reports success. Messages with
// the same key go to the same partition (hash balancer), so their order is kept.
//
// It exits 0 once every message is acknowledged, and 1 on an error or after -timeout.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

func main() {
	brokers := flag.String("brokers", envOr("KAFKA_BROKERS", "127.0.0.1:9092"),
		"comma-separated bootstrap brokers (default from $KAFKA_BROKERS)")
	topic := flag.String("topic", "orders", "topic to write to")
	count := flag.Int("count", 100, "how many messages to write")
	prefix := flag.String("prefix", "msg-", "each value is this prefix and a number from 1")
	keys := flag.Int("keys", 10, "spread messages over this many keys (key-0 ...)")
	batch := flag.Int("batch", 100, "messages per WriteMessages call")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("producer: ")

	// RequiredAcks -1 is acks=all: the broker answers once the write is as durable as it is
	// configured to be.
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers:      strings.Split(*brokers, ","),
		Topic:        *topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: -1,
		BatchTimeout: 10 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := write(ctx, w, *count, *batch, *keys, *prefix)
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close writer: %w", cerr)
	}
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%d messages acknowledged", *count)
}

// write sends the messages in batches; WriteMessages returns once the broker acknowledged the
// whole batch, so a batch that fails is reported, never silently dropped.
func write(ctx context.Context, w *kafka.Writer, count, batch, keys int, prefix string) error {
	for sent := 0; sent < count; {
		n := batch
		if count-sent < n {
			n = count - sent
		}
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			seq := sent + i + 1
			msgs[i] = kafka.Message{
				Key:   []byte(fmt.Sprintf("key-%d", seq%keys)),
				Value: []byte(fmt.Sprintf("%s%d", prefix, seq)),
			}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("write messages %d-%d: %w", sent+1, sent+n, err)
		}
		sent += n
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
