#!/bin/sh
# The container's entrypoint: runs `pgplatform --config FILE "$@"`.
#
# FILE is /etc/pgplatform/pgplatform.toml when one is mounted there. Otherwise it is
# written to /var/lib/pgplatform/run-config.toml from the container defaults below and
# every environment variable PGPLATFORM__<SECTION>__<KEY>=VALUE (double underscores,
# case-insensitive), which sets <key> in [<section>] (PGPLATFORM__POSTGRES__PARAMETERS__
# WORK_MEM=64MB sets work_mem in [postgres.parameters]); PGPLATFORM__DATA_DIR is the
# top-level data_dir. Integers, true/false and [arrays] stay bare (TOML), anything
# else becomes a string.
# `pgplatform-entrypoint --print-config` prints the generated file and exits.
# (PGPLATFORM_BIN and PGPLATFORM_GENERATED_CONFIG let the tests run it outside the image.)
set -eu

MOUNTED=/etc/pgplatform/pgplatform.toml
GENERATED=${PGPLATFORM_GENERATED_CONFIG:-/var/lib/pgplatform/run-config.toml}
BIN=${PGPLATFORM_BIN:-/usr/bin/pgplatform}

# Container defaults: listen on every interface, metrics on their own port.
defaults='data_dir=/var/lib/pgplatform
postgres.listen_addresses=*
pooler.listen_addr=0.0.0.0
api.listen=0.0.0.0:8008
metrics.listen=0.0.0.0:9187
log.format=json'

generate() {
  {
    printf '%s\n' "$defaults"
    env | sed -n 's/^PGPLATFORM__//p' | while IFS='=' read -r name value; do
      key=$(printf '%s' "$name" | tr 'A-Z' 'a-z' | sed 's/__/./g')
      printf '%s=%s\n' "$key" "$value"
    done
  } | awk -F= '
    {
      key = $1; value = substr($0, length(key) + 2)
      if (!(key in seen)) order[n++] = key
      seen[key] = 1; values[key] = value
    }
    function render(v,    out, i, c) {
      if (v ~ /^-?[0-9]+$/ || v == "true" || v == "false" || v ~ /^\[.*\]$/) return v
      out = ""
      for (i = 1; i <= length(v); i++) {
        c = substr(v, i, 1)
        if (c == "\\" || c == "\"") out = out "\\"
        out = out c
      }
      return "\"" out "\""
    }
    END {
      for (i = 0; i < n; i++) {
        key = order[i]; table = key; sub(/\.[^.]*$/, "", table)
        if (table == key) print key " = " render(values[key])
      }
      for (i = 0; i < n; i++) {
        key = order[i]; table = key; sub(/\.[^.]*$/, "", table)
        if (table == key || (table in printed)) continue
        printed[table] = 1
        print ""; print "[" table "]"
        for (j = 0; j < n; j++) {
          other = order[j]; t = other; sub(/\.[^.]*$/, "", t)
          if (t != table) continue
          name = other; sub(/^.*\./, "", name)
          print name " = " render(values[other])
        }
      }
    }'
}

if [ "${1:-}" = "--print-config" ]; then
  generate
  exit 0
fi
if [ -f "$MOUNTED" ]; then
  config=$MOUNTED
else
  generate > "$GENERATED"
  config=$GENERATED
fi
exec "$BIN" --config "$config" "$@"
