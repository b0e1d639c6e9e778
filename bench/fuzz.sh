#!/usr/bin/env bash
# Coverage-guided fuzzing of Meridian's network parsers on the stable toolchain
# (docs/decisions.md §18). Builds every target in fuzz/ as a libFuzzer binary with
# plain `cargo build --release` and the instrumentation flags cargo-fuzz passes
# (no nightly, no cargo-fuzz), runs each on a scratch copy of its seed corpus
# (fuzz/corpus/<target>; fuzz/dict/<target>.dict too, where there is one), and
# prints one line per target: executions, seconds, crashes.
#
#   FUZZ_SECONDS=60                 run time per target (libFuzzer -max_total_time)
#   FUZZ_TARGETS="turn_gate sdp"    which targets (default: all of fuzz/fuzz_targets)
#   FUZZ_RESUME=1                   keep growing fuzz/scratch/<target> from last run
#   FUZZ_ARGS="-jobs=2"             extra libFuzzer flags, for every target
#   FUZZ_PROFILE=smoke              cargo profile (default release; smoke builds
#                                   faster and runs slower, for CI's few seconds)
#   CARGO_TARGET_DIR                default fuzz/target (never the workspace's)
#
# Needs: the stable Rust toolchain, a C++ compiler (libfuzzer-sys builds libFuzzer
# with the cc crate), and crates.io or a warm cargo cache.
# Exit status: 0 when every target built and ran without a crash, 1 otherwise.
# Crash inputs land in fuzz/artifacts/<target>/; reproduce one with
#   fuzz/target/<host>/release/<target> fuzz/artifacts/<target>/crash-…
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz="$root/fuzz"
seconds=${FUZZ_SECONDS:-60}
all=$(cd "$fuzz/fuzz_targets" && ls -1 ./*.rs | sed 's|^\./||; s|\.rs$||' | tr '\n' ' ')
targets=${FUZZ_TARGETS:-$all}
host=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$fuzz/target}
profile=${FUZZ_PROFILE:-release}

# What cargo-fuzz passes with `--sanitizer none` (sancov with inline 8-bit
# counters, PC table and comparison tracing; `--cfg fuzzing` for the harness
# modules), plus debug assertions and overflow checks so that arithmetic on wire
# values panics where it would wrap in a release build. `--target` keeps the flags
# off build scripts and proc macros, which would not link against libFuzzer.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks ${RUSTFLAGS:-}"

# Per-target libFuzzer limits: the largest input worth trying (a UDP datagram the
# server reads is at most 1500 bytes, plus the harness's mode byte) and a per-input
# timeout that no legitimate input comes near.
options() {
    case "$1" in
        turn_gate | channel_data) echo "-max_len=1502" ;;
        turn_stream) echo "-max_len=8192" ;;
        client_ip) echo "-max_len=2048" ;;
        sdp | signal_frame) echo "-max_len=32768" ;;
        *) echo "-max_len=4096" ;;
    esac
}

failed=0
built=()
for t in $targets; do
    if [ ! -f "$fuzz/fuzz_targets/$t.rs" ]; then
        echo "no such target: $t (have: $all)" >&2
        failed=1
        continue
    fi
    echo "== building $t" >&2
    if cargo build --profile "$profile" --manifest-path "$fuzz/Cargo.toml" --target "$host" \
        --target-dir "$target_dir" --bin "$t" >&2; then
        built+=("$t")
    else
        printf '%-14s build FAILED\n' "$t"
        failed=1
    fi
done

printf '%-14s %14s %8s  %s\n' target executions seconds crashes
for t in "${built[@]}"; do
    bin="$target_dir/$host/$profile/$t"
    scratch="$fuzz/scratch/$t"
    artifacts="$fuzz/artifacts/$t"
    log="$fuzz/scratch/$t.log"
    if [ "${FUZZ_RESUME:-0}" != 1 ]; then
        rm -rf "$scratch"
    fi
    mkdir -p "$scratch" "$artifacts"
    if [ -d "$fuzz/corpus/$t" ]; then
        cp -r "$fuzz/corpus/$t/." "$scratch/"
    fi
    before=$(ls -1 "$artifacts")
    start=$(date +%s.%N)
    dict=()
    if [ -f "$fuzz/dict/$t.dict" ]; then
        dict=(-dict="$fuzz/dict/$t.dict")
    fi
    # shellcheck disable=SC2046,SC2086 # word splitting of the option lists is meant
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" $(options "$t") "${dict[@]}" ${FUZZ_ARGS:-} "$scratch" >"$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    new=$(comm -13 <(echo "$before") <(ls -1 "$artifacts") | sed "s|^|$artifacts/|" | tr '\n' ' ')
    if [ -n "$new" ]; then
        crashes="$new"
        failed=1
    elif [ "$rc" != 0 ]; then
        crashes="libFuzzer exited $rc, no artifact (see $log)"
        failed=1
    else
        crashes=0
    fi
    printf '%-14s %14s %8s  %s\n' "$t" "${execs:-?}" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')" "$crashes"
done
exit "$failed"
