#!/usr/bin/env bash
# Fuzz what Herald reads from outside (docs/reliability.md): every webhook normalizer, signature and token
# checks, template compiling and rendering, the Telegram update reader. Installs cargo-fuzz once, seeds each
# target's corpus from tests/fixtures, the built-in templates and Telegram's update shapes, then runs each target
# for FUZZ_SECONDS (default 60). A finding is written to fuzz/artifacts/<target>/ and stops the run with the
# command that replays it.
#
# cargo-fuzz builds with rustc's unstable coverage flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them
# (no nightly toolchain can be installed here). No sanitizer: Herald has no unsafe code of its own, and
# without one libFuzzer runs several times as many inputs per second; overflow checks stay on.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1

say() { printf 'fuzz: %s\n' "$*" >&2; }

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION (once)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cargo run --quiet --release -p herald-fuzz --bin seed-corpus -- tests/fixtures fuzz/corpus

targets=${FUZZ_TARGETS:-normalize authenticate template telegram_update}
for target in $targets; do
  say "$target: ${SECONDS_PER_TARGET}s"
  cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=262144 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>&1 | tee "target/fuzz-$target.log" | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)' || true
  if grep -qE 'ERROR: libFuzzer|panicked at|deadly signal' "target/fuzz-$target.log"; then
    say "$target found a failing input; see target/fuzz-$target.log and fuzz/artifacts/$target/"
    exit 1
  fi
done
say "nothing found"
