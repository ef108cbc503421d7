#!/usr/bin/env bash
# How the host's shmem huge-page policy changes a memfd launch, against the
# warm cache: runs the stigmer that `cargo bench --bench launch` built (run
# that first) 21 times per row under each policy, prints medians, and puts
# the policy back. Needs root: it writes
# /sys/kernel/mm/transparent_hugepage/shmem_enabled, a host-wide setting.
set -euo pipefail

knob=/sys/kernel/mm/transparent_hugepage/shmem_enabled
stigmer=${1:-$(dirname "$0")/../target/bench-launch/release/stigmer}
[[ -x $stigmer ]] || { echo "no $stigmer: run 'cargo bench --bench launch' first" >&2; exit 1; }
[[ -w $knob ]] || { echo "$knob is not writable: run as root" >&2; exit 1; }

was=$(sed 's/.*\[\(.*\)\].*/\1/' "$knob")
trap 'echo "$was" > "$knob"' EXIT
export STIGMER_HOME=$(mktemp -d)
trap 'echo "$was" > "$knob"; rm -rf "$STIGMER_HOME"' EXIT

median_ms() {
    local times=()
    for _ in $(seq 21); do
        local start=$(date +%s%N)
        "$@" > /dev/null
        times+=($(( $(date +%s%N) - start )))
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 11p | awk '{printf "%.1f", $1 / 1e6}'
}

for name in code-60m rand-60m; do
    "$stigmer" --backend cache run "$name" --quiet > /dev/null # fill the cache
done
echo "| shmem_enabled | payload | memfd launch | warm cache launch | cache / memfd |"
echo "|---|---|---|---|---|"
for policy in never within_size; do
    echo "$policy" > "$knob"
    for name in code-60m rand-60m; do
        memfd=$(median_ms "$stigmer" --backend memfd run "$name" --quiet)
        cache=$(median_ms "$stigmer" --backend cache run "$name" --quiet)
        ratio=$(awk "BEGIN {printf \"%.2f\", $cache / $memfd}")
        echo "| $policy | $name | $memfd ms | $cache ms | $ratio |"
    done
done
