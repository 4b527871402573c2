#!/usr/bin/env python3
"""Unit tests of schema/gen.py: schema checking and name mangling.

Run by meson (suite "schema") or directly: python3 schema/tests/test_gen.py
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import gen  # noqa: E402

TMP = tempfile.mkdtemp(prefix='test-gen-')
atexit.register(shutil.rmtree, TMP, True)


def load(defs):
    """Build a Schema from one module holding defs."""
    d = tempfile.mkdtemp(dir=TMP)
    with open(os.path.join(d, 'm.json'), 'w') as f:
        json.dump(defs, f)
    with open(os.path.join(d, 'schema.json'), 'w') as f:
        json.dump({'include': ['m.json']}, f)
    return gen.Schema(os.path.join(d, 'schema.json'))


def enum(name, values):
    return {'enum': name, 'data': values, 'doc': 'x'}


class Names(unittest.TestCase):
    def test_c_name(self):
        self.assertEqual(gen.c_name('node-name'), 'node_name')
        self.assertEqual(gen.c_name('a.b'), 'a_b')
        self.assertEqual(gen.c_name('default'), 'q_default')
        self.assertEqual(gen.c_name('unix'), 'q_unix')
        self.assertEqual(gen.c_name('0.10'), 'q_0_10')
        self.assertEqual(gen.c_name('unix', False), 'unix')

    def test_camel_to_upper(self):
        self.assertEqual(gen.camel_to_upper('BlockdevDriver'),
                         'BLOCKDEV_DRIVER')
        self.assertEqual(gen.camel_to_upper('QMPCapability'),
                         'QMP_CAPABILITY')
        self.assertEqual(gen.camel_to_upper('OnOffAuto'), 'ON_OFF_AUTO')
        self.assertEqual(gen.camel_to_upper('Qcow2OverlapCheckMode'),
                         'QCOW2_OVERLAP_CHECK_MODE')
        self.assertEqual(gen.camel_to_upper('JSONType'), 'JSON_TYPE')

    def test_enum_const(self):
        s = load([enum('BlockdevDriver', ['null-co', 'io_uring'])])
        e = s.types['BlockdevDriver']
        self.assertEqual(e.const('null-co'), 'BLOCKDEV_DRIVER_NULL_CO')
        self.assertEqual(e.const('io_uring'), 'BLOCKDEV_DRIVER_IO_URING')

    def test_c_string(self):
        self.assertEqual(gen.c_string('a"b\\c\n'), '"a\\"b\\\\c\\n"')
        self.assertEqual(gen.c_string('\x01'), '"\\001"')


class Checks(unittest.TestCase):
    def bad(self, defs, words):
        with self.assertRaises(gen.SchemaError) as cm:
            load(defs)
        self.assertIn(words, str(cm.exception))

    def test_unknown_type(self):
        self.bad([{'struct': 'S', 'data': {'a': 'Nope'}, 'doc': 'x'}],
                 "unknown type 'Nope'")

    def test_duplicate(self):
        self.bad([enum('E', ['a']), enum('E', ['b'])], 'duplicate')

    def test_missing_doc(self):
        self.bad([{'struct': 'S', 'data': {}}], 'without doc')

    def test_bad_default(self):
        self.bad([{'struct': 'S', 'doc': 'x',
                   'data': {'*a': {'type': 'bool', 'default': 1}}}],
                 'bad default')
        self.bad([{'struct': 'S', 'doc': 'x',
                   'data': {'*a': {'type': 'uint32', 'default': -1}}}],
                 'bad default')
        self.bad([enum('E', ['a']),
                  {'struct': 'S', 'doc': 'x',
                   'data': {'*a': {'type': 'E', 'default': 'b'}}}],
                 'bad default')
        self.bad([{'struct': 'S', 'doc': 'x',
                   'data': {'a': {'type': 'int', 'default': 1}}}],
                 'mandatory')

    def test_union_checks(self):
        base = {'struct': 'B', 'doc': 'x', 'data': {'t': 'str'}}
        self.bad([base, {'union': 'U', 'base': 'B', 'discriminator': 't',
                         'data': {}, 'doc': 'x'}], 'discriminator')
        self.bad([enum('E', ['a']),
                  {'struct': 'S', 'doc': 'x', 'data': {}},
                  {'union': 'U', 'base': {'t': 'E'}, 'discriminator': 't',
                   'data': {'b': 'S'}, 'doc': 'x'}], 'not a value')
        self.bad([enum('E', ['a']),
                  {'struct': 'S', 'doc': 'x', 'data': {'t': 'int'}},
                  {'union': 'U', 'base': {'t': 'E'}, 'discriminator': 't',
                   'data': {'a': 'S'}, 'doc': 'x'}], 'clashes')

    def test_alternate_checks(self):
        self.bad([enum('E', ['a']),
                  {'alternate': 'A', 'doc': 'x',
                   'data': {'e': 'E', 's': 'str'}}], 'ambiguous')
        self.bad([{'alternate': 'A', 'doc': 'x', 'data': {'x': 'any'}}],
                 'bad branch')

    def test_null_member(self):
        self.bad([{'struct': 'S', 'doc': 'x', 'data': {'a': 'null'}}],
                 'only an alternate branch')

    def test_base_loop(self):
        self.bad([{'struct': 'A', 'base': 'B', 'doc': 'x', 'data': {}},
                  {'struct': 'B', 'base': 'A', 'doc': 'x', 'data': {}}],
                 'loop')

    def test_good(self):
        s = load([enum('E', ['a', 'b']),
                  {'struct': 'S', 'doc': 'x', 'data': {'*n': 'int'}},
                  {'union': 'U', 'base': {'t': 'E', 'x': 'str'},
                   'discriminator': 't', 'data': {'a': 'S'}, 'doc': 'x'},
                  {'command': 'do-it', 'data': {'u': 'U', '*l': ['str']},
                   'returns': ['S'], 'doc': 'x'},
                  {'event': 'DONE', 'data': {'*id': 'str'}, 'doc': 'x'}])
        c = s.commands[0]
        self.assertEqual(c.args_type.name, 'QmpDoItArgs')
        self.assertEqual(c.ret_type.name, 'SList')
        self.assertIn('strList', s.arrays.get('str').name)
        g = gen.CGen(s)
        self.assertIn('bool qmp_do_it(QmpCtx *ctx, const QmpDoItArgs *args,'
                      ' SList **ret, Error **errp)', g._handler_proto(c))
        self.assertEqual(g._event_proto(s.events[0]),
                         'void qapi_event_send_done(MonitorSet *ms, bool has_id,'
                         ' const char *id)')
        text, ents = g.introspect()
        names = [e['name'] for e in ents]
        self.assertIn('do-it', names)
        self.assertNotIn('S', names)
        self.assertIn('[str]', names)


class CommandLine(unittest.TestCase):
    def test_error_exit(self):
        d = tempfile.mkdtemp(dir=TMP)
        with open(os.path.join(d, 'm.json'), 'w') as f:
            f.write('[{"struct": "S", "doc": "x", "data": {"a": "Q"}}]')
        with open(os.path.join(d, 'schema.json'), 'w') as f:
            f.write('{"include": ["m.json"]}')
        p = subprocess.run([sys.executable,
                            os.path.join(os.path.dirname(HERE), 'gen.py'),
                            '--schema', os.path.join(d, 'schema.json'),
                            '--output-dir', d],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown type 'Q'", p.stderr)

    def test_real_schema(self):
        root = os.path.dirname(HERE)
        s = gen.Schema(os.path.join(root, 'schema.json'))
        # every definition and member of the real schema is documented
        for t in s.order:
            if t.implicit:
                continue
            self.assertTrue(t.doc, t.name)
            for m in getattr(t, 'own_members', []):
                self.assertTrue(m.doc, '%s.%s' % (t.name, m.name))
        for c in s.commands:
            self.assertTrue(c.doc, c.name)
            if c.args_type.implicit:
                for m in c.args_type.members:
                    self.assertTrue(m.doc, '%s.%s' % (c.name, m.name))


if __name__ == '__main__':
    r = unittest.main(exit=False, verbosity=1).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures)
                                     - len(r.errors),
                                     len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
