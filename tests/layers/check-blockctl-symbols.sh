#!/bin/bash
# check-blockctl-symbols.sh BLOCKCTL BLOCKD [size|no-size] - blockctl
# links no server code: none of its symbols belongs to the block layer,
# the NBD server, the monitors or the command handlers, and (with "size",
# the default) it is a fraction of blockd.
set -u
blockctl=$1 blockd=$2 sizes=${3:-size}
server='^(blk_|qcow2_|file_|raw_|null_|nbd_conn|nbd_server|nbd_export|nbd_xport|xport_|monitor_|worker_pool|qmp_dispatch|qmp_execute|qmp_marshal_|qmp_command_marshal|qmp_query_|qmp_blockdev_|qmp_block_|qmp_nbd_|qapi_event_send_|qapi_introspect_json|daemon_)'
# ... except the client half of nbd/ (nbd/client.h), shared with blockctl,
# whose result types are named NbdExport*.
shared='^(nbd_export_info_clear|nbd_export_list_clear|nbd_export_list_print)$'
bad=$(nm --defined-only "$blockctl" | awk '{print $3}' | grep -E "$server" |
      grep -vE "$shared")
# code + read-only data + data, as size(1) adds them up
text() { size "$1" | awk 'NR == 2 {print $4}'; }
ctl=$(text "$blockctl") srv=$(text "$blockd")
pass=0 fail=0
if [ -n "$bad" ]; then
  echo "blockctl contains server symbols:"; echo "$bad" | head -20
  fail=$((fail + 1))
else
  echo "ok: no server symbol in blockctl"; pass=$((pass + 1))
fi
# The server symbols are found at all in blockd (the pattern is not dead).
if nm --defined-only "$blockd" | awk '{print $3}' | grep -qE "$server"; then
  pass=$((pass + 1))
else
  echo "the pattern matches nothing in blockd either"; fail=$((fail + 1))
fi
if [ "$sizes" != size ]; then
  echo "sizes not compared: a sanitizer build (its runtime is most of both)"
elif [ $((ctl * 5)) -lt $((srv * 2)) ]; then
  echo "ok: blockctl $ctl bytes, blockd $srv (under 40%)"
  pass=$((pass + 1))
else
  echo "blockctl's $ctl bytes are not under 40% of blockd's $srv"
  fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
