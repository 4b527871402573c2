# kernel-nbd.sh - the kernel NBD scenario, run by the VM's init (busybox
# sh) for tests/integration/test-kernel-nbd.py.  $S is the host's
# directory (9p, same path): images and patterns are there, and the host
# checks the images after the VM powers off.  Each check prints
#   RESULT <name> ok
#   RESULT <name> FAIL <why>
# on the console; the host test asserts on those lines.

S=@SHARE@
mount_share "$S"
cd /tmp

result() { echo "RESULT $1 $2"; }
ok() { result "$1" ok; }
fail() { result "$1" "FAIL $2"; }
# check NAME COMMAND...: ok when COMMAND succeeds
check() {
    n=$1; shift
    if out=$("$@" 2>&1); then ok "$n"; else fail "$n" "$(echo $out | head -c 300)"; fi
}
now() { cut -d' ' -f1 /proc/uptime; }

Q=/tmp/qmp.sock
q() { blockctl -s $Q "$@"; }

# wait_gone N: until /sys/block/nbdN has no pid (unbound), 60 s
wait_gone() {
    i=0
    while [ -e /sys/block/nbd$1/pid ]; do
        i=$((i + 1)); [ $i -gt 600 ] && return 1
        sleep 0.1
    done
    return 0
}
# wait_file PATH: until it exists, 30 s
wait_file() {
    i=0
    while [ ! -e "$1" ]; do
        i=$((i + 1)); [ $i -gt 300 ] && return 1
        sleep 0.1
    done
    return 0
}

grep -q nbd /proc/modules && ok module-loaded || fail module-loaded "no nbd"

dd if=/dev/urandom of=/tmp/trim.img bs=1M count=4 2>/dev/null
# --daemonize points stderr at /dev/null once the sockets listen, as
# qemu-storage-daemon does, so a sanitizer build's report at exit goes
# to a file of its own (log_path, /tmp/blockd.san.PID).
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=/tmp/blockd.san" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=/tmp/blockd.san" \
blockd --qmp unix:$Q \
    --blockdev driver=file,node-name=f0,filename=$S/raw.img \
    --blockdev driver=raw,node-name=r0,file=f0 \
    --nbd-server addr.type=unix,addr.path=/tmp/nbd.sock \
    --export type=nbd,id=e0,node-name=r0,writable=on \
    --blockdev driver=file,node-name=f1,filename=$S/part.img \
    --blockdev driver=raw,node-name=r1,file=f1 \
    --export type=nbd,id=e1,node-name=r1,writable=on \
    --blockdev driver=file,node-name=f2,filename=$S/top.qcow2 \
    --blockdev driver=qcow2,node-name=q2,file=f2 \
    --export type=nbd,id=e2,node-name=q2,writable=on \
    --export type=nbd,id=e3,node-name=r0,name=hard \
    --blockdev driver=file,node-name=f4,filename=/tmp/trim.img,discard=unmap \
    --export type=nbd,id=e4,node-name=f4,writable=on \
    --pidfile /tmp/blockd.pid --daemonize 2>/tmp/blockd.err
check blockd-started test -S $Q
BPID=$(cat /tmp/blockd.pid)
blockctl -s $Q --events >/tmp/events.txt 2>&1 &
EVPID=$!

# ---- errors that need a kernel ------------------------------------------
out=$(q nbd-device-connect device=/dev/nbd999 export=e0 2>&1) &&
    fail err-missing-device "connected: $out" ||
    { echo "$out" | grep -q "does not exist" && ok err-missing-device ||
      fail err-missing-device "$out"; }
out=$(q nbd-device-connect device=/dev/nbd0 export=nope 2>&1) &&
    fail err-unknown-export "connected: $out" ||
    { echo "$out" | grep -q "not found" && ok err-unknown-export ||
      fail err-unknown-export "$out"; }
out=$(q nbd-device-connect device=/dev/sda export=e0 2>&1) &&
    fail err-not-nbd "connected: $out" ||
    { echo "$out" | grep -q "not an NBD device" && ok err-not-nbd ||
      fail err-not-nbd "$out"; }

# ---- raw image: size, patterns, direct I/O --------------------------------
check connect-raw q nbd-device-connect device=/dev/nbd0 export=e0
check sysfs-size test "$(cat /sys/block/nbd0/size)" = 131072
# qemu-nbd -c's 512, not the netlink interface's own default (1024)
check block-size-default test "$(cat /sys/block/nbd0/queue/logical_block_size)" = 512
out=$(q nbd-device-connect device=/dev/nbd0 export=e1 2>&1) &&
    fail err-busy "connected twice: $out" ||
    { echo "$out" | grep -q "busy" && ok err-busy || fail err-busy "$out"; }
check write-pattern dd if=$S/pat1.bin of=/dev/nbd0 bs=1M seek=1 conv=fsync
check write-direct dd if=$S/pat2.bin of=/dev/nbd0 bs=1M seek=4 oflag=direct
echo 3 > /proc/sys/vm/drop_caches
check read-pattern sh -c "dd if=/dev/nbd0 bs=1M skip=1 count=1 2>/dev/null | cmp - $S/pat1.bin"
check read-direct sh -c "dd if=/dev/nbd0 bs=1M skip=4 count=1 iflag=direct 2>/dev/null | cmp - $S/pat2.bin"
# this export offers no trim (discard=ignore): the kernel has none
check flags-no-trim test "$(cat /sys/block/nbd0/queue/discard_max_bytes)" = 0
out=$(q query-nbd-devices)
echo "$out" | grep -q '"device": *"/dev/nbd0"' && ok query-devices ||
    fail query-devices "$out"
out=$(q block-export-del id=e0 2>&1) && fail export-del-safe "deleted: $out" ||
    { echo "$out" | grep -q "bound to /dev/nbd0" && ok export-del-safe ||
      fail export-del-safe "$out"; }
check disconnect-raw q nbd-device-disconnect device=/dev/nbd0
check disconnect-raw-gone wait_gone 0

# trim offered by the export (a tmpfs file, discard=unmap) is passed on
check connect-trim q nbd-device-connect device=/dev/nbd11 export=e4
check flags-trim test "$(cat /sys/block/nbd11/queue/discard_max_bytes)" -gt 0
check trim blkdiscard -o 1048576 -l 1048576 /dev/nbd11
dd if=/dev/zero of=/tmp/zero1m bs=1M count=1 2>/dev/null
check trim-zeroes sh -c "dd if=/tmp/trim.img bs=1M skip=1 count=1 2>/dev/null | cmp - /tmp/zero1m"
check disconnect-trim q nbd-device-disconnect device=/dev/nbd11
check disconnect-trim-gone wait_gone 11

# ---- the ioctl interface ---------------------------------------------------
check connect-ioctl q nbd-device-connect device=/dev/nbd2 export=e0 interface=ioctl
check ioctl-size test "$(cat /sys/block/nbd2/size)" = 131072
check ioctl-read sh -c "dd if=/dev/nbd2 bs=1M skip=1 count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
check ioctl-write dd if=$S/pat3.bin of=/dev/nbd2 bs=1M seek=8 oflag=direct
check disconnect-ioctl q nbd-device-disconnect device=/dev/nbd2
check disconnect-ioctl-gone wait_gone 2

# ---- several connections ---------------------------------------------------
check connect-multi q nbd-device-connect device=/dev/nbd3 export=e0 connections=4 block-size=4096
check block-size test "$(cat /sys/block/nbd3/queue/logical_block_size)" = 4096
out=$(q query-nbd-devices)
echo "$out" | grep -q '"connections": *4' && ok multi-query || fail multi-query "$out"
check multi-read sh -c "dd if=/dev/nbd3 bs=1M skip=4 count=1 iflag=direct 2>/dev/null | cmp - $S/pat2.bin"
check multi-write dd if=$S/pat3.bin of=/dev/nbd3 bs=1M seek=12 oflag=direct
check disconnect-multi q nbd-device-disconnect device=/dev/nbd3
check disconnect-multi-gone wait_gone 3

# ---- first free device (netlink picks) -------------------------------------
out=$(q nbd-device-connect export=e0 2>&1)
echo "$out" | grep -q '"device": *"/dev/nbd' && ok connect-first-free ||
    fail connect-first-free "$out"
dev=$(echo "$out" | sed -n 's/.*"index": *\([0-9]*\).*/\1/p')
check disconnect-first-free q nbd-device-disconnect device=/dev/nbd$dev
check disconnect-first-free-gone wait_gone "$dev"

# ---- partitions, ext4 ------------------------------------------------------
check connect-part q nbd-device-connect device=/dev/nbd1 export=e1
check partition-appears wait_file /dev/nbd1p1
check mkfs mkfs.ext4 -q -F /dev/nbd1p1
mkdir -p /mnt/t
check mount mount -t ext4 /dev/nbd1p1 /mnt/t
check write-file cp $S/pat1.bin /mnt/t/file.bin
check umount umount /mnt/t
check disconnect-part q nbd-device-disconnect device=/dev/nbd1
check disconnect-part-gone wait_gone 1
# read-only: the file is there, writes fail
check connect-ro q nbd-device-connect device=/dev/nbd1 export=e1 read-only=true
check ro-flag test "$(cat /sys/block/nbd1/ro)" = 1
check ro-partition wait_file /dev/nbd1p1
check mount-ro mount -t ext4 -o ro,noload /dev/nbd1p1 /mnt/t
check ro-file-content cmp /mnt/t/file.bin $S/pat1.bin
umount /mnt/t
out=$(dd if=$S/pat1.bin of=/dev/nbd1 bs=1M count=1 oflag=direct 2>&1) &&
    fail ro-write-refused "write succeeded" || ok ro-write-refused
check disconnect-ro q nbd-device-disconnect device=/dev/nbd1
check disconnect-ro-gone wait_gone 1

# the ioctl way sees partitions too
check connect-ioctl-part q nbd-device-connect device=/dev/nbd10 export=e1 interface=ioctl read-only=true
check ioctl-partition wait_file /dev/nbd10p1
check disconnect-ioctl-part q nbd-device-disconnect device=/dev/nbd10
check disconnect-ioctl-part-gone wait_gone 10

# ---- qcow2 with a backing file ---------------------------------------------
check connect-qcow2 q nbd-device-connect device=/dev/nbd4 export=e2
check qcow2-backing-read sh -c "dd if=/dev/nbd4 bs=1M count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
check qcow2-write dd if=$S/pat2.bin of=/dev/nbd4 bs=1M seek=2 oflag=direct
check disconnect-qcow2 q nbd-device-disconnect device=/dev/nbd4
check disconnect-qcow2-gone wait_gone 4

# ---- hard block-export-del disconnects the device first ------------------
check connect-hard q nbd-device-connect device=/dev/nbd8 export=e3
check export-del-hard q block-export-del id=e3 mode=hard
check export-del-hard-gone wait_gone 8

# ---- kill -9: the kernel fails I/O after dead-conn-timeout -----------------
dd if=/dev/zero of=/tmp/k9.img bs=1M count=8 2>/dev/null
blockd --qmp unix:/tmp/k9.sock \
    --blockdev driver=file,node-name=f0,filename=/tmp/k9.img \
    --nbd-server addr.type=unix,addr.path=/tmp/k9-nbd.sock \
    --export type=nbd,id=k9,node-name=f0,writable=on \
    --pidfile /tmp/k9.pid --daemonize
check k9-connect blockctl -s /tmp/k9.sock nbd-device-connect device=/dev/nbd9 export=k9 dead-conn-timeout=2 timeout=5
check k9-read-before dd if=/dev/nbd9 of=/dev/null bs=4k count=1 iflag=direct
kill -9 "$(cat /tmp/k9.pid)"
sleep 1
# In the background: a read the kernel never fails would block the script.
(dd if=/dev/nbd9 of=/dev/null bs=4k skip=100 count=1 iflag=direct 2>/dev/null
 echo $? >/tmp/k9.rc) &
i=0
while [ ! -e /tmp/k9.rc ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e /tmp/k9.rc ]; then fail k9-io-fails "read still blocked after 60 s"
elif [ "$(cat /tmp/k9.rc)" != 0 ]; then ok k9-io-fails
else fail k9-io-fails "read succeeded with the server killed"; fi
blockd-nbd -d /dev/nbd9 >/dev/null 2>&1 || qemu-nbd -d /dev/nbd9 >/dev/null 2>&1
check k9-cleaned-up wait_gone 9

# ---- not root: a clear error, nothing bound -------------------------------
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>/etc/passwd
echo 'nogroup:x:65534:' >>/etc/group
dd if=/dev/zero of=/tmp/nr.img bs=1M count=8 2>/dev/null
chmod 666 /tmp/nr.img
# su -c runs blockd as nobody (uid 65534, no capabilities)
su -s /bin/sh nobody -c "blockd --qmp unix:/tmp/nr.sock \
    --blockdev driver=file,node-name=f0,filename=/tmp/nr.img \
    --nbd-server addr.type=unix,addr.path=/tmp/nr-nbd.sock \
    --export type=nbd,id=nr,node-name=f0,writable=on" \
    </dev/null >/tmp/nr.err 2>&1 &
check nonroot-started wait_file /tmp/nr.sock
NRQ="blockctl -s /tmp/nr.sock"
ps -o user,args | grep -q "^nobody.*blockd --qmp unix:/tmp/nr.sock" &&
    ok nonroot-is-nobody || fail nonroot-is-nobody "$(ps -o user,args)"
out=$($NRQ nbd-device-connect device=/dev/nbd14 export=nr 2>&1) &&
    fail nonroot-netlink "connected: $out" ||
    { echo "$out" | grep -q "needs root (CAP_SYS_ADMIN)" &&
      ok nonroot-netlink || fail nonroot-netlink "$out"; }
out=$($NRQ nbd-device-connect export=nr 2>&1) &&
    fail nonroot-first-free "connected: $out" ||
    { echo "$out" | grep -q "needs root (CAP_SYS_ADMIN)" &&
      ok nonroot-first-free || fail nonroot-first-free "$out"; }
out=$($NRQ nbd-device-connect device=/dev/nbd14 export=nr interface=ioctl 2>&1) &&
    fail nonroot-ioctl "connected: $out" ||
    { echo "$out" | grep -q "needs root (CAP_SYS_ADMIN)" &&
      ok nonroot-ioctl || fail nonroot-ioctl "$out"; }
# nothing half-bound: the kernel has no device, the daemon lists none,
# the export goes in safe mode
check nonroot-unbound test ! -e /sys/block/nbd14/pid
out=$($NRQ query-nbd-devices 2>&1)
echo "$out" | grep -q nbd && fail nonroot-none-listed "$out" ||
    ok nonroot-none-listed
check nonroot-export-del $NRQ block-export-del id=nr
$NRQ quit >/dev/null 2>&1

# ---- connected, and the server side dying: the kernel's link-dead word ----
# A blockd of its own in the foreground (its log on stderr), so that
# sockkill finds only this device's sockets.
dd if=$S/pat1.bin of=/tmp/ld.img bs=1M count=1 2>/dev/null
dd if=/dev/zero of=/tmp/ld.img bs=1M seek=1 count=7 2>/dev/null
blockd --qmp unix:/tmp/ld.sock \
    --blockdev driver=file,node-name=f0,filename=/tmp/ld.img \
    --nbd-server addr.type=unix,addr.path=/tmp/ld-nbd.sock \
    --export type=nbd,id=ld,node-name=f0,writable=on \
    </dev/null >/tmp/ld.err 2>&1 &
LDPID=$!
check ld-started wait_file /tmp/ld.sock
LDQ="blockctl -s /tmp/ld.sock"
$LDQ --events >/tmp/ld-events.txt 2>&1 &
LDEV=$!
# query_has PATTERN: until query-nbd-devices (spaces and newlines
# taken out) matches, 60 s of uptime
query_has() {
    end=$(($(cut -d. -f1 /proc/uptime) + 60))
    while ! $LDQ query-nbd-devices 2>&1 | tr -d ' \n' | grep -q "$1"; do
        [ "$(cut -d. -f1 /proc/uptime)" -gt $end ] && return 1
        sleep 0.2
    done
    return 0
}
check ld-connect $LDQ nbd-device-connect device=/dev/nbd12 export=ld connections=4 dead-conn-timeout=30
out=$($LDQ query-nbd-devices | tr -d ' \n')
echo "$out" | grep -q '"device":"/dev/nbd12"' &&
    echo "$out" | grep -q '"connected":true' &&
    echo "$out" | grep -q '"connections":4' && ok query-connected ||
    fail query-connected "$out"
# wait_grep N FILE PATTERN: until FILE has N lines matching, 30 s
wait_grep() {
    i=0
    while [ "$(grep -c "$3" "$2")" -lt "$1" ]; do
        i=$((i + 1)); [ $i -gt 300 ] && return 1
        sleep 0.1
    done
    return 0
}
LDWORD='/dev/nbd12: the kernel reports a dead link'
# One of the four dies: the kernel goes on with three, and says so.
out=$(sockkill $LDPID 1); [ "$out" = 1 ] && ok ld-kill-one || fail ld-kill-one "$out"
check ld-three-left query_has '"connections":3[,}]'
check ld-three-read sh -c "dd if=/dev/nbd12 bs=1M count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
check ld-still-connected query_has '"connected":true'
check ld-multicast-one wait_grep 1 /tmp/ld.err "$LDWORD"
# The other three: the device goes, with reason "link dead".
out=$(sockkill $LDPID); [ "$out" = 3 ] && ok ld-kill-rest || fail ld-kill-rest "$out"
check ld-gone wait_gone 12
check ld-event wait_grep 1 /tmp/ld-events.txt 'NBD_DEVICE_DISCONNECTED.*nbd12.*link dead'
out=$($LDQ query-nbd-devices 2>&1)
echo "$out" | grep -q nbd12 && fail ld-not-listed "$out" || ok ld-not-listed
# One connection, killed: the daemon waits for the kernel's word (not
# its 10 s fallback) and disconnects the device.
check ld-one-connect $LDQ nbd-device-connect device=/dev/nbd12 export=ld
check ld-one-connected query_has '"connected":true'
out=$(sockkill $LDPID); [ "$out" = 1 ] && ok ld-one-kill || fail ld-one-kill "$out"
check ld-one-gone wait_gone 12
check ld-one-event wait_grep 2 /tmp/ld-events.txt 'NBD_DEVICE_DISCONNECTED.*nbd12.*link dead'
check ld-one-multicast wait_grep 2 /tmp/ld.err "$LDWORD"
grep -q "no link-dead notification" /tmp/ld.err &&
    fail ld-no-fallback "$(cat /tmp/ld.err | head -c 600)" || ok ld-no-fallback
# Bound again, then disconnected: connected until then, gone after, and
# the reason is the request.
check ld-reconnect $LDQ nbd-device-connect device=/dev/nbd12 export=ld
check ld-reconnect-connected query_has '"connected":true'
check ld-disconnect $LDQ nbd-device-disconnect device=/dev/nbd12
check ld-disconnect-gone wait_gone 12
check ld-disconnect-event wait_grep 1 /tmp/ld-events.txt 'NBD_DEVICE_DISCONNECTED.*nbd12.*disconnect requested'
out=$($LDQ query-nbd-devices 2>&1)
echo "$out" | grep -q nbd12 && fail ld-disconnect-not-listed "$out" ||
    ok ld-disconnect-not-listed
$LDQ quit >/dev/null 2>&1
kill $LDEV 2>/dev/null
grep -q "Sanitizer\|runtime error" /tmp/ld.err &&
    fail ld-clean-exit "$(head -c 600 /tmp/ld.err)" || ok ld-clean-exit

# ---- shutdown with a device bound ------------------------------------------
check connect-before-quit q nbd-device-connect device=/dev/nbd5 export=e0
check quit q quit
check quit-unbinds wait_gone 5
i=0
while kill -0 "$BPID" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1
done
kill -0 "$BPID" 2>/dev/null && fail blockd-exited "still running" ||
    ok blockd-exited
kill $EVPID 2>/dev/null
n=$(grep -c NBD_DEVICE_DISCONNECTED /tmp/events.txt)
[ "$n" -ge 8 ] && ok events || fail events "$n events: $(cat /tmp/events.txt | head -c 600)"
grep NBD_DEVICE_DISCONNECTED /tmp/events.txt | grep nbd5 | grep -q "server stopped" &&
    ok event-server-stopped || fail event-server-stopped "$(grep nbd5 /tmp/events.txt)"
grep NBD_DEVICE_DISCONNECTED /tmp/events.txt | grep nbd8 | grep -q "export deleted" &&
    ok event-export-deleted || fail event-export-deleted "$(grep nbd8 /tmp/events.txt)"
# blockd's stderr until it daemonized, then a sanitizer build's log
cat /tmp/blockd.err /tmp/blockd.san.* >/tmp/blockd.all 2>/dev/null
grep -q "Sanitizer\|runtime error" /tmp/blockd.all &&
    fail blockd-clean-exit "$(head -c 600 /tmp/blockd.all)" || ok blockd-clean-exit
cat /tmp/blockd.err | head -20

# ---- blockd-nbd -c / -d, beside qemu-nbd -c in the same boot -------------
mkdir -p /var/lock
if command -v blockd-nbd >/dev/null; then
    # --fork is implied by -c without -v: it returns once bound.
    # Not through check's $(...): the daemon it leaves keeps no pipe.
    blockd-nbd -c /dev/nbd6 -f raw --pid-file /tmp/bnbd.pid $S/raw.img \
        </dev/null >/tmp/bnbd.out 2>&1 && ok bnbd-connect ||
        fail bnbd-connect "$(cat /tmp/bnbd.out)"
    check bnbd-size test "$(cat /sys/block/nbd6/size)" = 131072
    check bnbd-read sh -c "dd if=/dev/nbd6 bs=1M skip=1 count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
    check bnbd-write dd if=$S/pat2.bin of=/dev/nbd6 bs=1M seek=16 oflag=direct
    BNPID=$(cat /tmp/bnbd.pid)
    out=$(blockd-nbd -d /dev/nbd6 2>&1)
    [ "$out" = "/dev/nbd6 disconnected" ] && ok bnbd-disconnect ||
        fail bnbd-disconnect "$out"
    check bnbd-gone wait_gone 6
    i=0
    while kill -0 "$BNPID" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1
    done
    kill -0 "$BNPID" 2>/dev/null && fail bnbd-exits "still running" ||
        ok bnbd-exits
    # Foreground (-v): runs until disconnected, then exits 0.
    blockd-nbd -v -c /dev/nbd6 -f raw -r $S/raw.img 2>/tmp/bnbd.err &
    FG=$!
    i=0
    while [ ! -e /sys/block/nbd6/pid ]; do
        i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1
    done
    check bnbd-fg-ro test "$(cat /sys/block/nbd6/ro)" = 1
    # qemu-nbd -d on blockd-nbd's device, as on its own
    out=$(qemu-nbd -d /dev/nbd6 2>&1)
    [ "$out" = "/dev/nbd6 disconnected" ] && ok bnbd-qemu-nbd-d ||
        fail bnbd-qemu-nbd-d "$out"
    wait $FG
    rc=$?
    [ $rc = 0 ] && ok bnbd-fg-exit || fail bnbd-fg-exit "status $rc: $(cat /tmp/bnbd.err)"
    # Errors as qemu-nbd's
    out=$(blockd-nbd -d /dev/nbd999 2>&1); rc=$?
    [ $rc = 1 ] && [ "$out" = "blockd-nbd: Cannot open /dev/nbd999: No such file or directory" ] &&
        ok bnbd-d-missing || fail bnbd-d-missing "$rc $out"
fi

# ---- -c failures: blockd-nbd says what qemu-nbd says ----------------------
# same_c NAME DEV [RUNNER...]: qemu-nbd -c DEV and blockd-nbd -c DEV, run
# the same way (forked, the default with -c), fail with the same stderr
# (the program's name aside) and the same status.  IMG is the image.
IMG=$S/raw.img
same_c() {
    n=$1; dev=$2; shift 2
    "$@" qemu-nbd -c $dev -f raw $IMG </dev/null >/tmp/cq.out 2>&1
    qrc=$?
    "$@" blockd-nbd -c $dev -f raw $IMG </dev/null >/tmp/cb.out 2>&1
    brc=$?
    qout=$(sed 's/^qemu-nbd: //' /tmp/cq.out)
    bout=$(sed 's/^blockd-nbd: //' /tmp/cb.out)
    if [ $qrc != 0 ] && [ $qrc = $brc ] && [ "$qout" = "$bout" ]; then
        ok $n
    else
        fail $n "qemu-nbd: $qrc '$qout'; blockd-nbd: $brc '$bout'"
    fi
}
if command -v blockd-nbd >/dev/null && command -v qemu-nbd >/dev/null; then
    same_c c-missing /dev/nbd999
    same_c c-not-nbd-char /dev/null
    same_c c-not-nbd-block /dev/loop0
    check c-loop0-untouched test ! -e /sys/block/loop0/loop
    # busy: bound by qemu-nbd, then by blockd-nbd
    qemu-nbd -c /dev/nbd13 -f raw -r $IMG </dev/null >/tmp/qn.out 2>&1 ||
        fail c-busy-setup "$(cat /tmp/qn.out)"
    same_c c-busy-qemu-nbd /dev/nbd13
    check c-busy-qemu-nbd-still-read sh -c "dd if=/dev/nbd13 bs=1M skip=1 count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
    qemu-nbd -d /dev/nbd13 >/dev/null 2>&1
    check c-busy-qemu-nbd-gone wait_gone 13
    blockd-nbd -c /dev/nbd13 -f raw -r $IMG </dev/null >/tmp/bn.out 2>&1 ||
        fail c-busy-setup2 "$(cat /tmp/bn.out)"
    same_c c-busy-blockd-nbd /dev/nbd13
    check c-busy-blockd-nbd-still-read sh -c "dd if=/dev/nbd13 bs=1M skip=1 count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
    blockd-nbd -d /dev/nbd13 >/dev/null 2>&1
    check c-busy-blockd-nbd-gone wait_gone 13
    # not root: /var/lock is root's (the socket cannot be made), then
    # open to all (the device cannot be opened), then the device too
    # (the kernel refuses the binding); nothing is bound
    dd if=/dev/zero of=/tmp/nr2.img bs=1M count=8 2>/dev/null
    chmod 666 /tmp/nr2.img
    IMG=/tmp/nr2.img
    same_c c-nonroot-lockdir /dev/nbd14 su -s /bin/sh nobody -c '"$0" "$@"'
    chmod 1777 /var/lock
    same_c c-nonroot-open /dev/nbd14 su -s /bin/sh nobody -c '"$0" "$@"'
    chmod 666 /dev/nbd14
    same_c c-nonroot-bind /dev/nbd14 su -s /bin/sh nobody -c '"$0" "$@"'
    chmod 660 /dev/nbd14
    chmod 755 /var/lock
    check c-nonroot-unbound test ! -e /sys/block/nbd14/pid
    IMG=$S/raw.img
fi
if command -v qemu-nbd >/dev/null; then
    qemu-nbd -c /dev/nbd7 -f raw $S/raw.img </dev/null >/tmp/qn.out 2>&1 &&
        ok qemu-nbd-connect || fail qemu-nbd-connect "$(cat /tmp/qn.out)"
    check qemu-nbd-read sh -c "dd if=/dev/nbd7 bs=1M skip=1 count=1 iflag=direct 2>/dev/null | cmp - $S/pat1.bin"
    out=$(blockd-nbd -d /dev/nbd7 2>&1)
    [ "$out" = "/dev/nbd7 disconnected" ] && ok qemu-nbd-bnbd-d ||
        fail qemu-nbd-bnbd-d "$out"
    check qemu-nbd-gone wait_gone 7
fi
sync
umount "$S"
