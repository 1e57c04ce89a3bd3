#!/usr/bin/env bash
# Cross-cluster benchmark (not part of the tests): builds release binaries and prints
# direct-TCP vs through-Ferry latency (p50/p99) and single-stream throughput, with ratios.
# ROUNDS=<round trips> MIB=<MiB for throughput> tests/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q --bin ferry --bin ferry-bench
exec target/release/ferry-bench
