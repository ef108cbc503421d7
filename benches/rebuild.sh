#!/usr/bin/env bash
# How long a rebuild of the `stigmer` binary takes after a one-line edit of
# services.toml, and after one payload changed, for two commits side by side.
#
#   benches/rebuild.sh BEFORE AFTER [cargo build flags...]
#   e.g. benches/rebuild.sh 0aa8e17 HEAD --release --features compress
#
# The payload set is real binaries from this machine (about 180 MB: node,
# gcc's lto-dump, cargo, rustdoc, gdb), copied to a scratch folder with a
# services.toml; each commit is checked out in a worktree of its own with its
# own target folder, built once, then timed: the edit is made, then BEFORE
# and AFTER are built one after the other, so both see the same machine load.
# Results: benches/README.md.
set -euo pipefail
before=$(git rev-parse "$1")
after=$(git rev-parse "$2")
shift 2
work=${STIGMER_REBUILD_WORK:-$(git rev-parse --show-toplevel)/target/rebuild-bench}
mkdir -p "$work"
payloads=$work/payloads
if [ ! -d "$payloads" ]; then
  mkdir -p "$payloads"
  for bin in node x86_64-linux-gnu-lto-dump-12 cargo rustdoc gdb; do
    cp "$(command -v "$bin")" "$payloads/"
  done
  printf '[services.node]\npayload = "node"\nargs = ["-e", "setInterval(() => {}, 1000)"]\n' \
    > "$payloads/services.toml"
fi
export STIGMER_PAYLOAD_DIR=$payloads

for rev in "$before" "$after"; do
  [ -d "$work/$rev" ] || git worktree add --detach "$work/$rev" "$rev" >/dev/null
done

build() { # REV -> seconds
  local start end
  start=$(date +%s.%N)
  (cd "$work/$1" && CARGO_TARGET_DIR="$work/target-$1" cargo build -q --bin stigmer "${@:2}") \
    >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

build "$before" "$@" >/dev/null
build "$after" "$@" >/dev/null
echo "# edit $(date +%s%N)" >> "$payloads/services.toml"
echo "manifest edit:   before $(build "$before" "$@") s, after $(build "$after" "$@") s"
# One payload changes (gdb and perf alternate, both real binaries).
if cmp -s "$payloads/gdb" "$(command -v gdb)"; then
  cp "$(command -v perf)" "$payloads/gdb"
else
  cp "$(command -v gdb)" "$payloads/gdb"
fi
echo "payload change:  before $(build "$before" "$@") s, after $(build "$after" "$@") s"
