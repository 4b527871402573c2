#!/usr/bin/env python3
"""check-layers.py - the folders are layers; an #include points only down.

    util  <-  qmp  <-  crypto  <-  blockdev  <-  nbd  <-  daemon
    client: util, the generated client half, nbd's shared codec

A file may include headers of its own folder and of folders below it,
never above, so no two folders include each other.  client/ stands
beside the server: it may use util/, the generated types and command
table, and the parts of nbd/ that both ends share (NBD_SHARED), which
themselves use nothing but util/.  Generated headers count as the layer
they belong to.  tests/ may include anything.

    check-layers.py SRCDIR        check the tree; exit 1 on a violation
    check-layers.py --self-test   show that each kind of violation fails

In the spirit of Chromium's checkdeps: the rules are data, here.
"""
import os
import re
import sys
import tempfile

LAYERS = ['util', 'qmp', 'crypto', 'blockdev', 'nbd', 'daemon']
# Generated headers (build dir) and the layer they stand in.
GENERATED = {
    'config.h': 'util',
    'qapi-types.h': 'util',
    'qapi-cmdtable.h': 'util',
    'qapi-commands.h': 'qmp',
    'qapi-events.h': 'qmp',
}
# Files of nbd/ that the client side shares (the codec, the client
# handshake and list mode): they use only util/.
NBD_SHARED = {'nbd/proto.h', 'nbd/proto.c',
              'nbd/client.h', 'nbd/client.c'}
CLIENT_MAY = {'util', 'client'}
CHECKED = LAYERS + ['client']

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(header):
    """The layer a quoted include names, or None (unknown: not ours)."""
    if header in GENERATED:
        return GENERATED[header]
    top = header.split('/', 1)[0]
    return top if top in CHECKED and '/' in header else None


def check_file(rel, text):
    """The violations of one source file, as messages."""
    folder = rel.split('/', 1)[0]
    bad = []
    for m in INCLUDE.finditer(text):
        inc = m.group(1)
        line = text.count('\n', 0, m.start()) + 1
        target = layer_of(inc)
        if target is None:
            continue
        why = None
        if rel in NBD_SHARED:
            if not (target == 'util' or inc in NBD_SHARED):
                why = 'shared NBD codec may include only util/ and itself'
        elif folder == 'client':
            if not (target in CLIENT_MAY or inc in NBD_SHARED):
                why = 'client/ links no server code'
        elif target == 'client':
            why = 'the server never includes client/'
        elif LAYERS.index(target) > LAYERS.index(folder):
            why = '%s/ is above %s/' % (target, folder)
        if why:
            bad.append('%s:%d: includes "%s": %s' % (rel, line, inc, why))
    return bad


def check_tree(src):
    bad = []
    nfiles = 0
    for folder in CHECKED:
        root = os.path.join(src, folder)
        for dirpath, _, files in os.walk(root):
            for f in sorted(files):
                if not f.endswith(('.c', '.h')):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, src)
                with open(path, encoding='utf-8', errors='replace') as fh:
                    bad += check_file(rel, fh.read())
                nfiles += 1
    return nfiles, bad


def self_test():
    """Each rule must reject a tree that breaks it, and pass a good one."""
    cases = [
        ('good', {'util/a.c': '#include "util/b.h"\n',
                  'nbd/x.c': '#include "blockdev/block.h"\n'
                             '#include "crypto/tls.h"\n'
                             '#include "qapi-events.h"\n',
                  'client/c.c': '#include "nbd/proto.h"\n'
                                '#include "qapi-cmdtable.h"\n'}, False),
        ('up a layer', {'util/a.c': '#include "nbd/server.h"\n'}, True),
        ('crypto reaches up into the block layer',
         {'crypto/a.c': '#include "blockdev/block.h"\n'}, True),
        ('two folders include each other',
         {'blockdev/a.c': '#include "nbd/server.h"\n',
          'nbd/b.c': '#include "blockdev/block.h"\n'}, True),
        ('generated header above util',
         {'util/a.c': '#include "qapi-commands.h"\n'}, True),
        ('client includes the server',
         {'client/a.c': '#include "blockdev/block.h"\n'}, True),
        ('client includes server-side generated code',
         {'client/a.c': '#include "qapi-commands.h"\n'}, True),
        ('server includes client',
         {'daemon/a.c': '#include "client/qmpc.h"\n'}, True),
        ('shared codec reaches into the server',
         {'nbd/proto.c': '#include "nbd/internal.h"\n'}, True),
        ('shared client handshake reaches into the server',
         {'nbd/client.c': '#include "nbd/server.h"\n'}, True),
    ]
    passed = failed = 0
    for name, files, should_fail in cases:
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(d, rel)),
                            exist_ok=True)
                with open(os.path.join(d, rel), 'w') as fh:
                    fh.write(text)
            _, bad = check_tree(d)
        if bool(bad) == should_fail:
            passed += 1
            print('ok: %s%s' % (name, (': ' + bad[0]) if bad else ''))
        else:
            failed += 1
            print('FAIL: %s: %s' % (name, bad or 'no violation found'))
    print('%d passed, %d failed' % (passed, failed))
    return failed == 0


def main(argv):
    if len(argv) == 2 and argv[1] == '--self-test':
        return 0 if self_test() else 1
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    nfiles, bad = check_tree(argv[1])
    for b in bad:
        print(b)
    print('%d passed, %d failed' % (nfiles - len({b.split(':')[0]
                                                  for b in bad}),
                                    len({b.split(':')[0] for b in bad})))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
