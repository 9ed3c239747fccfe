#!/usr/bin/env bash
# Re-vendors Swagger UI from the npm package swagger-ui-dist, the source of
# the files beside this script. They are committed, gzipped, because a
# build must not download anything; the stages serve them at /docs.
#   core/assets/swagger-ui/vendor.sh [VERSION]
set -euo pipefail
version="${1:-5.35.0}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf swagger-ui-dist-*.tgz)
for f in swagger-ui-bundle.js swagger-ui.css; do
  gzip -9 -n -c "$work/package/$f" > "$here/$f.gz"
done
cp "$work/package/LICENSE" "$work/package/NOTICE" "$here/"
echo "$version" > "$here/VERSION"
echo "vendored swagger-ui-dist $version into $here"
