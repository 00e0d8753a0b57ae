// Command kafka_go drives warren's Kafka listener with the two Go clients Debian packages:
// segmentio/kafka-go (pure Go) and confluent-kafka-go (librdkafka through cgo). Each check
// asserts what a Go service would see and fails the program with what it expected and got.
//
//	kafka_go -brokers 127.0.0.1:PORT -client segmentio|confluent
//
// The topics it uses are created by the caller's config (kg-* with 3 partitions, kg1-* with
// one); every wait has a deadline.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

type check struct {
	name string
	run  func(brokers string) error
}

var checks = map[string][]check{
	"segmentio": segmentioChecks,
	"confluent": confluentChecks,
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap broker host:port")
	client := flag.String("client", "segmentio", "segmentio or confluent")
	flag.Parse()
	list, ok := checks[*client]
	if !ok {
		fmt.Fprintf(os.Stderr, "kafka_go: unknown client %q\n", *client)
		os.Exit(2)
	}
	failed := 0
	for _, c := range list {
		start := time.Now()
		if err := c.run(*brokers); err != nil {
			failed++
			fmt.Printf("FAIL %s.%s (%.1f s): %v\n", *client, c.name,
				time.Since(start).Seconds(), err)
			continue
		}
		fmt.Printf("ok   %s.%s (%.1f s)\n", *client, c.name, time.Since(start).Seconds())
	}
	fmt.Printf("%d passed, %d failed\n", len(list)-failed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

// sameValues reports whether got holds exactly the values of want, each once, in any order.
func sameValues(got []string, want []string) error {
	count := map[string]int{}
	for _, v := range want {
		count[v]++
	}
	for _, v := range got {
		count[v]--
	}
	for v, n := range count {
		if n != 0 {
			return fmt.Errorf("value %q seen %d times too few (got %d values, want %d)",
				v, n, len(got), len(want))
		}
	}
	return nil
}

func values(prefix string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}
