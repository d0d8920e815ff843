#!/usr/bin/env bash
# Install the Debian packages that the tests and the demo use, only when something is missing.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v festival >/dev/null || need+=(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)
command -v flite >/dev/null || need+=(flite)
test -x /usr/sbin/sshd || need+=(openssh-server)
command -v sox >/dev/null || need+=(sox)
test -e /usr/include/portaudio.h || need+=(portaudio19-dev)
ldconfig -p 2>/dev/null | grep -q libsndfile || need+=(libsndfile1)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
