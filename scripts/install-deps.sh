#!/usr/bin/env bash
# Installs the Debian 12 packages transient needs to build, test and benchmark, but only
# those that are missing: on a machine that has them all it only asks dpkg and returns.
set -euo pipefail
packages=(
  g++ cmake ninja-build make pkgconf git   # build (make: the default generator users build with; git: FetchContent)
  libcli11-dev                             # the commands' option tables (tools/ only; header-only)
  libgtest-dev libgmock-dev                # tests
  libbenchmark-dev                         # micro-benchmarks
  libasio-dev                              # the Asio adapter and its tests (standalone Asio)
  liburing-dev                             # the io_uring driver (transient::uring), its tests and benchmark
  libboost-dev                             # the Boost.Asio adapter's tests (1.74 here; libboost1.81-dev conflicts with it)
  man-db                                   # the Debian package test renders the man page
  systemd                                  # systemd-socket-activate: serve's socket activation test
  haproxy                                  # the drill's fleet scenario: a real load balancer (run as a plain process)
  prometheus                               # promtool: checks serve's metrics, the alert rules and their unit tests
  clang clang-format clang-tidy libclang-rt-14-dev  # clang build, formatting, lint, libFuzzer
)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
