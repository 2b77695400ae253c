#!/usr/bin/env bash
# `make release`: stripped release binaries of gpu-vm-bootstrap and vmctl, both .debs, and a
# SHA256SUMS over them, in dist/ (or $OUT). The binaries' --version names the commit
# (`-dirty` when tracked files differ from it). See packaging/README.md for why there is no
# static/musl build.
#
# Environment: OUT=DIR (default dist/), PROFILE (default release; `dev` only to test this script),
# CARGO_TARGET_DIR is honoured.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/dist}
PROFILE=${PROFILE:-release}
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BINS=(gpu-vm-bootstrap vmctl)

# Computed here rather than left to build.rs, whose answer is cached until HEAD moves: a
# release must name exactly the tree it was built from.
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
  [ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit-dirty"
else
  commit=unknown
fi
export GVB_GIT_COMMIT=$commit
case $commit in *-dirty | unknown)
  echo "warning: building a release from ${commit/unknown/a tree outside git}; --version will say ($commit)" >&2
  ;;
esac

"$CARGO" build --profile "$PROFILE" -p gpu-vm-bootstrap -p vmctl-cli --bins
case $PROFILE in dev | test) BIN_DIR=$TARGET_DIR/debug ;; *) BIN_DIR=$TARGET_DIR/$PROFILE ;; esac

rm -rf "$OUT"
mkdir -p "$OUT"
for b in "${BINS[@]}"; do
  install -m 0755 "$BIN_DIR/$b" "$OUT/$b"
  # [profile.release] strip = true already strips; this also covers other profiles.
  strip --strip-all "$OUT/$b"
  v=$("$OUT/$b" --version)
  [[ $v == *"($commit)" ]] || {
    echo "error: $OUT/$b --version says '$v', expected commit $commit" >&2
    echo "help: GVB_GIT_COMMIT did not reach build.rs; run 'cargo clean -p $b' and retry" >&2
    exit 1
  }
done

export OUT
BIN_DIR=$OUT packaging/build-debs.sh >/dev/null

cd "$OUT"
files=("${BINS[@]}" *.deb)
sha256sum "${files[@]}" >SHA256SUMS
sha256sum --check --quiet SHA256SUMS
echo "release $commit in $OUT:"
stat -c '  %10s  %n' "${files[@]}" SHA256SUMS
echo "verify with: (cd $OUT && sha256sum -c SHA256SUMS)"
