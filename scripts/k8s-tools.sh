#!/usr/bin/env bash
# The tools that render and check deploy/k8s/ offline: kustomize and kubeconform, each built once
# from the Go module proxy into the cache that FerretDB's build uses (scripts/services.sh), named by
# version so that a version change here builds anew. Idempotent; `make test` runs it.
# Usage: scripts/k8s-tools.sh [install|kustomize|kubeconform]
# (kustomize, kubeconform: build that tool if need be and print its path)
set -euo pipefail

cd "$(dirname "$0")/.."
# kustomize v5.8.3 and later need a newer Go than 1.26; v5.8.2 renders everything deploy/k8s uses.
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION="v5.8.2"
KUBECONFORM_MODULE="github.com/yannh/kubeconform/cmd/kubeconform"
KUBECONFORM_VERSION="v0.8.0"
TOOLS_CACHE="${ORDERFLOW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orderflow}"

say() { printf 'k8s-tools: %s\n' "$*" >&2; }
fail() { printf 'k8s-tools: error: %s\n' "$*" >&2; exit 1; }

binary() {  # name version
    echo "$TOOLS_CACHE/$1-$2"
}

build() {  # name module version
    local target work started
    target="$(binary "$1" "$3")"
    [ -x "$target" ] && return 0
    command -v go >/dev/null || fail "$1 must be built and Go is not installed"
    say "building $1 $3 from the Go module proxy (once; it is kept in $TOOLS_CACHE)"
    started=$SECONDS
    work="$(mktemp -d)"
    # GOFLAGS from the caller (say -mod=vendor) must not reach a build of another module.
    GOBIN="$work" GOFLAGS=-buildvcs=false go install "$2@$3" || { rm -rf "$work"; fail "could not build $1 $3"; }
    mkdir -p "$TOOLS_CACHE"
    # A rename within the cache: a build running at the same time never sees half a binary.
    cp "$work/$1" "$target.tmp.$$"
    mv "$target.tmp.$$" "$target"
    rm -rf "$work"
    say "built $1 $3 in $((SECONDS - started)) s"
}

kustomize() { build kustomize "$KUSTOMIZE_MODULE" "$KUSTOMIZE_VERSION"; }
kubeconform() { build kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_VERSION"; }

case "${1:-install}" in
    install) kustomize; kubeconform ;;
    kustomize) kustomize; binary kustomize "$KUSTOMIZE_VERSION" ;;
    kubeconform) kubeconform; binary kubeconform "$KUBECONFORM_VERSION" ;;
    *) fail "usage: $0 [install|kustomize|kubeconform]" ;;
esac
