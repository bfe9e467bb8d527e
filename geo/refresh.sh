#!/usr/bin/env bash
# Refresh the embedded country database (geo-whois-asn-country.mmdb) from the
# npm package @ip-location-db/geo-whois-asn-country-mmdb.
#
# Usage: geo/refresh.sh [VERSION]        (default: latest)
# Env:   DEST=path/to/file.mmdb          (default: geo/geo-whois-asn-country.mmdb beside this script)
#        FORCE=1                         accept a database older than the current one
#
# Needs: npm, tar, python3 (standard library only).
set -euo pipefail

PKG="@ip-location-db/geo-whois-asn-country-mmdb"
FILE="geo-whois-asn-country.mmdb"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="${DEST:-$HERE/$FILE}"
VERSION="${1:-latest}"

for tool in npm tar python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "refresh.sh: '$tool' is required" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Print "build_epoch<TAB>database_type<TAB>ip_version<TAB>node_count" of an mmdb,
# or fail if it is not a structurally valid MaxMind DB. Pure standard library:
# finds the last metadata marker in the final 128 KiB and decodes the metadata map.
mmdb_meta() {
  python3 - "$1" <<'PY'
import struct, sys
MARK = b"\xab\xcd\xefMaxMind.com"
path = sys.argv[1]
with open(path, "rb") as f:
    f.seek(0, 2); size = f.tell()
    f.seek(max(0, size - 128 * 1024)); tail = f.read()
i = tail.rfind(MARK)
if i < 0:
    sys.exit(f"{path}: no MaxMind metadata marker")
buf, pos = tail[i + len(MARK):], 0
def dec():
    global pos
    ctrl = buf[pos]; pos += 1
    t = ctrl >> 5
    if t == 0:  # extended type
        t = buf[pos] + 7; pos += 1
    n = ctrl & 0x1F
    if n >= 29:
        k = n - 28
        v = int.from_bytes(buf[pos:pos + k], "big"); pos += k
        n = (29, 285, 65821)[k - 1] + v
    if t == 2:
        s = buf[pos:pos + n].decode(); pos += n; return s
    if t in (5, 6, 9, 10):
        v = int.from_bytes(buf[pos:pos + n], "big"); pos += n; return v
    if t == 8:
        v = int.from_bytes(buf[pos:pos + n], "big", signed=n == 4); pos += n; return v
    if t == 3:
        v = struct.unpack(">d", buf[pos:pos + 8])[0]; pos += 8; return v
    if t == 15:
        v = struct.unpack(">f", buf[pos:pos + 4])[0]; pos += 4; return v
    if t == 4:
        v = buf[pos:pos + n]; pos += n; return v
    if t == 14:
        return bool(n)
    if t == 7:
        return {dec(): dec() for _ in range(n)}
    if t == 11:
        return [dec() for _ in range(n)]
    sys.exit(f"{path}: unexpected type {t} in metadata")
m = dec()
need = ("binary_format_major_version", "build_epoch", "database_type", "ip_version", "node_count", "record_size")
missing = [k for k in need if k not in m]
if missing:
    sys.exit(f"{path}: metadata lacks {missing}")
if m["binary_format_major_version"] != 2 or m["record_size"] not in (24, 28, 32):
    sys.exit(f"{path}: unsupported format {m['binary_format_major_version']}/{m['record_size']}")
tree = m["node_count"] * m["record_size"] * 2 // 8
if size < tree + 16:
    sys.exit(f"{path}: file shorter than its search tree")
print(f"{m['build_epoch']}\t{m['database_type']}\t{m['ip_version']}\t{m['node_count']}")
PY
}

iso() { python3 -c 'import datetime,sys; print(datetime.datetime.fromtimestamp(int(sys.argv[1]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))' "$1"; }

echo "fetching $PKG@$VERSION ..."
( cd "$TMP" && npm pack --silent "$PKG@$VERSION" >/dev/null )
TGZ="$(ls "$TMP"/*.tgz)"
tar -xzf "$TGZ" -C "$TMP"
NEW="$TMP/package/$FILE"
[[ -f "$NEW" ]] || { echo "refresh.sh: package has no $FILE" >&2; exit 1; }
NEW_VERSION="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$TMP/package/package.json")"

IFS=$'\t' read -r new_epoch new_type new_ipv new_nodes < <(mmdb_meta "$NEW")
[[ "$new_ipv" == 6 ]] || { echo "refresh.sh: expected ip_version 6 (IPv4+IPv6), got $new_ipv" >&2; exit 1; }
[[ "$new_type" == country* ]] || { echo "refresh.sh: unexpected database_type '$new_type'" >&2; exit 1; }
# Optional deeper check when the maxminddb python module is installed: a lookup must work.
if python3 -c 'import maxminddb' 2>/dev/null; then
  python3 -c 'import maxminddb,sys; r=maxminddb.open_database(sys.argv[1]); assert r.get("8.8.8.8") and r.get("2001:4860:4860::8888"), "lookup failed"' "$NEW"
fi

if [[ -f "$DEST" ]]; then
  IFS=$'\t' read -r old_epoch _ _ _ < <(mmdb_meta "$DEST") || old_epoch=0
else
  old_epoch=0
fi
if (( new_epoch < old_epoch )) && [[ "${FORCE:-0}" != 1 ]]; then
  echo "refresh.sh: downloaded build ($(iso "$new_epoch")) is older than current ($(iso "$old_epoch")); set FORCE=1 to accept" >&2
  exit 1
fi

# Atomic replace: write beside the destination (same filesystem), then rename.
cp "$NEW" "$DEST.tmp.$$"
chmod 0644 "$DEST.tmp.$$"
mv -f "$DEST.tmp.$$" "$DEST"
if [[ -f "$TMP/package/NRO_LICENSE" ]]; then
  cp "$TMP/package/NRO_LICENSE" "$(dirname "$DEST")/LICENSE.tmp.$$"
  mv -f "$(dirname "$DEST")/LICENSE.tmp.$$" "$(dirname "$DEST")/LICENSE"
fi

if (( old_epoch > 0 )); then echo "old build: $(iso "$old_epoch") (epoch $old_epoch)"; else echo "old build: (none)"; fi
echo "new build: $(iso "$new_epoch") (epoch $new_epoch)  package $PKG@$NEW_VERSION  type=$new_type nodes=$new_nodes size=$(stat -c %s "$DEST")"
echo "Remember to update the version/date in geo/README.md."
