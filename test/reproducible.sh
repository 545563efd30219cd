#!/usr/bin/env bash
# Checks that release builds are reproducible (make release-check): builds
# bastionctl for each GOOS/GOARCH given (make release-bin) in this tree, then
# again from a copy of the tree at another path with an empty build cache, and
# compares the SHA-256 sums. Any build path, cache state or VCS stamp that
# leaked into the binary shows as a difference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}
VERSION=${VERSION:?VERSION must be set (make release-check sets it from git describe)}
targets=${*:-linux/amd64}

tmp=$(mktemp -d /tmp/bastiond-reproducible-XXXXXX)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

build() { # dir dist [env...]
	local dir=$1 dist=$2
	shift 2
	env "$@" make --no-print-directory -C "$dir" release-bin GO="$GO" VERSION="$VERSION" DIST="$dist" \
		RELEASE_TARGETS="$targets" DAEMON_TARGETS=
}

build . "$tmp/first"

# The copy: what git tracks (as in the working tree) and the built web
# client, which bastionctl may embed; at a different path, so that a build
# path that -trimpath missed would differ.
mkdir "$tmp/copy"
git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	tar --null -T - -cf - | tar -xf - -C "$tmp/copy"
cp -r web/dist/. "$tmp/copy/web/dist/"
build "$tmp/copy" "$tmp/second" GOCACHE="$tmp/cache"

cat "$tmp/first/SHA256SUMS"
if ! cmp -s "$tmp/first/SHA256SUMS" "$tmp/second/SHA256SUMS"; then
	echo "release-check: the second build differs:" >&2
	cat "$tmp/second/SHA256SUMS" >&2
	exit 1
fi
echo "release-check: reproducible ($targets, built twice, the second time elsewhere with an empty build cache)"
