#!/usr/bin/env bash
# Installs what building and testing deflect needs on a fresh Debian machine (idempotent).
# - libclang (bindgen for the rocksdb crate)
# - perl and make (OpenSSL, built from source into librdkafka: rdkafka's `ssl-vendored`)
# - the openssl command (tests/it/tls.rs makes certificates and runs `openssl s_server`)
# - prometheus and promtool (tests that prove dashboards and rules; not needed to build)
set -euo pipefail

need=()
# clang-sys looks for libclang.so or libclang-*.so; libclang-cpp.so (present on some images) is not it
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || compgen -G '/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*' >/dev/null || need+=(libclang-dev)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v perl >/dev/null 2>&1 || need+=(perl)
command -v make >/dev/null 2>&1 || need+=(make)
command -v openssl >/dev/null 2>&1 || need+=(openssl)   # the TLS test's certificates and server
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found (install Rust with rustup)"; exit 1; }
