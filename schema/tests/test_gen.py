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


def load(defs, conditions=None, enabled=()):
    """Build a Schema from one module holding defs; conditions declares
    condition names, enabled says which are built."""
    d = tempfile.mkdtemp(dir=TMP)
    with open(os.path.join(d, 'm.json'), 'w') as f:
        json.dump(defs, f)
    top = {'include': ['m.json']}
    if conditions:
        top['conditions'] = {n: 'doc of ' + n for n in conditions}
    with open(os.path.join(d, 'schema.json'), 'w') as f:
        json.dump(top, f)
    return gen.Schema(os.path.join(d, 'schema.json'), enabled)


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

    def test_qemu_dict_order(self):
        # What QEMU 7.2's qemu-storage-daemon prints (tests/qsd-jobs.out
        # and the QMP envelope).
        self.assertEqual(gen.qemu_dict_order(['id', 'status']),
                         ['status', 'id'])
        self.assertEqual(
            gen.qemu_dict_order(['type', 'device', 'len', 'offset',
                                 'speed']),
            ['device', 'len', 'offset', 'speed', 'type'])
        self.assertEqual(gen.qemu_dict_order(['data', 'event',
                                              'timestamp']),
                         ['timestamp', 'event', 'data'])
        self.assertEqual(gen.qemu_dict_order(['microseconds', 'seconds']),
                         ['seconds', 'microseconds'])


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


class Conditions(unittest.TestCase):
    """"if": NAME leaves an entry out unless NAME is enabled."""

    DEFS = [
        {'enum': 'E', 'doc': 'x',
         'data': ['a', {'name': 'b', 'if': 'FEAT_B', 'doc': 'bee'}]},
        {'struct': 'SA', 'doc': 'x', 'data': {'n': 'int'}},
        {'struct': 'SB', 'doc': 'x', 'data': {'secret-b': 'str'}},
        {'struct': 'Only', 'doc': 'x', 'data': {'only-member': 'int'}},
        {'union': 'U', 'base': {'t': 'E'}, 'discriminator': 't',
         'data': {'a': 'SA', 'b': {'type': 'SB', 'if': 'FEAT_B'}},
         'doc': 'x'},
        {'struct': 'S', 'doc': 'x',
         'data': {'keep': 'int',
                  '*extra': {'type': 'str', 'if': 'FEAT_C', 'doc': 'x'}}},
        {'command': 'run-u', 'data': {'u': 'U', 's': 'S'}, 'doc': 'x'},
        {'command': 'run-c', 'if': 'FEAT_C', 'data': {'o': 'Only'},
         'doc': 'x'},
        {'event': 'EV_C', 'if': 'FEAT_C', 'data': {'o': 'Only'},
         'doc': 'x'},
    ]

    def gen_all(self, enabled):
        s = load(self.DEFS, ['FEAT_B', 'FEAT_C'], enabled)
        g = gen.CGen(s)
        c = (g.types_h() + g.types_c() + g.cmdtable_h() + g.cmdtable_c() +
             g.commands_h() + g.commands_c() + g.events_h() + g.events_c())
        _, ents = g.introspect()
        return s, c, json.dumps(ents), ents, gen.reference(s)

    def test_disabled(self):
        s, c, text, ents, ref = self.gen_all([])
        self.assertEqual([x.name for x in s.commands], ['run-u'])
        self.assertEqual([x.name for x in s.all_commands],
                         ['run-u', 'run-c'])
        self.assertEqual(s.events, [])
        # C: no handler, no table entry, no constant, no branch, no field
        self.assertNotIn('qmp_run_c', c)
        self.assertNotIn('"run-c"', c)
        self.assertNotIn('QmpRunCArgs', c)
        self.assertNotIn('qapi_event_send_ev_c', c)
        self.assertNotIn('E_B', c)
        self.assertNotIn('u.b', c)
        self.assertNotIn('extra', c)
        self.assertIn('E_A,', c)
        # introspection: the command, the event, the value, the branch,
        # the member and the types only they use are gone
        names = [e['name'] for e in ents]
        self.assertIn('run-u', names)
        for gone in ('run-c', 'EV_C', '"b"', 'secret-b', 'only-member',
                     'extra'):
            self.assertNotIn(gone, text)
        enums = [e for e in ents if e['meta-type'] == 'enum']
        self.assertEqual([e['values'] for e in enums], [['a']])
        # the reference lists everything, marked
        self.assertIn('### Command `run-c`', ref)
        self.assertIn('Condition: `FEAT_C` (not built: blockd does not '
                      'know this command).', ref)
        self.assertIn('| `b` | bee (if `FEAT_B`: not built) |', ref)
        self.assertIn('| `b` | `SB` (if `FEAT_B`: not built) |', ref)
        self.assertIn('(if `FEAT_C`: not built)', ref)
        self.assertIn('| `FEAT_B` | no | doc of FEAT_B |', ref)

    def test_enabled(self):
        s, c, text, ents, ref = self.gen_all(['FEAT_B', 'FEAT_C'])
        self.assertEqual([x.name for x in s.commands], ['run-u', 'run-c'])
        self.assertEqual([x.name for x in s.events], ['EV_C'])
        for there in ('qmp_run_c', '"run-c"', 'E_B', 'u.b', 'extra',
                      'qapi_event_send_ev_c'):
            self.assertIn(there, c)
        for there in ('run-c', 'EV_C', 'secret-b', 'only-member', 'extra'):
            self.assertIn(there, text)
        self.assertIn('Condition: `FEAT_C`.', ref)
        self.assertIn('| `b` | bee (if `FEAT_B`) |', ref)
        self.assertIn('| `FEAT_B` | yes | doc of FEAT_B |', ref)

    def test_one_of_two(self):
        s, c, text, ents, ref = self.gen_all(['FEAT_B'])
        self.assertIn('E_B', c)
        self.assertNotIn('qmp_run_c', c)

    def bad(self, defs, words, conditions=('F',), enabled=()):
        with self.assertRaises(gen.SchemaError) as cm:
            load(defs, list(conditions), list(enabled))
        self.assertIn(words, str(cm.exception))

    def test_checks(self):
        cmd = {'command': 'c', 'doc': 'x', 'if': 'NOPE'}
        self.bad([cmd], "'NOPE', which is not declared")
        self.bad([], "'G' is not declared", enabled=['G'])
        self.bad([], 'UPPER_CASE', conditions=['lower'])
        self.bad([dict(enum('E', ['a']), **{'if': 'F'})],
                 'on a type is not supported')
        # a branch of a conditional value needs the same condition
        self.bad([{'enum': 'E', 'doc': 'x',
                   'data': ['a', {'name': 'b', 'if': 'F'}]},
                  {'struct': 'S', 'doc': 'x', 'data': {}},
                  {'union': 'U', 'base': {'t': 'E'}, 'discriminator': 't',
                   'data': {'b': 'S'}, 'doc': 'x'}], 'needs "if"')
        # the discriminator itself cannot be conditional
        self.bad([enum('E', ['a']),
                  {'union': 'U', 'discriminator': 't', 'doc': 'x',
                   'base': {'t': {'type': 'E', 'if': 'F'}}, 'data': {}}],
                 'without "if"')
        # a built member's default must be a built value
        self.bad([{'enum': 'E', 'doc': 'x',
                   'data': ['a', {'name': 'b', 'if': 'F'}]},
                  {'struct': 'S', 'doc': 'x',
                   'data': {'*m': {'type': 'E', 'default': 'b'}}}],
                 'not built')
        # an entry that is not built is still checked
        self.bad([{'command': 'c', 'doc': 'x', 'if': 'F',
                   'data': {'a': 'Nope'}}], "unknown type 'Nope'")
        self.bad([{'alternate': 'A', 'doc': 'x',
                   'data': {'s': {'type': 'str', 'if': 'F'}}}],
                 'no branch is built')

    def test_command_line_enable(self):
        d = tempfile.mkdtemp(dir=TMP)
        with open(os.path.join(d, 'm.json'), 'w') as f:
            json.dump(self.DEFS, f)
        with open(os.path.join(d, 'schema.json'), 'w') as f:
            json.dump({'include': ['m.json'],
                       'conditions': {'FEAT_B': 'b', 'FEAT_C': 'c'}}, f)
        for enable, want in (('', False), ('FEAT_C', True),
                             ('FEAT_B,FEAT_C', True)):
            p = subprocess.run([sys.executable,
                                os.path.join(os.path.dirname(HERE),
                                             'gen.py'),
                                '--schema', os.path.join(d, 'schema.json'),
                                '--output-dir', d, '--enable', enable],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(d, 'qapi-cmdtable.c')) as f:
                self.assertEqual('"run-c"' in f.read(), want)


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
        for c in s.all_commands:
            self.assertTrue(c.doc, c.name)
            if c.args_type.implicit:
                for m in c.args_type.all_members:
                    self.assertTrue(m.doc, '%s.%s' % (c.name, m.name))

    def test_real_schema_every_condition(self):
        """Each condition can be turned on alone, or all of them: the
        schema stays valid and gen.py writes its files."""
        root = os.path.dirname(HERE)
        path = os.path.join(root, 'schema.json')
        conds = list(gen.Schema(path).conditions)
        self.assertTrue(conds)
        for enabled in [[c] for c in conds] + [conds]:
            s = gen.Schema(path, enabled)
            g = gen.CGen(s)
            g.types_h()
            g.types_c()
            g.cmdtable_c()
            g.commands_c()
            g.introspect()
            gen.reference(s)
        self.assertEqual(len(s.commands), len(s.all_commands))


if __name__ == '__main__':
    r = unittest.main(exit=False, verbosity=1).result
    print('%d passed, %d failed' % (r.testsRun - len(r.failures)
                                     - len(r.errors),
                                     len(r.failures) + len(r.errors)))
    sys.exit(0 if r.wasSuccessful() else 1)
