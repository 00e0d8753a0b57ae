package main

import (
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/kafka"
)

var confluentChecks = []check{
	{"producer_and_group_consumer", confluentProduceConsume},
}

func confluentProduce(brokers, topic string, vals []string) error {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"acks":               "all",
		"enable.idempotence": true,
		"linger.ms":          5,
		"message.timeout.ms": 20000,
	})
	if err != nil {
		return fmt.Errorf("new producer: %w", err)
	}
	defer p.Close()
	reports := make(chan kafka.Event, len(vals))
	t := topic
	for i, v := range vals {
		err := p.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &t, Partition: kafka.PartitionAny},
			Key:            []byte(fmt.Sprintf("k%d", i%7)),
			Value:          []byte(v),
			Headers:        []kafka.Header{{Key: "origin", Value: []byte("kafka_go")}},
		}, reports)
		if err != nil {
			return fmt.Errorf("produce %s: %w", v, err)
		}
	}
	deadline := time.After(30 * time.Second)
	for i := range vals {
		select {
		case ev := <-reports:
			m, ok := ev.(*kafka.Message)
			if !ok {
				return fmt.Errorf("unexpected event %v", ev)
			}
			if m.TopicPartition.Error != nil {
				return fmt.Errorf("delivery of %s: %w", m.Value, m.TopicPartition.Error)
			}
		case <-deadline:
			return fmt.Errorf("%d of %d delivery reports after 30 s", i, len(vals))
		}
	}
	return nil
}

// confluentConsume reads n messages in group, committing each, then closes the consumer.
func confluentConsume(brokers, topic, group string, n int) ([]string, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":     brokers,
		"group.id":              group,
		"enable.auto.commit":    false,
		"session.timeout.ms":    6000,
		"heartbeat.interval.ms": 500,
		"auto.offset.reset":     "earliest",
	})
	if err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	defer c.Close()
	if err := c.SubscribeTopics([]string{topic}, nil); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	var got []string
	deadline := time.Now().Add(45 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			return got, fmt.Errorf("%d of %d messages in group %s after 45 s", len(got), n,
				group)
		}
		ev := c.Poll(100)
		switch e := ev.(type) {
		case *kafka.Message:
			if e.TopicPartition.Error != nil {
				return got, fmt.Errorf("consume: %w", e.TopicPartition.Error)
			}
			if len(e.Headers) != 1 || e.Headers[0].Key != "origin" ||
				string(e.Headers[0].Value) != "kafka_go" {
				return got, fmt.Errorf("headers of %s: got %v", e.Value, e.Headers)
			}
			if _, err := c.CommitMessage(e); err != nil {
				return got, fmt.Errorf("commit %v: %w", e.TopicPartition, err)
			}
			got = append(got, string(e.Value))
		case kafka.Error:
			return got, fmt.Errorf("consumer error: %w", e)
		}
	}
	return got, nil
}

// An idempotent producer with acks=all, a group consumer that commits each message, more
// messages, and a new consumer of the group that sees exactly those.
func confluentProduceConsume(brokers string) error {
	const topic, group = "kg-confluent", "kg-confluent-group"
	if err := confluentProduce(brokers, topic, values("a", 0, 100)); err != nil {
		return err
	}
	got, err := confluentConsume(brokers, topic, group, 100)
	if err != nil {
		return err
	}
	if err := sameValues(got, values("a", 0, 100)); err != nil {
		return fmt.Errorf("first consumer: %w", err)
	}
	if err := confluentProduce(brokers, topic, values("b", 0, 10)); err != nil {
		return err
	}
	got, err = confluentConsume(brokers, topic, group, 10)
	if err != nil {
		return err
	}
	if err := sameValues(got, values("b", 0, 10)); err != nil {
		return fmt.Errorf("the group did not resume after its commits: %w", err)
	}
	return nil
}
