#!/usr/bin/env bash
# A bounded run of every fuzz target (what CI does after the tests; see
# docs/testing.md): build them once, then fuzz each for FUZZ_SECONDS
# (default 20) from its committed corpus, with its dictionary. A crash, a
# panic or an input slower than 10 s fails the run, and the input that did
# it is printed (CI's clone is thrown away, artifacts with it).
#
# New inputs go to a scratch copy, never into fuzz/corpus: growing the
# committed corpus is a deliberate step (`cargo fuzz cmin`, docs/testing.md).
#
# Outside CI (CI != true) a missing cargo-fuzz skips the run with a reason;
# under CI it is installed, and a failure to install fails the run.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-20}
targets=(zone_line zone_list events config api_body)

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  if [ "${CI:-}" = true ]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
  else
    echo "fuzz: skipped: cargo-fuzz $CARGO_FUZZ_VERSION is not installed" \
      "(cargo install cargo-fuzz --locked --version $CARGO_FUZZ_VERSION; CI installs it)"
    exit 0
  fi
fi

# The versions fuzz/Cargo.lock pins, or a clear failure: cargo fuzz has no
# --locked of its own.
if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
  echo "fuzz: fuzz/Cargo.lock is out of date with the Cargo.toml files;" \
    "run (cd fuzz && cargo update --workspace) and commit fuzz/Cargo.lock" >&2
  exit 1
fi

# libFuzzer's instrumentation needs -Z flags, which the stable toolchain
# takes only with RUSTC_BOOTSTRAP. No AddressSanitizer: Amon forbids unsafe
# code, what we look for is panics and overflows (debug assertions are on),
# and it would make the build and every run slower (docs/testing.md has the
# figures). Sixteen codegen units: a much shorter build for slightly slower
# fuzzing.
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --codegen-units 16)

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  dict=dict/json.dict
  [ "$target" = config ] && dict=dict/config.dict
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  touch "$scratch/$target.start"
  if cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -dict="$dict" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $target: ${runs:-?} inputs in $seconds s, no crash"
  else
    failed+=("$target")
    echo "fuzz: $target FAILED:" >&2
    # The panic (or libFuzzer's error) first, then the end of the log
    # without the progress lines and the backtrace's source locations.
    grep -E -A2 'panicked at|ERROR: libFuzzer' "$log" >&2 || true
    grep -v -E '^#[0-9]|^ +at ' "$log" | tail -30 >&2
    find "artifacts/$target" -type f -newer "$scratch/$target.start" 2>/dev/null | while read -r artifact; do
      echo "fuzz: $target: input $artifact (base64): $(base64 -w0 "$artifact")" >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" \
    "(reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> <input>)" >&2
  echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, $seconds s each, no crash ($(($(date +%s) - start)) s in all)"
echo "fuzz: ${#targets[@]} passed, 0 failed"
