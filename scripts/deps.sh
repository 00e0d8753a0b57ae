#!/usr/bin/env bash
# Installs the Debian packages warren needs, if any is missing; does nothing when everything
# is there. Without arguments: what building and running needs. With --test: also the real
# clients and the reference broker the test suite drives (pika, amqp-tools, Go's amqp091-go,
# rabbitmq-c for the load generator, RabbitMQ itself for the differential test; kcat,
# librdkafka and its Python binding, kafka-python and Go's Kafka clients).
set -euo pipefail

need=(cmake gcc make pkg-config python3 libyaml-dev libcriterion-dev zlib1g-dev liblua5.4-dev
      libsnappy-dev liblz4-dev libzstd-dev
      lua-cjson-dev)
if [ "${1:-}" = "--test" ]; then
  need+=(python3-pika amqp-tools librabbitmq-dev golang-go golang-github-rabbitmq-amqp091-go-dev
         rabbitmq-server
         kcat python3-confluent-kafka python3-kafka librdkafka-dev
         golang-github-segmentio-kafka-go-dev golang-github-confluentinc-confluent-kafka-go-dev)
fi
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # Debian starts rabbitmq-server on 5672 as it installs it. The tests start their own on free
  # ports, and a stray one would hold warren's default port: keep services from starting
  # during this install (policy-rc.d exit 101), unless the machine already has a policy.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod +x "$policy"
    trap '$sudo_cmd rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
