#!/usr/bin/env bash
# make package: bastiond_VERSION_ARCH.deb and bastiond-VERSION-1.ARCH.rpm in
# DIST (default dist/) for PKG_ARCHES (default amd64 arm64), built with nfpm
# (go tool nfpm, pinned in go.mod) from packaging/nfpm.yaml. The binaries are
# built as make release builds them (CGO off, -trimpath, no VCS stamp,
# VERSION from git describe); the man pages, completions and the copyright
# file are generated here, from the code and the binaries. The browser
# client must be built first (make package runs make web): without it this
# fails rather than package a daemon that refuses browser sessions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GO=${GO:-go}
DIST=${DIST:-dist}
PKG_ARCHES=${PKG_ARCHES:-amd64 arm64}
PKG_FORMATS=${PKG_FORMATS:-deb rpm}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
PKG_VERSION=${PKG_VERSION:-$(sh packaging/version.sh)}
# Man page dates, file times in the packages: the commit's, not now.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH PKG_VERSION
LDFLAGS="-s -w -X github.com/bastiond/bastiond/internal/version.Version=$VERSION"
MAINTAINER=$(sed -n 's/^maintainer: //p' packaging/nfpm.yaml)

if [ ! -f web/dist/connect.js ]; then
	echo "package: web/dist holds no browser client: run make web first (make package does)" >&2
	exit 1
fi

work=$DIST/pkgroot
rm -rf "$work"
mkdir -p "$work/docs/man/man8"

echo "package: man pages and completions"
"$GO" run -tags gendocs -trimpath -ldflags "$LDFLAGS" ./cmd/bastiond gendocs "$work/docs/man/man8"
"$GO" run -tags gendocs -trimpath -ldflags "$LDFLAGS" ./cmd/bastionctl gendocs "$work/docs"
mv "$work/docs/man1" "$work/docs/man/man1"
gzip -9n "$work"/docs/man/man*/*
# The unit as installed: the daemon in /usr/sbin, the example beside the docs.
sed -e 's#/usr/local/bin/#/usr/sbin/#g' \
	-e 's#^Documentation=file:///etc/bastiond/bastiond.example.yaml#Documentation=man:bastiond(8) file:///usr/share/doc/bastiond/bastiond.example.yaml#' \
	systemd/bastiond.service >"$work/docs/bastiond.service"
{
	echo "bastiond ($PKG_VERSION) unstable; urgency=medium"
	echo
	echo "  * Built from commit $(git rev-parse HEAD) ($VERSION)."
	echo
	echo " -- $MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$work/docs/changelog.gz"

host=$("$GO" env GOARCH)
for arch in $PKG_ARCHES; do
	stage=$work/$arch
	mkdir -p "$stage"
	cp -r "$work/docs/." "$stage/"
	echo "package: bastiond and bastionctl for linux/$arch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o "$stage/" ./cmd/bastiond ./cmd/bastionctl
	if [ "$arch" = "$host" ]; then
		# The daemon's own check: the example configuration grants browser
		# sessions, which a daemon without its client refuses.
		out=$("$stage/bastiond" -check-config -config systemd/bastiond.example.yaml 2>&1) || true
		if [[ $out == *"without its browser client"* ]]; then
			echo "package: $stage/bastiond has no browser client: $out" >&2
			exit 1
		fi
	fi
	# Debian's refers to /usr/share/common-licenses, rpm's carries every text.
	"$GO" build -o "$work/copyright-gen" ./packaging/copyright
	"$work/copyright-gen" -debian -o "$stage/copyright.deb" -web web "$stage/bastiond" "$stage/bastionctl"
	"$work/copyright-gen" -o "$stage/copyright.rpm" -web web "$stage/bastiond" "$stage/bastionctl"
	for format in $PKG_FORMATS; do
		PKG_ARCH=$arch PKG_STAGE=$stage "$GO" tool nfpm package -f packaging/nfpm.yaml -p "$format" -t "$DIST/"
	done
done
