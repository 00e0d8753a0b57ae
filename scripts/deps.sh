#!/usr/bin/env bash
# Installs the Debian packages warren needs, if any is missing; does nothing when everything
# is there. Without arguments: what building and running needs. With --test: also the real
# clients and the reference broker the test suite drives (pika, amqp-tools, Go's amqp091-go,
# rabbitmq-c for the load generator, RabbitMQ itself for the differential test).
set -euo pipefail

need=(cmake gcc make pkg-config python3 libyaml-dev libcriterion-dev)
if [ "${1:-}" = "--test" ]; then
  need+=(python3-pika amqp-tools librabbitmq-dev golang-go golang-github-rabbitmq-amqp091-go-dev
         rabbitmq-server)
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
  # rabbitmq-server's package scripts try to start it; policy-rc.d-less containers just warn.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
