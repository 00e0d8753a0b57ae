#!/usr/bin/env bash
# Installs the Debian packages warren needs to build and test, if any is missing.
# Sourced or run by run.sh and test.sh; does nothing when everything is there.
set -euo pipefail

need=(cmake gcc make pkg-config libyaml-dev libcriterion-dev)
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
