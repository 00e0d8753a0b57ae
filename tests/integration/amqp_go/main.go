// Command amqp_go drives a broker through amqp091-go, the Go client RabbitMQ maintains, and
// checks what a Go service would see: deliveries and their properties, confirms, returns,
// requeues, prefetch, routing, dead-lettering, TTL, exclusive queues, heartbeats, flow control
// (connection.blocked) and channel errors with their reply codes.
//
//	amqp_go -url amqp://guest:guest@127.0.0.1:PORT/ [-blocked-url URL] [-run a,b] [-keep-going]
//
// -blocked-url names a broker whose memory high watermark is low (1 MiB): the flow-control
// test runs only when it is given. Each test prints "ok NAME" or "FAIL NAME: why"; the program
// stops at the first failure (or, with -keep-going, after all tests) and exits 1 if any failed.
// Every wait has a deadline, so a broker that never answers fails a test instead of hanging it.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// patience bounds every wait for something the broker should do promptly.
const patience = 5 * time.Second

type test struct {
	name string
	run  func(t *T)
}

var tests = []test{
	{"publish_consume", testPublishConsume},
	{"standard_exchanges", testStandardExchanges},
	{"confirms", testConfirms},
	{"mandatory_return", testMandatoryReturn},
	{"nack_requeue", testNackRequeue},
	{"prefetch", testPrefetch},
	{"consumer_cancel_notify", testConsumerCancelNotify},
	{"exchange_to_exchange", testExchangeToExchange},
	{"headers_exchange", testHeadersExchange},
	{"dead_letter", testDeadLetter},
	{"ttl", testTTL},
	{"exclusive_queue", testExclusiveQueue},
	{"heartbeats", testHeartbeats},
	{"channel_errors", testChannelErrors},
	{"blocked", testBlocked},
}

// T is one running test: its broker URLs, the names it creates and what to close after it.
type T struct {
	name       string
	url        string
	blockedURL string
	prefix     string
	cleanups   []func()
}

// failure is what Fatalf panics with; run recovers it, so a test stops at its first problem
// the way testing.T.Fatalf stops one.
type failure string

func (t *T) Fatalf(format string, args ...interface{}) {
	panic(failure(fmt.Sprintf(format, args...)))
}

// must fails the test on an error from a step that should have worked.
func (t *T) must(err error, what string) {
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// q names a queue or exchange for this test and this run, so runs never share state.
func (t *T) q(name string) string {
	return t.prefix + t.name + "." + name
}

func (t *T) cleanup(f func()) {
	t.cleanups = append(t.cleanups, f)
}

// dial opens a connection that is closed after the test. Closing is bounded: a broker that
// never answers connection.close must not hang the run.
func (t *T) dial(url string, config ...amqp.Config) *amqp.Connection {
	var conn *amqp.Connection
	var err error
	if len(config) > 0 {
		conn, err = amqp.DialConfig(url, config[0])
	} else {
		conn, err = amqp.Dial(url)
	}
	t.must(err, "connect to "+url)
	t.cleanup(func() {
		done := make(chan struct{})
		go func() {
			conn.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(patience):
			fmt.Fprintf(os.Stderr, "%s: connection.close got no answer in %v\n", t.name,
				patience)
		}
	})
	return conn
}

func (t *T) channel(conn *amqp.Connection) *amqp.Channel {
	ch, err := conn.Channel()
	t.must(err, "open a channel")
	return ch
}

func main() {
	url := flag.String("url", os.Getenv("AMQP_URL"), "broker URL (default from $AMQP_URL)")
	blockedURL := flag.String("blocked-url", "",
		"URL of a broker with a 1 MiB memory high watermark (runs the blocked test)")
	only := flag.String("run", "", "comma-separated tests to run (default: all)")
	keepGoing := flag.Bool("keep-going", false, "run every test even after a failure")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "amqp_go: give -url or set AMQP_URL")
		os.Exit(2)
	}
	selected := map[string]bool{}
	for _, name := range strings.Split(*only, ",") {
		if name != "" {
			selected[name] = true
		}
	}
	prefix := fmt.Sprintf("go-it-%d.", os.Getpid())
	failed := 0
	for _, tc := range tests {
		if len(selected) > 0 && !selected[tc.name] {
			continue
		}
		if tc.name == "blocked" && *blockedURL == "" {
			fmt.Printf("skip %s (no -blocked-url)\n", tc.name)
			continue
		}
		t := &T{name: tc.name, url: *url, blockedURL: *blockedURL, prefix: prefix}
		if msg, ok := t.run(tc.run); !ok {
			fmt.Printf("FAIL %s: %s\n", tc.name, msg)
			failed++
			if !*keepGoing {
				os.Exit(1)
			}
		} else {
			fmt.Printf("ok %s\n", tc.name)
		}
	}
	for name := range selected {
		if !known(name) {
			fmt.Printf("FAIL %s: no such test\n", name)
			failed++
		}
	}
	if failed > 0 {
		fmt.Printf("%d tests failed\n", failed)
		os.Exit(1)
	}
}

func known(name string) bool {
	for _, tc := range tests {
		if tc.name == name {
			return true
		}
	}
	return false
}

func (t *T) run(f func(t *T)) (msg string, ok bool) {
	defer func() {
		for i := len(t.cleanups) - 1; i >= 0; i-- {
			t.cleanups[i]()
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			f, isFailure := r.(failure)
			if !isFailure {
				panic(r)
			}
			msg, ok = string(f), false
		}
	}()
	f(t)
	return "", true
}
