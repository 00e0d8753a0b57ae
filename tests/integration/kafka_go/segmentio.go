package main

import (
	"context"
	"fmt"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

var segmentioChecks = []check{
	{"writer_and_group_reader", segmentioWriterGroupReader},
	{"conn_offsets_and_seek", segmentioConnOffsets},
}

func segmentioWrite(brokers, topic string, vals []string) error {
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers:      []string{brokers},
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: 10 * time.Millisecond,
		RequiredAcks: -1,
		WriteTimeout: 10 * time.Second,
		ReadTimeout:  10 * time.Second,
	})
	msgs := make([]kafka.Message, len(vals))
	for i, v := range vals {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(v)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		w.Close()
		return fmt.Errorf("write %d messages to %s: %w", len(vals), topic, err)
	}
	return w.Close()
}

// segmentioGroupRead reads n messages as a member of group, committing each one, and closes
// the reader (which leaves the group).
func segmentioGroupRead(brokers, topic, group string, n int) ([]string, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           []string{brokers},
		GroupID:           group,
		Topic:             topic,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           200 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return got, fmt.Errorf("fetch message %d of %d in group %s: %w", len(got)+1, n,
				group, err)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			return got, fmt.Errorf("commit offset %d of partition %d: %w", m.Offset,
				m.Partition, err)
		}
		got = append(got, string(m.Value))
	}
	return got, nil
}

// A Writer with acks=all, then a group reader that commits, then more messages: a new reader
// of the same group sees exactly those.
func segmentioWriterGroupReader(brokers string) error {
	const topic, group = "kg-segmentio", "kg-segmentio-group"
	if err := segmentioWrite(brokers, topic, values("a", 0, 100)); err != nil {
		return err
	}
	got, err := segmentioGroupRead(brokers, topic, group, 100)
	if err != nil {
		return err
	}
	if err := sameValues(got, values("a", 0, 100)); err != nil {
		return fmt.Errorf("first reader: %w", err)
	}
	if err := segmentioWrite(brokers, topic, values("b", 0, 10)); err != nil {
		return err
	}
	got, err = segmentioGroupRead(brokers, topic, group, 10)
	if err != nil {
		return err
	}
	if err := sameValues(got, values("b", 0, 10)); err != nil {
		return fmt.Errorf("the group did not resume after its commits: %w", err)
	}
	return nil
}

// The partition-level Conn: first and last offsets, seek and read one message.
func segmentioConnOffsets(brokers string) error {
	const topic = "kg1-segmentio"
	if err := segmentioWrite(brokers, topic, values("c", 0, 20)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", brokers, topic, 0)
	if err != nil {
		return fmt.Errorf("dial the leader of %s/0: %w", topic, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return fmt.Errorf("read offsets: %w", err)
	}
	if first != 0 || last != 20 {
		return fmt.Errorf("offsets of %s/0: expected [0, 20), got [%d, %d)", topic, first, last)
	}
	if _, err := conn.Seek(15, kafka.SeekAbsolute); err != nil {
		return fmt.Errorf("seek to 15: %w", err)
	}
	m, err := conn.ReadMessage(1 << 20)
	if err != nil {
		return fmt.Errorf("read at offset 15: %w", err)
	}
	if m.Offset != 15 || string(m.Value) != "c15" {
		return fmt.Errorf("at offset 15: expected c15, got offset %d value %q", m.Offset, m.Value)
	}
	return nil
}
