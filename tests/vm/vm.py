"""A throw-away Linux VM for tests that need a real kernel (kernel NBD).

This machine, developers' machines and CI have no nbd module and no
/dev/nbd*, so tests that bind /dev/nbdN boot Debian's own kernel under
qemu-system-x86_64 (TCG) with an initramfs built here:

    cache = vm.fetch()                 # kernel + modules + busybox, cached
    initrd = vm.build_initramfs(cache, out, programs=[...], files={...},
                                init_script=TEXT)
    lines = vm.run(cache, initrd, disks=[img], timeout=240)

fetch() downloads (apt-get download, no install) the versioned package
linux-image-amd64 depends on and busybox-static, unpacks them with
dpkg -x into the cache directory ($BLOCKD_VM_CACHE, else
$XDG_CACHE_HOME/blockd-vm, else ~/.cache/blockd-vm) and reuses them on
the next run.  The initramfs is a newc cpio archive written by
write_cpio(): programs are copied at their host paths with the shared
libraries ldd names, modules with their modinfo depends= (decompressed
when .ko.xz), busybox provides the shell and the applets.

The VM's init runs the given shell script; its output goes to the serial
console, which run() returns line by line.  The VM powers itself off at
the end of the script (poweroff -f), and run() kills it at the timeout.
"""
import glob
import lzma
import os
import re
import select
import shutil
import stat
import subprocess
import tempfile
import time


class VmUnavailable(Exception):
    """What a test skips with: the reason the VM cannot run here."""


def cache_dir():
    d = os.environ.get("BLOCKD_VM_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or \
            os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "blockd-vm")
    os.makedirs(d, exist_ok=True)
    return d


def _kernel_package():
    """The versioned package linux-image-amd64 depends on, e.g.
    linux-image-6.1.0-57-amd64."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-[0-9][^\s]*-amd64)\s*$",
                     line)
        if m:
            return m.group(1)
    raise VmUnavailable("apt-cache knows no linux-image-amd64 dependency")


def _download(pkg, dest):
    """apt-get download pkg into dest; unpack it into dest/root."""
    root = os.path.join(dest, "root")
    stamp = os.path.join(dest, "unpacked")
    if os.path.exists(stamp):
        return root
    os.makedirs(dest, exist_ok=True)
    r = subprocess.run(["apt-get", "download", pkg], cwd=dest,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise VmUnavailable("apt-get download %s failed: %s"
                            % (pkg, r.stderr.strip()[-300:]))
    debs = glob.glob(os.path.join(dest, "*.deb"))
    if not debs:
        raise VmUnavailable("apt-get download %s gave no .deb" % pkg)
    shutil.rmtree(root, ignore_errors=True)
    for deb in debs:
        subprocess.run(["dpkg", "-x", deb, root], check=True)
        os.unlink(deb)
    open(stamp, "w").close()
    return root


class Cache:
    def __init__(self, kernel, moddir, busybox, kver):
        self.kernel = kernel        # vmlinuz path
        self.moddir = moddir        # lib/modules/KVER
        self.busybox = busybox      # static busybox binary
        self.kver = kver


def fetch():
    """Kernel, modules and busybox, downloaded once into cache_dir()."""
    if shutil.which("qemu-system-x86_64") is None:
        raise VmUnavailable("qemu-system-x86_64 is not installed "
                            "(apt-get install qemu-system-x86)")
    base = cache_dir()
    pkg = _kernel_package()
    kroot = _download(pkg, os.path.join(base, pkg))
    bbroot = _download("busybox-static", os.path.join(base, "busybox-static"))
    kernels = glob.glob(os.path.join(kroot, "boot", "vmlinuz-*"))
    if not kernels:
        raise VmUnavailable("%s holds no /boot/vmlinuz-*" % pkg)
    kver = os.path.basename(kernels[0])[len("vmlinuz-"):]
    moddir = os.path.join(kroot, "lib", "modules", kver)
    busybox = os.path.join(bbroot, "bin", "busybox")
    if not os.path.exists(busybox):
        raise VmUnavailable("busybox-static holds no /bin/busybox")
    return Cache(kernels[0], moddir, busybox, kver)


# ---- the initramfs ----------------------------------------------------

def _cpio_entry(out, name, mode, data=b"", ino=[1]):
    name_b = name.encode() + b"\0"
    ino[0] += 1
    hdr = "070701" + "".join("%08X" % v for v in (
        ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
    out.write(hdr.encode())
    out.write(name_b)
    out.write(b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))
    out.write(data)
    out.write(b"\0" * ((4 - len(data) % 4) % 4))


def write_cpio(path, entries):
    """entries: {archive path: ("dir"|"file"|"link", data or target,
    mode)} written as a newc archive (what the kernel unpacks)."""
    with open(path, "wb") as out:
        for name in sorted(entries):
            kind, data, mode = entries[name]
            if kind == "dir":
                _cpio_entry(out, name, stat.S_IFDIR | mode)
            elif kind == "link":
                _cpio_entry(out, name, stat.S_IFLNK | 0o777, data.encode())
            else:
                _cpio_entry(out, name, stat.S_IFREG | mode, data)
        _cpio_entry(out, "TRAILER!!!", 0)


def _add_dirs(entries, path):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in entries:
            entries[d] = ("dir", None, 0o755)


def _add_file(entries, arcpath, hostpath, mode=None):
    arcpath = arcpath.lstrip("/")
    _add_dirs(entries, arcpath)
    with open(hostpath, "rb") as f:
        data = f.read()
    if mode is None:
        mode = os.stat(hostpath).st_mode & 0o777
    entries[arcpath] = ("file", data, mode)


def _libs(program):
    """Shared libraries (host paths) program needs, from ldd."""
    r = subprocess.run(["ldd", program], capture_output=True, text=True)
    libs = []
    for line in r.stdout.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _add_program(entries, program):
    real = os.path.realpath(program)
    _add_file(entries, program, real)
    for lib in _libs(real):
        _add_file(entries, lib, os.path.realpath(lib))


def _modinfo_depends(data):
    """The depends= string of a module's .modinfo section: its strings
    are NUL-terminated key=value pairs (what modinfo -F depends prints);
    no kmod needed."""
    m = re.search(rb"\0depends=([^\0]*)\0", data)
    return m.group(1).decode() if m else ""


def _modules(moddir, names):
    """Module files for names and everything they depend on, in load
    order (dependencies first)."""
    index = {}
    for p in glob.glob(os.path.join(moddir, "kernel", "**", "*.ko*"),
                       recursive=True):
        base = os.path.basename(p)
        base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", base)
        index[base.replace("-", "_")] = p
    order = []

    def visit(name):
        name = name.replace("-", "_")
        if any(n == name for n, _ in order):
            return
        path = index.get(name)
        if path is None:
            return          # built in
        deps = _modinfo_depends(_module_data(path))
        for d in filter(None, deps.split(",")):
            visit(d)
        if not any(n == name for n, _ in order):
            order.append((name, path))
    for n in names:
        visit(n)
    return order


def _module_data(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    return data


def build_initramfs(cache, out, programs=(), modules=(), files=None,
                    init_script=""):
    """Write an initramfs at out: busybox (/bin/busybox and its applet
    links), programs with their libraries at their host paths, modules
    (and their dependencies) under /modules with /modules/load-order,
    files {archive path: host path}, and /init running init_script."""
    entries = {}
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "run",
              "etc", "modules", "usr", "usr/bin", "usr/sbin", "var"):
        entries[d] = ("dir", None, 0o755)
    _add_file(entries, "bin/busybox", cache.busybox, 0o755)
    r = subprocess.run([cache.busybox, "--list"], capture_output=True,
                       text=True, check=True)
    for applet in r.stdout.split():
        if applet not in ("busybox",):
            entries["bin/" + applet] = ("link", "busybox", 0)
    for p in programs:
        if not os.path.exists(p):
            raise VmUnavailable("%s is missing" % p)
        _add_program(entries, p)
    order = []
    for name, path in _modules(cache.moddir, modules):
        arc = "modules/%s.ko" % name
        entries[arc] = ("file", _module_data(path), 0o644)
        order.append(name)
    entries["modules/load-order"] = ("file", "\n".join(order).encode()
                                     + b"\n", 0o644)
    for arc, host in (files or {}).items():
        _add_file(entries, arc, host)
    entries["etc/passwd"] = ("file", b"root:x:0:0:root:/:/bin/sh\n", 0o644)
    entries["etc/group"] = ("file", b"root:x:0:\n", 0o644)
    init = INIT_PREFIX + init_script + INIT_SUFFIX
    entries["init"] = ("file", init.encode(), 0o755)
    write_cpio(out, entries)
    return out


INIT_PREFIX = r"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "VM: booted $(cut -d' ' -f1 /proc/uptime)"
# mount_share DIR: the host's shared directory (run(share=DIR)) at DIR
mount_share() {
    mkdir -p "$1"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none \
        host "$1"
}
for m in $(cat /modules/load-order); do
    insmod /modules/$m.ko || echo "VM: insmod $m failed"
done
(
"""

INIT_SUFFIX = r"""
)
echo "VM: done $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
"""


# ---- running it -------------------------------------------------------

def run(cache, initrd, disks=(), share=None, timeout=240, mem="768M",
        smp=2, append="", log=None):
    """Boot the VM with the raw disk images attached (virtio: /dev/vda,
    /dev/vdb...) and the host directory share (virtio-9p, tag "host":
    mount_share() in the script mounts it at the same path), return
    (console lines, seconds).  TimeoutError
    (with the console so far) when it does not power off in time.
    log: a file that gets every console line as it comes, prefixed with
    the host's seconds since start."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", mem,
           "-smp", str(smp), "-cpu", "max", "-nographic", "-no-reboot",
           "-kernel", cache.kernel, "-initrd", initrd,
           # no_timer_check: a loaded host makes TCG's timer look broken
           # to the IO-APIC check, which then panics.
           "-append", "console=ttyS0 panic=-1 quiet loglevel=3 "
           "no_timer_check " + append,
           "-nic", "none"]
    for d in disks:
        cmd += ["-drive", "file=%s,format=raw,if=virtio,cache=unsafe" % d]
    if share:
        cmd += ["-virtfs", "local,path=%s,mount_tag=host,"
                "security_model=none" % share]
    start = time.monotonic()
    lines = []
    logf = open(log, "w") if log else None
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         preexec_fn=lambda: os.nice(10))
    buf = b""
    try:
        while True:
            left = start + timeout - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    "VM did not finish in %ds; console:\n%s"
                    % (timeout, "\n".join(lines[-60:])))
            r, _, _ = select.select([p.stdout], [], [], min(left, 1.0))
            if not r:
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                ln, buf = buf.split(b"\n", 1)
                text = ln.decode(errors="replace").rstrip("\r")
                lines.append(text)
                if logf:
                    logf.write("%7.2f %s\n" % (time.monotonic() - start,
                                                text))
                    logf.flush()
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        if logf:
            logf.close()
    if buf:
        lines.append(buf.decode(errors="replace").rstrip("\r"))
    return lines, time.monotonic() - start
