#!/usr/bin/env bash
# The OHIF viewer's built dist/, from the npm package @ohif/app at a pinned version and
# integrity, into var/ohif/<version>/dist (or $1). Cached: nothing is fetched when it is
# there. Nothing is fetched at run time; the viewer loads no asset from a CDN.
set -euo pipefail
VERSION=3.13.2
INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
dest="${1:-$(dirname "$0")/../../var/ohif/$VERSION}"
if [ -f "$dest/dist/index.html" ]; then
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
got="$(cd "$work" && npm pack "@ohif/app@$VERSION" --json --silent \
       | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["integrity"])')"
if [ "$got" != "$INTEGRITY" ]; then
    echo "@ohif/app@$VERSION has integrity $got, not the pinned $INTEGRITY" >&2
    exit 1
fi
mkdir -p "$dest"
tar -xzf "$work"/ohif-app-"$VERSION".tgz -C "$work"
rm -rf "$dest/dist"
mv "$work/package/dist" "$dest/dist"
