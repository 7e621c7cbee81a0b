#!/bin/sh
# Orthanc (Debian's binary) on /etc/orthanc/orthanc.json plus what the container
# owns: plugins, database folder, users (ORTHANC__REGISTERED_USERS, a JSON object).
set -eu
conf=$(mktemp -d)
cp /etc/orthanc/orthanc.json "$conf/orthanc.json"
users=${ORTHANC__REGISTERED_USERS:-}
[ -n "$users" ] || users='{}'
cat > "$conf/container.json" <<JSON
{
  "Plugins": ["/usr/share/orthanc/plugins"],
  "StorageDirectory": "/var/lib/orthanc/db",
  "IndexDirectory": "/var/lib/orthanc/db",
  "RegisteredUsers": $users
}
JSON
exec Orthanc "$@" "$conf"
