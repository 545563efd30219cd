#!/bin/sh
# Prints the package version for the commit checked out, from git as `make
# release` stamps the binaries (git describe --tags): on a tag vX.Y.Z it is
# X.Y.Z; N commits after it, X.Y.(Z+1)~gitYYYYMMDD.HASH, which sorts after
# X.Y.Z and before the next release for dpkg and rpm alike; with no tag at
# all, 0~gitYYYYMMDD.HASH. The date is the commit's, so a commit gives one
# version. Uncommitted changes add +dirty.
set -e
date=$(git log -1 --format=%cd --date=format:%Y%m%d)
hash=$(git rev-parse --short=7 HEAD)
dirty=
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then dirty=+dirty; fi
if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
	base=${tag#v}
	if [ "$(git rev-list -n1 "$tag")" = "$(git rev-parse HEAD)" ]; then
		echo "$base$dirty"
		exit 0
	fi
	major_minor=${base%.*}
	patch=${base##*.}
	case "$patch" in
	*[!0-9]* | '') echo "version.sh: tag $tag is not vX.Y.Z" >&2; exit 1 ;;
	esac
	echo "$major_minor.$((patch + 1))~git$date.$hash$dirty"
else
	echo "0~git$date.$hash$dirty"
fi
