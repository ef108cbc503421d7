#!/usr/bin/env bash
# Builds every row of the compatibility matrix (tests/mapped_matrix.rs) into
# OUTDIR, one executable per row, named by the row, with services.toml
# beside them: the folder is a payload folder (STIGMER_PAYLOAD_DIR).
#
#   tests/matrix/build.sh OUTDIR     build every row
#   tests/matrix/build.sh --check    only check the tools; exit 1 naming any missing
#
# Nothing is downloaded: Go builds the standard library only, in GOPATH mode,
# with a private GOCACHE and GOPATH under a temp folder removed on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# The tools, each with the Debian package that has it.
missing=()
command -v gcc >/dev/null || missing+=("gcc (package gcc)")
# -static needs glibc's archives; gcc prints the bare name when it has none.
libc_a=$(gcc -print-file-name=libc.a 2>/dev/null || true)
[ -f "$libc_a" ] || missing+=("libc.a (package libc6-dev)")
command -v musl-gcc >/dev/null || missing+=("musl-gcc (package musl-tools)")
command -v readelf >/dev/null || missing+=("readelf (package binutils)")
command -v go >/dev/null || missing+=("go (package golang-go)")
rustc=${RUSTC:-rustc}
command -v "$rustc" >/dev/null || missing+=("rustc (rustup, or package rustc)")
# A Go service built by Debian, linked against glibc (it has a PT_INTERP).
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats" ] || missing+=("nats-server (package nats-server)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/matrix/build.sh: missing: ${missing[*]}" >&2
  exit 1
fi
if [ "${1:-}" = --check ]; then
  exit 0
fi

out=${1:?usage: tests/matrix/build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- C: one source, six builds -------------------------------------------
c() {
  local row=$1
  shift
  "$@" -O2 -Wall -DROW="\"$row\"" "$here/matrix.c" -o "$out/$row"
}
c c-threads gcc -pthread # the compiler's default (PIE on Debian)
c c-pie gcc -pthread -fPIE -pie
c c-nopie gcc -pthread -fno-PIE -no-pie
c c-static gcc -pthread -static
c c-static-pie gcc -pthread -fPIE -static-pie
c musl-static musl-gcc -static

# --- C whose loader only root may read: a copy of the system's, mode 0111,
# beside the payload folder (not in it). The kernel execs it as anyone; the
# mapped loader, which must read it, cannot as another user ---------------
interp=$(LC_ALL=C readelf -l "$out/c-threads" | sed -n 's/.*program interpreter: \(.*\)]$/\1/p')
xo="$(dirname "$out")/ld-xo.so"
rm -f "$xo"
install -m 0111 "$interp" "$xo"
c c-loader-xo gcc -pthread "-Wl,--dynamic-linker=$xo"

# --- Go: static (no cgo), twice: go-reexec is the row that re-execs itself -
go_build() {
  env -u GOFLAGS GOENV=off GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local \
    GOCACHE="$tmp/gocache" GOPATH="$tmp/gopath" CGO_ENABLED=0 \
    go build -buildvcs=false -trimpath -ldflags "-X main.row=$1" -o "$out/$1" "$here/matrix.go"
}
go_build go-static
go_build go-reexec

# --- Rust: rustc alone, the default target (PIE, dynamic glibc) ----------
(cd "$tmp" && MATRIX_ROW=rust "$rustc" --edition 2021 -O -o "$out/rust" "$here/matrix.rs")

# --- the Debian-built Go service ------------------------------------------
install -m 0755 "$nats" "$out/go-debian"

install -m 0644 "$here/services.toml" "$out/services.toml"
