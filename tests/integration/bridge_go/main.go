// Command bridge_go consumes what Kafka producers sent through a forward_to exchange, with
// amqp091-go and manual acks (bridge_test.py builds and runs it). It prints one line per
// message once it is acked: the routing key, the value of the header named by -header (or
// "-"), and the body, separated by spaces. It exits 0 after -count messages, 1 on an error or
// when no message arrives for 10 s.
package main

import (
	"flag"
	"fmt"
	"log"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	url := flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	queue := flag.String("queue", "", "queue to consume from (it must exist)")
	header := flag.String("header", "", "header whose value to print")
	count := flag.Int("count", 1, "messages to consume")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bridge_go: ")

	conn, err := amqp.Dial(*url)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		log.Fatalf("channel: %v", err)
	}
	if err := ch.Qos(10, 0, false); err != nil {
		log.Fatalf("qos: %v", err)
	}
	deliveries, err := ch.Consume(*queue, "", false, false, false, false, nil)
	if err != nil {
		log.Fatalf("consume: %v", err)
	}
	for got := 0; got < *count; got++ {
		select {
		case d, ok := <-deliveries:
			if !ok {
				log.Fatalf("the channel closed after %d messages", got)
			}
			if err := d.Ack(false); err != nil {
				log.Fatalf("ack: %v", err)
			}
			value, ok := d.Headers[*header]
			if !ok {
				value = "-"
			}
			fmt.Printf("%s %s %s\n", d.RoutingKey, value, d.Body)
		case <-time.After(10 * time.Second):
			log.Fatalf("no message for 10 s after %d of %d", got, *count)
		}
	}
	if err := ch.Close(); err != nil {
		log.Fatalf("close: %v", err)
	}
}
