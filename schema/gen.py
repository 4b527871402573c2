#!/usr/bin/env python3
"""gen.py - turn the QMP schema (schema/*.json) into C, introspection
data and the reference manual.

Usage: gen.py --schema schema/schema.json --output-dir DIR

The contract of the generated code is docs/schema.md.  Standard library
only: this runs at build time wherever meson runs.
"""

import argparse
import json
import os
import re
import sys

C_KEYWORDS = {
    'auto', 'break', 'case', 'char', 'const', 'continue', 'default', 'do',
    'double', 'else', 'enum', 'extern', 'float', 'for', 'goto', 'if',
    'inline', 'int', 'long', 'register', 'restrict', 'return', 'short',
    'signed', 'sizeof', 'static', 'struct', 'switch', 'typedef', 'union',
    'unsigned', 'void', 'volatile', 'while', '_Bool', '_Complex',
    '_Imaginary', 'bool', 'true', 'false', 'asm', 'typeof',
    # gnu11 predefines these as macros, and errno is one too
    'unix', 'linux', 'i386', 'errno',
}


class SchemaError(Exception):
    pass


def c_name(name, protect=True):
    """A schema name as a C identifier: '-' and '.' become '_'."""
    n = re.sub(r'[^A-Za-z0-9_]', '_', name)
    if protect and (n in C_KEYWORDS or n[:1].isdigit()):
        n = 'q_' + n
    return n


def camel_to_upper(value):
    """BlockdevDriver -> BLOCKDEV_DRIVER (QEMU's rule)."""
    s = c_name(value, False)
    if s.isupper():
        return s
    out = ''
    for i, ch in enumerate(s):
        if ch.isupper() and i > 0 and s[i - 1] != '_':
            if i < len(s) - 1 and s[i + 1].islower():
                out += '_'
            elif s[i - 1].isdigit() or s[i - 1].islower():
                out += '_'
        out += ch
    return out.lstrip('_').upper()


def camel_from_cmd(name):
    """blockdev-add -> BlockdevAdd."""
    return ''.join(p[:1].upper() + p[1:] for p in re.split(r'[-_.]', name)
                   if p)


def qemu_dict_order(names):
    """names in the order QEMU writes the members of a JSON object.

    QEMU builds event data in a QDict, a hash table of 512 buckets, and
    prints it bucket by bucket; a bucket lists its newest member first.
    So its order is neither the declaration order nor sorted (e.g.
    JOB_STATUS_CHANGE is declared id, status and printed status, id).
    The bucket is gdbm's string hash (as tdb and module-init-tools use
    it) modulo 512.  Tests that compare text output with QEMU's (the
    qsd-jobs iotest) need the same order."""
    def bucket(name):
        raw = name.encode()
        h = (0x238F13AF * len(raw)) & 0xffffffff
        for i, ch in enumerate(raw):
            h = (h + (ch << (i * 5 % 24))) & 0xffffffff
        return ((1103515243 * h + 12345) & 0xffffffff) % 512
    pos = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (bucket(n), -pos[n]))


def c_string(s):
    """A C string literal for s (ASCII only, escaped)."""
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == '\\':
            out.append('\\\\')
        elif ch == '\n':
            out.append('\\n')
        elif 32 <= o < 127:
            out.append(ch)
        elif o < 128:
            out.append('\\%03o' % o)
        else:
            for b in ch.encode('utf-8'):
                out.append('\\%03o' % b)
    return '"' + ''.join(out) + '"'


# --------------------------------------------------------------------
# Types

class Type:
    kind = None
    implicit = False
    module = None
    doc = ''
    features = ()
    built = True        # False: the C code leaves it out (see Schema)

    def __init__(self, name):
        self.name = name

    def list_name(self):
        return self.name + 'List'

    def is_scalar(self):
        return False

    # C type of a member (field) of this type
    def c_type(self):
        raise NotImplementedError

    # C type of an event parameter / a const view of the field
    def c_param_type(self):
        return self.c_type()

    def parse_fn(self):
        return 'qapi_parse_' + self.name

    def to_json(self, expr):
        return 'qapi_%s_to_json(%s)' % (self.name, expr)

    # a statement writing expr's JSON text to QText *t
    def to_text(self, expr):
        return 'qapi_%s_to_text(t, %s);' % (self.name, expr)

    def free_stmt(self, expr):
        return None

    # name used by query-qmp-schema before masking
    def intro_name(self):
        return self.name

    def doc_name(self):
        return self.name


class Builtin(Type):
    kind = 'builtin'

    # name: (C type of a field, family, json-type in query-qmp-schema).
    # The range checks live in the C runtime (RUNTIME_C below).
    TABLE = {
        'str': ('char *', 'str', 'string'),
        'bool': ('bool', 'bool', 'boolean'),
        'int': ('int64_t', 'int', 'int'),
        'int8': ('int64_t', 'int', 'int'),
        'int16': ('int64_t', 'int', 'int'),
        'int32': ('int64_t', 'int', 'int'),
        'int64': ('int64_t', 'int', 'int'),
        'uint8': ('uint32_t', 'uint', 'int'),
        'uint16': ('uint32_t', 'uint', 'int'),
        'uint32': ('uint32_t', 'uint', 'int'),
        'uint64': ('uint64_t', 'uint', 'int'),
        'size': ('uint64_t', 'size', 'int'),
        'number': ('double', 'number', 'number'),
        'any': ('json_object *', 'any', 'value'),
        'null': ('bool', 'null', 'null'),
    }

    def __init__(self, name):
        super().__init__(name)
        self.ctype, self.family, self.json_type = self.TABLE[name]

    def is_scalar(self):
        return True

    def c_type(self):
        return self.ctype

    def c_param_type(self):
        if self.name == 'str':
            return 'const char *'
        return self.ctype

    def to_json(self, expr):
        f = self.family
        if f == 'str':
            return 'json_object_new_string((%s) ? (%s) : "")' % (expr, expr)
        if f == 'bool':
            return 'json_object_new_boolean(%s)' % expr
        if f == 'int':
            return 'json_object_new_int64(%s)' % expr
        if f in ('uint', 'size'):
            return 'json_object_new_uint64(%s)' % expr
        if f == 'number':
            return 'json_object_new_double(%s)' % expr
        if f == 'any':
            return 'json_object_get(%s)' % expr
        return 'NULL'

    def to_text(self, expr):
        f = self.family
        if f == 'str':
            return 'qtext_str(t, (%s) ? (%s) : "");' % (expr, expr)
        if f == 'bool':
            return 'qtext_raw(t, (%s) ? "true" : "false");' % expr
        if f == 'int':
            return 'qtext_int(t, %s);' % expr
        if f in ('uint', 'size'):
            return 'qtext_uint(t, %s);' % expr
        if f == 'number':
            return 'qtext_double(t, %s);' % expr
        if f == 'any':
            return 'qtext_value(t, %s);' % expr
        return 'qtext_raw(t, "null");'

    def free_stmt(self, expr):
        if self.family == 'str':
            return 'free(%s);' % expr
        if self.family == 'any':
            return 'json_object_put(%s);' % expr
        return None

    def intro_name(self):
        if self.family in ('int', 'uint', 'size'):
            return 'int'
        return self.name


class Member:
    def __init__(self, name, typeref, optional, doc='', default=None,
                 has_default=False, features=(), cond=None, built=True):
        self.name = name
        self.typeref = typeref
        self.type = None
        self.optional = optional
        self.doc = doc
        self.default = default
        self.has_default = has_default
        self.features = features
        self.cond = cond                # 'if': a condition name or None
        self.built = built              # cond is None or enabled
        self.c = c_name(name)


class Enum(Type):
    kind = 'enum'

    def __init__(self, name, values, prefix=None, enabled=None):
        super().__init__(name)
        # [(name, doc, features, cond)]: every value (the reference), and
        # the values built (everything else)
        self.all_values = values
        self.values = [v for v in values
                       if v[3] is None or enabled is None or v[3] in enabled]
        self.prefix = prefix or camel_to_upper(name)

    def is_scalar(self):
        return True

    def c_type(self):
        return self.name

    def const(self, value):
        return '%s_%s' % (self.prefix, c_name(value, False).upper())

    def to_json(self, expr):
        return 'json_object_new_string(%s_str(%s))' % (self.name, expr)

    def to_text(self, expr):
        return 'qtext_str(t, %s_str(%s));' % (self.name, expr)


class Boxed(Type):
    """A type held by pointer to its generated C struct, freed by its
    generated qapi_free_T: structs, unions, alternates and arrays."""

    def c_type(self):
        return self.name + ' *'

    def c_param_type(self):
        return 'const %s *' % self.name

    def free_stmt(self, expr):
        return 'qapi_free_%s(%s);' % (self.name, expr)


class Struct(Boxed):
    kind = 'struct'

    def __init__(self, name, base, members):
        super().__init__(name)
        self.base_name = base
        self.own_members = members
        self.all_members = None         # flattened, base first
        self.members = None             # the built ones of all_members


class Union(Boxed):
    kind = 'union'

    def __init__(self, name, base, discriminator, branches):
        super().__init__(name)
        self.base_spec = base
        self.discriminator = discriminator
        self.branch_refs = branches     # case -> struct name
        self.all_members = None
        self.members = None
        self.all_branches = None        # [(case, Struct, cond)]
        self.branches = None            # built ones: [(case, Struct)]
        self.tag = None


class Alternate(Boxed):
    kind = 'alternate'

    QTYPES = {'object': 'QTYPE_QDICT', 'string': 'QTYPE_QSTRING',
              'number': 'QTYPE_QNUM', 'boolean': 'QTYPE_QBOOL',
              'null': 'QTYPE_QNULL', 'array': 'QTYPE_QLIST'}

    def __init__(self, name, branches):
        super().__init__(name)
        self.branch_refs = branches     # [(bname, typeref)]
        self.all_branches = None        # [(bname, c, Type, jsonkind, cond)]
        self.branches = None            # built: [(bname, c, Type, jsonkind)]


class Array(Boxed):
    kind = 'array'

    def __init__(self, elem):
        super().__init__(elem.list_name())
        self.elem = elem

    def intro_name(self):
        return '[' + self.elem.intro_name() + ']'

    def doc_name(self):
        return '[' + self.elem.doc_name() + ']'


class Command:
    def __init__(self, d, module):
        self.name = d['command']
        self.module = module
        self.doc = d.get('doc', '')
        self.data = d.get('data')
        self.boxed = d.get('boxed', False)
        self.returns = d.get('returns')
        self.returns_json = d.get('returns-json', False)
        self.allow_oob = d.get('allow-oob', False)
        self.features = d.get('features', [])
        self.cond = None
        self.built = True
        self.c = c_name(self.name, False)
        self.args_type = None
        self.ret_type = None


class Event:
    def __init__(self, d, module):
        self.name = d['event']
        self.module = module
        self.doc = d.get('doc', '')
        self.data = d.get('data')
        self.features = d.get('features', [])
        self.cond = None
        self.built = True
        self.args_type = None


# --------------------------------------------------------------------
# Loading and checking

class Schema:
    """The schema.  enabled names the conditions built in: an entry with
    "if": NAME is in every check and in the reference, but the C code,
    the dispatch table and query-qmp-schema see it only when NAME is
    enabled (self.commands, self.events, Enum.values, .members and
    .branches hold the built entries; all_* hold every one)."""

    def __init__(self, path, enabled=()):
        self.types = {}
        self.order = []             # named types in definition order
        self.arrays = {}
        self.all_commands = []
        self.commands = []          # the built ones
        self.all_events = []
        self.events = []
        self.modules = []           # (file, title, doc, [entries])
        self.conditions = {}        # condition name -> doc
        self.enabled = set(enabled)
        for n in Builtin.TABLE:
            self.types[n] = Builtin(n)
        self._load(path)
        self._resolve()
        self.commands = [c for c in self.all_commands if c.built]
        self.events = [e for e in self.all_events if e.built]

    def _load(self, path):
        with open(path) as f:
            top = json.load(f)
        if isinstance(top, dict):
            files = top.get('include', [])
            self.conditions = top.get('conditions', {})
        else:
            files = top
        for n in self.conditions:
            if not re.match(r'^[A-Z][A-Z0-9_]*$', n):
                raise SchemaError('condition %r: must be UPPER_CASE' % n)
        for n in self.enabled:
            if n not in self.conditions:
                raise SchemaError('enabled condition %r is not declared in '
                                  '"conditions"' % n)
        base = os.path.dirname(path)
        for fn in files:
            self._load_module(os.path.join(base, fn), fn)

    def _cond(self, d, where):
        """The condition of definition d (its "if"), or None."""
        if not isinstance(d, dict) or 'if' not in d:
            return None
        c = d['if']
        if c not in self.conditions:
            raise SchemaError('%s: "if" names %r, which is not declared in '
                              '"conditions"' % (where, c))
        return c

    def is_built(self, cond):
        return cond is None or cond in self.enabled

    def _add_type(self, t):
        if t.name in self.types:
            raise SchemaError('%s: duplicate definition' % t.name)
        self.types[t.name] = t
        self.order.append(t)

    def _load_module(self, path, fn):
        with open(path) as f:
            try:
                defs = json.load(f)
            except ValueError as e:
                raise SchemaError('%s: %s' % (fn, e))
        if not isinstance(defs, list):
            raise SchemaError('%s: must be a JSON array' % fn)
        title = os.path.splitext(os.path.basename(fn))[0]
        mdoc = ''
        entries = []
        for d in defs:
            if 'doc' not in d:
                raise SchemaError('%s: definition without doc: %r'
                                  % (fn, d))
            if 'module' in d:
                title = d['module']
                mdoc = d['doc']
                continue
            if 'section' in d:
                entries.append(('section', d['section'], d['doc']))
                continue
            t = None
            if 'if' in d and 'command' not in d and 'event' not in d:
                raise SchemaError('%s: "if" on a type is not supported (put '
                                  'it on what uses the type): %r' % (fn, d))
            if 'enum' in d:
                vals = []
                for v in d['data']:
                    if isinstance(v, dict):
                        vals.append((v['name'], v.get('doc', ''),
                                     v.get('features', []),
                                     self._cond(v, '%s.%s'
                                                % (d['enum'], v['name']))))
                    else:
                        vals.append((v, '', [], None))
                t = Enum(d['enum'], vals, d.get('prefix'), self.enabled)
            elif 'struct' in d:
                t = Struct(d['struct'], d.get('base'),
                           self._members(d.get('data', {}), d['struct']))
            elif 'union' in d:
                t = Union(d['union'], d['base'], d['discriminator'],
                          d.get('data', {}))
            elif 'alternate' in d:
                t = Alternate(d['alternate'], list(d['data'].items()))
            elif 'command' in d:
                c = Command(d, title)
                c.cond = self._cond(d, c.name)
                c.built = self.is_built(c.cond)
                self.all_commands.append(c)
                entries.append(('command', c))
                continue
            elif 'event' in d:
                e = Event(d, title)
                e.cond = self._cond(d, e.name)
                e.built = self.is_built(e.cond)
                self.all_events.append(e)
                entries.append(('event', e))
                continue
            else:
                raise SchemaError('%s: unknown definition %r' % (fn, d))
            t.doc = d['doc']
            t.module = title
            t.features = d.get('features', [])
            self._add_type(t)
            entries.append(('type', t))
        self.modules.append((fn, title, mdoc, entries))

    def _members(self, data, owner):
        if not isinstance(data, dict):
            raise SchemaError('%s: members must be an object' % owner)
        out = []
        for key, val in data.items():
            opt = key.startswith('*')
            name = key[1:] if opt else key
            doc = ''
            default = None
            has_default = False
            feats = []
            cond = self._cond(val, '%s.%s' % (owner, name))
            if isinstance(val, dict):
                doc = val.get('doc', '')
                feats = val.get('features', [])
                if 'default' in val:
                    default = val['default']
                    has_default = True
                    if not opt:
                        raise SchemaError('%s.%s: default on a mandatory '
                                          'member' % (owner, name))
                val = val['type']
            out.append(Member(name, val, opt, doc, default, has_default,
                              feats, cond, self.is_built(cond)))
        return out

    def lookup(self, ref, where):
        if isinstance(ref, list):
            if len(ref) != 1:
                raise SchemaError('%s: bad array type %r' % (where, ref))
            ref = '[' + ref[0] + ']'
        if ref.startswith('[') and ref.endswith(']'):
            elem = self.lookup(ref[1:-1], where)
            if elem.kind == 'array':
                raise SchemaError('%s: nested arrays' % where)
            a = self.arrays.get(elem.name)
            if a is None:
                a = Array(elem)
                self.arrays[elem.name] = a
            return a
        t = self.types.get(ref)
        if t is None:
            raise SchemaError('%s: unknown type %r' % (where, ref))
        return t

    def _resolve_members(self, members, where):
        for m in members:
            m.type = self.lookup(m.typeref, '%s.%s' % (where, m.name))
            if m.type.kind == 'builtin' and m.type.name == 'null':
                raise SchemaError('%s.%s: null is only an alternate branch'
                                  % (where, m.name))
            if m.has_default:
                self._check_default(m, where)

    def _check_default(self, m, where):
        t = m.type
        v = m.default
        ok = False
        if t.kind == 'enum':
            ok = v in [x[0] for x in t.all_values]
            if ok and m.built and v not in [x[0] for x in t.values]:
                raise SchemaError('%s.%s: default %r is not built'
                                  % (where, m.name, v))
        elif t.kind == 'builtin':
            f = t.family
            if f == 'str':
                ok = isinstance(v, str)
            elif f == 'bool':
                ok = isinstance(v, bool)
            elif f in ('int', 'uint', 'size'):
                ok = isinstance(v, int) and not isinstance(v, bool)
                if f != 'int' and ok:
                    ok = v >= 0
            elif f == 'number':
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            raise SchemaError('%s.%s: bad default %r' % (where, m.name, v))

    def _flatten(self, t, seen=()):
        """Every member of struct t, base first (t.all_members); the built
        ones go to t.members."""
        if t.all_members is not None:
            return t.all_members
        if t.name in seen:
            raise SchemaError('%s: base loop' % t.name)
        members = []
        if t.base_name:
            b = self.lookup(t.base_name, t.name)
            if b.kind != 'struct':
                raise SchemaError('%s: base must be a struct' % t.name)
            members += self._flatten(b, seen + (t.name,))
        self._resolve_members(t.own_members, t.name)
        members += t.own_members
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise SchemaError('%s: duplicate member' % t.name)
        t.all_members = members
        t.members = [m for m in members if m.built]
        return members

    def _implicit_struct(self, name, data, where):
        s = Struct(name, None, self._members(data, where))
        s.implicit = True
        s.doc = 'Arguments of %s.' % where
        self._flatten(s)
        self.types[name] = s
        self.order.append(s)
        return s

    def _resolve(self):
        for t in list(self.order):
            if t.kind == 'struct':
                self._flatten(t)
        for t in list(self.order):
            if t.kind == 'union':
                self._resolve_union(t)
            elif t.kind == 'alternate':
                self._resolve_alternate(t)
        for c in self.all_commands:
            c.args_type = self._args_type(c.data, 'Qmp%sArgs'
                                          % camel_from_cmd(c.name), c.name)
            if c.args_type.implicit:
                c.args_type.built = c.built
            if c.returns is not None:
                c.ret_type = self.lookup(c.returns, c.name)
        for e in self.all_events:
            if isinstance(e.data, str):
                t = self.lookup(e.data, e.name)
                if t.kind != 'struct':
                    raise SchemaError('%s: data must be a struct' % e.name)
                e.args_type = t
            else:
                s = Struct('QapiEvent%sArgs' % camel_from_cmd(e.name.lower()),
                           None, self._members(e.data or {}, e.name))
                s.implicit = True
                self._flatten(s)
                e.args_type = s
        names = ([c.name for c in self.all_commands] +
                 [e.name for e in self.all_events])
        if len(set(names)) != len(names):
            raise SchemaError('duplicate command or event name')

    def _args_type(self, data, cname, where):
        if data is None:
            data = {}
        if isinstance(data, str):
            t = self.lookup(data, where)
            if t.kind not in ('struct', 'union'):
                raise SchemaError('%s: data must be a struct or union'
                                  % where)
            return t
        return self._implicit_struct(cname, data, where)

    def _resolve_union(self, u):
        if isinstance(u.base_spec, str):
            b = self.lookup(u.base_spec, u.name)
            if b.kind != 'struct':
                raise SchemaError('%s: base must be a struct' % u.name)
            u.all_members = self._flatten(b)
        else:
            ms = self._members(u.base_spec, u.name)
            self._resolve_members(ms, u.name)
            u.all_members = ms
        u.members = [m for m in u.all_members if m.built]
        tag = [m for m in u.all_members if m.name == u.discriminator]
        if not tag or tag[0].optional or tag[0].type.kind != 'enum' or \
                tag[0].cond is not None:
            raise SchemaError('%s: discriminator must be a mandatory enum '
                              'member of the base, without "if"' % u.name)
        u.tag = tag[0]
        values = {v[0]: v[3] for v in u.tag.type.all_values}
        u.all_branches = []
        u.branches = []
        for case, ref in u.branch_refs.items():
            if case not in values:
                raise SchemaError('%s: %s is not a value of %s'
                                  % (u.name, case, u.tag.type.name))
            cond = self._cond(ref, '%s.%s' % (u.name, case))
            if values[case] is not None and cond != values[case]:
                raise SchemaError('%s: branch %s needs "if": %r like the '
                                  'value %s of %s' % (u.name, case,
                                                      values[case], case,
                                                      u.tag.type.name))
            if isinstance(ref, dict):
                ref = ref['type']
            s = self.lookup(ref, u.name)
            if s.kind != 'struct':
                raise SchemaError('%s: branch %s must be a struct'
                                  % (u.name, case))
            self._flatten(s)
            clash = set(m.name for m in s.all_members) & \
                set(m.name for m in u.all_members)
            if clash:
                raise SchemaError('%s: branch %s clashes on %s'
                                  % (u.name, case, clash))
            u.all_branches.append((case, s, cond))
            if self.is_built(cond):
                u.branches.append((case, s))

    def _resolve_alternate(self, a):
        a.all_branches = []
        a.branches = []
        kinds = set()
        for bname, ref in a.branch_refs:
            cond = self._cond(ref, '%s.%s' % (a.name, bname))
            if isinstance(ref, dict):
                ref = ref['type']
            t = self.lookup(ref, a.name)
            if t.kind in ('struct', 'union'):
                k = 'object'
            elif t.kind == 'enum':
                k = 'string'
            elif t.kind == 'array':
                k = 'array'
            elif t.kind == 'builtin':
                k = {'str': 'string', 'bool': 'boolean', 'int': 'number',
                     'uint': 'number', 'size': 'number',
                     'number': 'number', 'null': 'null'}.get(t.family)
                if k is None:
                    raise SchemaError('%s: bad branch type %s'
                                      % (a.name, t.name))
            else:
                raise SchemaError('%s: bad branch type %s' % (a.name, t.name))
            if k in kinds:
                raise SchemaError('%s: ambiguous branches' % a.name)
            kinds.add(k)
            a.all_branches.append((bname, c_name(bname), t, k, cond))
            if self.is_built(cond):
                a.branches.append((bname, c_name(bname), t, k))
        if not a.branches:
            raise SchemaError('%s: no branch is built' % a.name)

    def all_arrays(self):
        return sorted(self.arrays.values(), key=lambda a: a.name)

    def c_types(self):
        """The named types the C code has: all but the arguments of
        commands that are not built."""
        return [t for t in self.order if t.built]


# --------------------------------------------------------------------
# C output helpers

HDR = '/* Generated by schema/gen.py: do not edit. */\n'


def struct_fields(members, indent='    '):
    out = []
    for m in members:
        if m.optional:
            out.append('%sbool has_%s;' % (indent, m.c))
        out.append('%s%s%s%s;' % (indent, m.type.c_type(),
                                  '' if m.type.c_type().endswith('*') else ' ',
                                  m.c))
    return out


def decl(ctype, name):
    if ctype.endswith('*'):
        return ctype + name
    return ctype + ' ' + name


def default_expr(m):
    t = m.type
    v = m.default
    if t.kind == 'enum':
        return t.const(v)
    if t.family == 'str':
        return 'xstrdup(%s)' % c_string(v)
    if t.family == 'bool':
        return 'true' if v else 'false'
    if t.family == 'int':
        return '(int64_t)%dLL' % v if v != -2 ** 63 else 'INT64_MIN'
    if t.family in ('uint', 'size'):
        return '%dULL' % v
    if t.family == 'number':
        return repr(float(v))
    raise SchemaError('no default for %s' % m.name)


def parse_call(t, obj, path, out):
    return '%s(%s, %s, flags, %s, errp)' % (t.parse_fn(), obj, path, out)


class CGen:
    def __init__(self, schema):
        self.s = schema

    # ---- qapi-types.h
    def types_h(self):
        s = self.s
        o = [HDR, '#ifndef BLOCKD_QAPI_TYPES_H', '#define BLOCKD_QAPI_TYPES_H',
             '', '#include <json-c/json.h>', '#include <stdbool.h>',
             '#include <stddef.h>', '#include <stdint.h>', '',
             '#include "util/error.h"', '#include "util/json.h"', '',
             '/* Accept JSON strings for scalars and convert them by the',
             ' * member type, like QEMU\'s keyval visitor. */',
             '#define QAPI_PARSE_KEYVAL 1u', '',
             '/* The JSON kind an alternate holds. */',
             'typedef enum QType {',
             '    QTYPE_NONE,', '    QTYPE_QNULL,', '    QTYPE_QNUM,',
             '    QTYPE_QSTRING,', '    QTYPE_QDICT,', '    QTYPE_QLIST,',
             '    QTYPE_QBOOL,', '} QType;', '',
             '/* Add member key (a string literal of the schema, unique in',
             ' * its object: the schema allows no two members of one name)',
             ' * to o: json-c neither copies the key nor looks for an',
             ' * existing one, which halves the cost of a large reply. */',
             'static inline void qapi_add_member(json_object *o, '
             'const char *key,',
             '                                   json_object *val)',
             '{',
             '    json_object_object_add_ex(o, key, val,',
             '                              JSON_C_OBJECT_ADD_KEY_IS_NEW |',
             '                              JSON_C_OBJECT_KEY_IS_CONSTANT);',
             '}', '']
        o.append('/* Built-in scalar parsers (same contract as '
                 'qapi_parse_T). */')
        for n, b in Builtin.TABLE.items():
            o.append('bool qapi_parse_%s(json_object *obj, const char *name, '
                     'unsigned flags,' % n)
            o.append('    %s, Error **errp);' % decl(b[0], '*out'))
        o.append('')
        # enums
        for t in s.c_types():
            if t.kind != 'enum':
                continue
            o.append('/* %s */' % t.name)
            o.append('typedef enum %s {' % t.name)
            for v in t.values:
                o.append('    %s,' % t.const(v[0]))
            o.append('    %s__MAX,' % t.prefix)
            o.append('} %s;' % t.name)
            o.append('extern const char *const %s_names[%s__MAX];'
                     % (t.name, t.prefix))
            o.append('/* The wire name of v ("" if out of range). */')
            o.append('const char *%s_str(%s v);' % (t.name, t.name))
            o.append('/* The value named s, or -1. */')
            o.append('int %s_lookup(const char *s);' % t.name)
            o.append('bool qapi_parse_%s(json_object *obj, const char *name,'
                     ' unsigned flags,' % t.name)
            o.append('    %s *out, Error **errp);' % t.name)
            o.append('json_object *qapi_%s_to_json(%s v);' % (t.name, t.name))
            o.append('')
        # forward declarations
        for t in s.c_types():
            if t.kind in ('struct', 'union', 'alternate'):
                o.append('typedef struct %s %s;' % (t.name, t.name))
        for a in s.all_arrays():
            o.append('typedef struct %s %s;' % (a.name, a.name))
        o.append('')
        # structs, then unions (they embed structs by value)
        for kind in ('struct', 'union', 'alternate'):
            for t in s.c_types():
                if t.kind == kind:
                    o += self._type_decl(t)
        for a in s.all_arrays():
            o.append('/* An array of %s. */' % a.elem.doc_name())
            o.append('struct %s {' % a.name)
            o.append('    size_t n;')
            o.append('    %s;' % decl(a.elem.c_type(), '*v'))
            o.append('};')
            o += self._protos(a)
        o += ['', '#endif', '']
        return '\n'.join(o)

    def _protos(self, t):
        return [
            'bool qapi_parse_%s(json_object *obj, const char *name, '
            'unsigned flags,' % t.name,
            '    %s **out, Error **errp);' % t.name,
            'json_object *qapi_%s_to_json(const %s *v);' % (t.name, t.name),
            '/* The same value as JSON text (see util/json.h). */',
            'void qapi_%s_to_text(QText *t, const %s *v);' % (t.name, t.name),
            'void qapi_free_%s(%s *v);' % (t.name, t.name),
            '']

    def _type_decl(self, t):
        o = ['/* %s */' % t.name, 'struct %s {' % t.name]
        if t.kind == 'alternate':
            o.append('    QType type;')
            fields = ['        %s;' % decl(ty.c_type(), c)
                      for (_, c, ty, k) in t.branches if k != 'null']
            if fields:
                o.append('    union {')
                o += fields
                o.append('    } u;')
        else:
            fields = struct_fields(t.members)
            o += fields
            if t.kind == 'union':
                if t.branches:
                    o.append('    union {')
                    for case, st in t.branches:
                        o.append('        %s %s;' % (st.name, c_name(case)))
                    o.append('    } u;')
            elif not fields:
                o.append('    char unused_;')
        o.append('};')
        o += self._protos(t)
        return o

    # ---- qapi-types.c
    def types_c(self):
        s = self.s
        o = [HDR, '#include <errno.h>', '#include <stdlib.h>',
             '#include <string.h>', '', '#include "qapi-types.h"',
             '#include "util/cleanup.h"', '#include "util/util.h"', '',
             RUNTIME_C]
        for t in s.c_types():
            if t.kind == 'enum':
                o += self._enum_c(t)
        # static helpers need prototypes: unions call branch fillers
        for t in s.c_types():
            if t.kind in ('struct', 'union'):
                o.append('static bool qapi_fill_%s(json_object *obj, const '
                         'char *name, unsigned flags,' % t.name)
                o.append('    %s *v, Error **errp);' % t.name)
                o.append('static void qapi_add_%s(json_object *o, const %s '
                         '*v);' % (t.name, t.name))
                o.append('static void qapi_text_%s(QText *t, const %s *v, '
                         'bool *first);' % (t.name, t.name))
                o.append('static void qapi_clear_%s(%s *v);'
                         % (t.name, t.name))
        o.append('')
        for t in s.c_types():
            if t.kind == 'struct':
                o += self._struct_c(t)
            elif t.kind == 'union':
                o += self._struct_c(t)
            elif t.kind == 'alternate':
                o += self._alternate_c(t)
        for a in s.all_arrays():
            o += self._array_c(a)
        return '\n'.join(o)

    def _enum_c(self, t):
        o = ['const char *const %s_names[%s__MAX] = {' % (t.name, t.prefix)]
        for v in t.values:
            o.append('    [%s] = %s,' % (t.const(v[0]), c_string(v[0])))
        o += ['};', '',
              'const char *%s_str(%s v)' % (t.name, t.name), '{',
              '    if ((unsigned)v >= %s__MAX) {' % t.prefix,
              '        return "";', '    }',
              '    return %s_names[v];' % t.name, '}', '',
              'int %s_lookup(const char *s)' % t.name, '{',
              '    return qapi_enum_lookup(%s_names, %s__MAX, s);'
              % (t.name, t.prefix), '}', '',
              'bool qapi_parse_%s(json_object *obj, const char *name, '
              'unsigned flags,' % t.name,
              '    %s *out, Error **errp)' % t.name, '{']
        # A value whose condition is not built in is refused by name:
        # the user learns it is missing from this build, not misspelt.
        absent = [v for v in t.all_values if v not in t.values]
        if absent:
            o += ['    static const char *const absent[][2] = {']
            o += ['        { %s, %s },' % (c_string(v[0]), c_string(v[3]))
                  for v in absent]
            o += ['    };', '    const char *s = obj && '
                  'json_object_is_type(obj, json_type_string)',
                  '        ? json_object_get_string(obj) : NULL;',
                  '    int v;', '',
                  '    for (size_t i = 0; s && i < sizeof(absent) / '
                  'sizeof(absent[0]); i++) {',
                  '        if (strcmp(s, absent[i][0]) == 0) {',
                  '            error_setg(errp, "Parameter \'%s\' does '
                  'not accept value \'%s\': blockd was built without "',
                  '                       "%s", qapi_name(name), s, '
                  'absent[i][1]);',
                  '            return false;', '        }', '    }']
        else:
            o += ['    int v;', '']
        o += ['    v = qapi_parse_enum(obj, name, flags, %s_names, '
              '%s__MAX, errp);' % (t.name, t.prefix), '',
              '    if (v < 0) {', '        return false;', '    }',
              '    *out = (%s)v;' % t.name, '    return true;', '}', '',
              'json_object *qapi_%s_to_json(%s v)' % (t.name, t.name), '{',
              '    return json_object_new_string(%s_str(v));' % t.name,
              '}', '']
        return o

    def _fill_members(self, members, o):
        for m in members:
            o.append('    if (json_object_object_get_ex(obj, %s, &m)) {'
                     % c_string(m.name))
            o.append('        CLEANUP_FREE char *p = qapi_path(name, %s);'
                     % c_string(m.name))
            o.append('')
            o.append('        if (!%s) {' % parse_call(m.type, 'm', 'p',
                                                     '&v->' + m.c))
            o.append('            return false;')
            o.append('        }')
            if m.optional:
                o.append('        v->has_%s = true;' % m.c)
            if m.optional and m.has_default:
                o.append('    } else {')
                o.append('        v->%s = %s;' % (m.c, default_expr(m)))
            elif not m.optional:
                o.append('    } else {')
                o.append('        qapi_error_missing(errp, name, %s);'
                         % c_string(m.name))
                o.append('        return false;')
            o.append('    }')

    def _add_members(self, members, o):
        for m in members:
            ind = '    '
            if m.optional:
                o.append('    if (v->has_%s) {' % m.c)
                ind = '        '
            o.append('%sqapi_add_member(o, %s, %s);'
                     % (ind, c_string(m.name), m.type.to_json('v->' + m.c)))
            if m.optional:
                o.append('    }')

    def _text_members(self, members, o):
        for m in members:
            ind = '    '
            if m.optional:
                o.append('    if (v->has_%s) {' % m.c)
                ind = '        '
            o.append('%sqtext_key(t, first, %s);' % (ind, c_string(m.name)))
            o.append('%s%s' % (ind, m.type.to_text('v->' + m.c)))
            if m.optional:
                o.append('    }')

    def _clear_members(self, members, o):
        for m in members:
            st = m.type.free_stmt('v->' + m.c)
            if st:
                o.append('    ' + st)

    def _struct_c(self, t):
        n = t.name
        o = ['/* %s */' % n]
        # member names for the unexpected-member check
        o.append('static const char *const qapi_members_%s[] = {' % n)
        for m in t.members:
            o.append('    %s,' % c_string(m.name))
        o += ['    NULL,', '};', '']
        # fill
        o += ['static bool qapi_fill_%s(json_object *obj, const char *name, '
              'unsigned flags,' % n,
              '    %s *v, Error **errp)' % n, '{',
              '    json_object *m = NULL;', '',
              '    (void)obj;', '    (void)name;', '    (void)flags;',
              '    (void)v;', '    (void)errp;', '    (void)m;']
        self._fill_members(t.members, o)
        if t.kind == 'union' and t.branches:
            o.append('    switch (v->%s) {' % t.tag.c)
            for case, st in t.branches:
                o.append('    case %s:' % t.tag.type.const(case))
                o.append('        return qapi_fill_%s(obj, name, flags, '
                         '&v->u.%s, errp);' % (st.name, c_name(case)))
            o += ['    default:', '        break;', '    }']
        o += ['    return true;', '}', '']
        # branch member lists
        if t.kind == 'union':
            o += ['static const char *const *qapi_branch_members_%s('
                  'const %s *v)' % (n, n), '{']
            if t.branches:
                o.append('    switch (v->%s) {' % t.tag.c)
                for case, st in t.branches:
                    o.append('    case %s:' % t.tag.type.const(case))
                    o.append('        return qapi_members_%s;' % st.name)
                o += ['    default:', '        break;', '    }']
            else:
                o.append('    (void)v;')
            o += ['    return NULL;', '}', '']
            extra = 'qapi_branch_members_%s(v)' % n
        else:
            extra = 'NULL'
        # parse
        o += ['bool qapi_parse_%s(json_object *obj, const char *name, '
              'unsigned flags,' % n,
              '    %s **out, Error **errp)' % n, '{',
              '    %s *v;' % n, '',
              '    if (!qapi_check_object(obj, name, errp)) {',
              '        return false;', '    }',
              '    v = xzalloc(sizeof(*v));',
              '    if (!qapi_fill_%s(obj, name, flags, v, errp) ||' % n,
              '        !qapi_check_unexpected(obj, name, qapi_members_%s,'
              % n,
              '                               %s, errp)) {' % extra,
              '        qapi_free_%s(v);' % n,
              '        return false;', '    }',
              '    *out = v;', '    return true;', '}', '']
        # add
        o += ['static void qapi_add_%s(json_object *o, const %s *v)'
              % (n, n), '{', '    (void)o;', '    (void)v;']
        self._add_members(t.members, o)
        if t.kind == 'union' and t.branches:
            o.append('    switch (v->%s) {' % t.tag.c)
            for case, st in t.branches:
                o.append('    case %s:' % t.tag.type.const(case))
                o.append('        qapi_add_%s(o, &v->u.%s);'
                         % (st.name, c_name(case)))
                o.append('        break;')
            o += ['    default:', '        break;', '    }']
        o += ['}', '',
              'json_object *qapi_%s_to_json(const %s *v)' % (n, n), '{',
              '    json_object *o = json_object_new_object();', '',
              '    if (v) {', '        qapi_add_%s(o, v);' % n, '    }',
              '    return o;', '}', '']
        # text: the same members in the same order as add
        o += ['static void qapi_text_%s(QText *t, const %s *v, bool *first)'
              % (n, n), '{', '    (void)t;', '    (void)v;',
              '    (void)first;']
        self._text_members(t.members, o)
        if t.kind == 'union' and t.branches:
            o.append('    switch (v->%s) {' % t.tag.c)
            for case, st in t.branches:
                o.append('    case %s:' % t.tag.type.const(case))
                o.append('        qapi_text_%s(t, &v->u.%s, first);'
                         % (st.name, c_name(case)))
                o.append('        break;')
            o += ['    default:', '        break;', '    }']
        o += ['}', '',
              'void qapi_%s_to_text(QText *t, const %s *v)' % (n, n), '{',
              '    bool first = true;', '',
              '    qtext_raw(t, "{");',
              '    if (v) {', '        qapi_text_%s(t, v, &first);' % n,
              '    }', '    qtext_raw(t, "}");', '}', '']
        # clear / free
        o += ['static void qapi_clear_%s(%s *v)' % (n, n), '{',
              '    (void)v;']
        self._clear_members(t.members, o)
        if t.kind == 'union' and t.branches:
            o.append('    switch (v->%s) {' % t.tag.c)
            for case, st in t.branches:
                o.append('    case %s:' % t.tag.type.const(case))
                o.append('        qapi_clear_%s(&v->u.%s);'
                         % (st.name, c_name(case)))
                o.append('        break;')
            o += ['    default:', '        break;', '    }']
        o += ['}', '',
              'void qapi_free_%s(%s *v)' % (n, n), '{',
              '    if (v) {', '        qapi_clear_%s(v);' % n,
              '        free(v);', '    }', '}', '']
        return o

    def _alternate_c(self, t):
        n = t.name
        by_kind = {k: (b, c, ty) for (b, c, ty, k) in t.branches}
        kinds = [k for (_, _, _, k) in t.branches]
        expected = ', '.join(kinds[:-1]) + (' or ' if len(kinds) > 1
                                            else '') + kinds[-1]
        o = ['/* %s */' % n,
             'bool qapi_parse_%s(json_object *obj, const char *name, '
             'unsigned flags,' % n,
             '    %s **out, Error **errp)' % n, '{',
             '    %s *v = xzalloc(sizeof(*v));' % n,
             '    enum json_type jt = obj ? json_object_get_type(obj) '
             ': json_type_null;',
             '    bool ok;', '',
             '    (void)flags;',
             '    switch (jt) {']

        def branch(kind, ind='        '):
            b, c, ty = by_kind[kind]
            lines = ['%sv->type = %s;' % (ind, Alternate.QTYPES[kind])]
            if kind == 'null':
                lines.append('%sok = true;' % ind)
            else:
                lines.append('%sok = %s;' % (
                    ind, parse_call(ty, 'obj', 'name', '&v->u.' + c)))
            return lines

        if 'object' in by_kind:
            o.append('    case json_type_object:')
            o += branch('object')
            o.append('        break;')
        if 'array' in by_kind:
            o.append('    case json_type_array:')
            o += branch('array')
            o.append('        break;')
        if 'boolean' in by_kind:
            o.append('    case json_type_boolean:')
            o += branch('boolean')
            o.append('        break;')
        if 'null' in by_kind:
            o.append('    case json_type_null:')
            o += branch('null')
            o.append('        break;')
        if 'number' in by_kind:
            ty = by_kind['number'][2]
            if ty.family == 'number':
                o.append('    case json_type_double:')
            o.append('    case json_type_int:')
            o += branch('number')
            o.append('        break;')
        o.append('    case json_type_string:')
        if 'string' in by_kind:
            o += branch('string')
            o.append('        break;')
        else:
            # keyval: scalars arrive as strings; try the scalar branches
            scal = [k for k in ('null', 'boolean', 'number') if k in by_kind]
            if scal:
                o.append('        if (flags & QAPI_PARSE_KEYVAL) {')
                for k in scal:
                    b, c, ty = by_kind[k]
                    if k == 'null':
                        cond = 'json_object_get_string_len(obj) == 0'
                    elif k == 'boolean':
                        cond = 'qapi_keyval_is_bool(obj)'
                    else:
                        cond = '1'
                    o.append('            if (%s) {' % cond)
                    o += branch(k, '                ')
                    o.append('                break;')
                    o.append('            }')
                o.append('        }')
            o.append('        goto bad_type;')
        o += ['    default:',
              '        goto bad_type;', '    }',
              '    if (!ok) {', '        free(v);', '        return false;',
              '    }', '    *out = v;', '    return true;', '',
              'bad_type:',
              '    free(v);',
              '    qapi_error_type(errp, name, %s);' % c_string(expected),
              '    return false;', '}', '']
        # to_json
        o += ['json_object *qapi_%s_to_json(const %s *v)' % (n, n), '{',
              '    if (!v) {', '        return NULL;', '    }',
              '    switch (v->type) {']
        for (b, c, ty, k) in t.branches:
            o.append('    case %s:' % Alternate.QTYPES[k])
            if k == 'null':
                o.append('        return NULL;')
            else:
                o.append('        return %s;' % ty.to_json('v->u.' + c))
        o += ['    default:', '        return NULL;', '    }', '}', '']
        o += ['void qapi_%s_to_text(QText *t, const %s *v)' % (n, n), '{',
              '    switch (v ? v->type : QTYPE_NONE) {']
        for (b, c, ty, k) in t.branches:
            if k == 'null':
                continue
            o.append('    case %s:' % Alternate.QTYPES[k])
            o.append('        %s' % ty.to_text('v->u.' + c))
            o.append('        break;')
        o += ['    default:', '        qtext_raw(t, "null");',
              '        break;', '    }', '}', '']
        # free
        o += ['void qapi_free_%s(%s *v)' % (n, n), '{',
              '    if (!v) {', '        return;', '    }',
              '    switch (v->type) {']
        for (b, c, ty, k) in t.branches:
            st = ty.free_stmt('v->u.' + c)
            if st:
                o.append('    case %s:' % Alternate.QTYPES[k])
                o.append('        ' + st)
                o.append('        break;')
        o += ['    default:', '        break;', '    }', '    free(v);',
              '}', '']
        return o

    def _array_c(self, a):
        n = a.name
        e = a.elem
        st = e.free_stmt('v->v[i]')
        o = ['/* %s */' % n,
             'bool qapi_parse_%s(json_object *obj, const char *name, '
             'unsigned flags,' % n,
             '    %s **out, Error **errp)' % n, '{',
             '    %s *v;' % n, '    size_t i;', '',
             '    if (!obj || !json_object_is_type(obj, json_type_array)) {',
             '        qapi_error_type(errp, name, "array");',
             '        return false;', '    }',
             '    v = xzalloc(sizeof(*v));',
             '    v->n = json_object_array_length(obj);',
             '    v->v = xcalloc(v->n ? v->n : 1, sizeof(*v->v));',
             '    for (i = 0; i < v->n; i++) {',
             '        CLEANUP_FREE char *p = qapi_path_index(name, i);',
             '        json_object *e = json_object_array_get_idx(obj, i);',
             '',
             '        if (!%s) {' % parse_call(e, 'e', 'p', '&v->v[i]'),
             '            qapi_free_%s(v);' % n,
             '            return false;', '        }', '    }',
             '    *out = v;', '    return true;', '}', '',
             'json_object *qapi_%s_to_json(const %s *v)' % (n, n), '{',
             '    json_object *o = json_object_new_array();', '',
             '    for (size_t i = 0; v && i < v->n; i++) {',
             '        json_object_array_add(o, %s);' % e.to_json('v->v[i]'),
             '    }', '    return o;', '}', '',
             'void qapi_%s_to_text(QText *t, const %s *v)' % (n, n), '{',
             '    qtext_raw(t, "[");',
             '    for (size_t i = 0; v && i < v->n; i++) {',
             '        if (i > 0) {', '            qtext_raw(t, ", ");',
             '        }',
             '        %s' % e.to_text('v->v[i]'),
             '    }', '    qtext_raw(t, "]");', '}', '',
             'void qapi_free_%s(%s *v)' % (n, n), '{',
             '    if (!v) {', '        return;', '    }']
        if st:
            o += ['    for (size_t i = 0; i < v->n; i++) {',
                  '        ' + st, '    }']
        o += ['    free(v->v);', '    free(v);', '}', '']
        return o

    # ---- qapi-commands.h / .c
    def _handler_proto(self, c):
        args = c.args_type.name
        p = 'bool qmp_%s(QmpCtx *ctx, const %s *args' % (c.c, args)
        if c.ret_type is not None:
            if c.returns_json:
                rt = 'json_object *'
            else:
                rt = c.ret_type.c_type()
            p += ', %s' % decl(rt, '*ret')
        p += ', Error **errp)'
        return p

    def cmdtable_h(self):
        o = [HDR, '#ifndef BLOCKD_QAPI_CMDTABLE_H',
             '#define BLOCKD_QAPI_CMDTABLE_H', '',
             '#include <json-c/json.h>', '#include <stdbool.h>',
             '#include <stddef.h>', '',
             '#include "qapi-types.h"', '#include "util/error.h"', '',
             '/* The command table without the handlers: what a client',
             ' * (blockctl) needs to check and convert arguments.  The',
             ' * server\'s side is qapi-commands.h. */', '',
             'typedef bool QmpNormalizeFn(json_object *args, unsigned '
             'flags,',
             '                            json_object **out, Error **errp);',
             '',
             'typedef struct QmpCommand {',
             '    const char *name;            /* "blockdev-add" */',
             '    QmpNormalizeFn *normalize;   /* parse args and print them'
             ' back */',
             '    bool allow_oob;',
             '} QmpCommand;', '',
             '/* Every command, sorted by name. */',
             'extern const QmpCommand qmp_commands[];',
             'extern const size_t qmp_commands_count;',
             '/* The command called name, or NULL. */',
             'const QmpCommand *qmp_find_command(const char *name);', '',
             '#endif', '']
        return '\n'.join(o)

    def commands_h(self):
        o = [HDR, '#ifndef BLOCKD_QAPI_COMMANDS_H',
             '#define BLOCKD_QAPI_COMMANDS_H', '',
             '#include <json-c/json.h>', '#include <stdbool.h>',
             '#include <stddef.h>', '#include <stdint.h>', '',
             '#include "qapi-cmdtable.h"', '#include "qapi-types.h"',
             '#include "qmp/qmp.h"', '#include "util/error.h"', '',
             '/* Handlers: each module implements its commands (docs/'
             'schema.md). */']
        for c in self.s.commands:
            o.append('/* %s */' % c.name)
            o.append(wrap_proto(self._handler_proto(c) + ';'))
        o += ['',
              'typedef bool QmpMarshalFn(QmpCtx *ctx, json_object *args, '
              'unsigned flags,',
              '                          json_object **ret, Error **errp);',
              '',
              '/* cmd\'s marshal function (server side): parse args, call',
              ' * the handler, turn its result into JSON. */',
              'QmpMarshalFn *qmp_command_marshal(const QmpCommand *cmd);',
              '/* The value query-qmp-schema returns, as JSON text. */',
              'extern const char qapi_introspect_json[];', '',
              '#endif', '']
        return '\n'.join(o)

    def commands_c(self):
        o = [HDR, '#include <stdlib.h>', '#include <string.h>', '',
             '#include "qapi-commands.h"', '#include "util/cleanup.h"', '']
        for c in self.s.commands:
            a = c.args_type.name
            o += ['static bool qmp_marshal_%s(QmpCtx *ctx, json_object *args,'
                  ' unsigned flags,' % c.c,
                  '    json_object **ret, Error **errp)', '{',
                  '    CLEANUP_JSON json_object *empty = NULL;',
                  '    %s *a = NULL;' % a]
            text = c.ret_type is not None and not c.returns_json
            if c.ret_type is not None:
                rt = ('json_object *' if c.returns_json
                      else c.ret_type.c_type())
                o.append('    %s = 0;' % decl(rt, 'r'))
            if text:
                o.append('    const bool text = ctx->text_replies;')
            o += ['    bool ok;', '',
                  '    if (!args) {',
                  '        args = empty = json_object_new_object();',
                  '    }',
                  '    if (!qapi_parse_%s(args, NULL, flags, &a, errp)) {'
                  % a, '        return false;', '    }']
            # Commands the handler runs in turn answer it, not a monitor.
            o.append('    ctx->text_replies = false;')
            if c.ret_type is not None:
                o.append('    ok = qmp_%s(ctx, a, &r, errp);' % c.c)
            else:
                o.append('    ok = qmp_%s(ctx, a, errp);' % c.c)
            o += ['    qapi_free_%s(a);' % a, '    if (!ok) {']
            if c.ret_type is not None:
                if c.returns_json:
                    o.append('        json_object_put(r);')
                else:
                    st = c.ret_type.free_stmt('r')
                    if st:
                        o.append('        ' + st)
            o += ['        return false;', '    }']
            if c.ret_type is None:
                o.append('    *ret = json_object_new_object();')
            elif c.returns_json:
                o.append('    *ret = r;')
            else:
                o += ['    if (text) {',
                      '        QText tx = { 0 }, *t = &tx;', '',
                      '        %s' % c.ret_type.to_text('r'),
                      '        *ret = qjson_new_raw(t);',
                      '    } else {',
                      '        *ret = %s;' % c.ret_type.to_json('r'),
                      '    }']
                st = c.ret_type.free_stmt('r')
                if st:
                    o.append('    ' + st)
            o += ['    return true;', '}', '']
        o.append('static QmpMarshalFn *const qmp_marshals[] = {')
        for c in sorted(self.s.commands, key=lambda c: c.name):
            o.append('    qmp_marshal_%s,' % c.c)
        o += ['};', '',
              '/* qmp_marshals[] is in qmp_commands[]\'s order (by name). */',
              'QmpMarshalFn *qmp_command_marshal(const QmpCommand *cmd)', '{',
              '    return qmp_marshals[cmd - qmp_commands];', '}', '']
        return '\n'.join(o)

    def cmdtable_c(self):
        o = [HDR, '#include <stdlib.h>', '#include <string.h>', '',
             '#include "qapi-cmdtable.h"', '#include "util/cleanup.h"', '']
        for c in self.s.commands:
            a = c.args_type.name
            o += ['static bool qmp_normalize_%s(json_object *args, '
                  'unsigned flags,' % c.c,
                  '    json_object **out, Error **errp)', '{',
                  '    CLEANUP_JSON json_object *empty = NULL;',
                  '    %s *a = NULL;' % a, '',
                  '    if (!args) {',
                  '        args = empty = json_object_new_object();',
                  '    }',
                  '    if (!qapi_parse_%s(args, NULL, flags, &a, errp)) {'
                  % a, '        return false;', '    }',
                  '    *out = qapi_%s_to_json(a);' % a,
                  '    qapi_free_%s(a);' % a,
                  '    return true;', '}', '']
        o.append('const QmpCommand qmp_commands[] = {')
        for c in sorted(self.s.commands, key=lambda c: c.name):
            o.append('    { %s, qmp_normalize_%s, %s },'
                     % (c_string(c.name), c.c,
                        'true' if c.allow_oob else 'false'))
        o += ['};',
              'const size_t qmp_commands_count = '
              'sizeof(qmp_commands) / sizeof(qmp_commands[0]);', '',
              'static int qmp_command_cmp(const void *key, const void *elem)',
              '{',
              '    const QmpCommand *c = elem;', '',
              '    return strcmp(key, c->name);', '}', '',
              'const QmpCommand *qmp_find_command(const char *name)', '{',
              '    if (!name) {', '        return NULL;', '    }',
              '    return bsearch(name, qmp_commands, qmp_commands_count,',
              '                   sizeof(qmp_commands[0]), qmp_command_cmp);',
              '}', '']
        return '\n'.join(o)

    # ---- events
    def _event_params(self, e):
        ps = []
        for m in e.args_type.members:
            if m.optional:
                ps.append('bool has_%s' % m.c)
            ps.append(decl(m.type.c_param_type(), m.c))
        return ps

    def _event_proto(self, e):
        ps = ['MonitorSet *ms'] + self._event_params(e)
        return 'void qapi_event_send_%s(%s)' % (c_name(e.name, False).lower(),
                                              ', '.join(ps))

    def events_h(self):
        o = [HDR, '#ifndef BLOCKD_QAPI_EVENTS_H',
             '#define BLOCKD_QAPI_EVENTS_H', '',
             '#include <json-c/json.h>', '#include <stdbool.h>',
             '#include <stdint.h>', '',
             '#include "qapi-types.h"', '#include "qmp/qmp.h"',
             '#include "util/error.h"', '',
             '/* Build the event data and hand it to '
             'monitor_broadcast_event(). */']
        for e in self.s.events:
            o.append('/* %s */' % e.name)
            o.append(wrap_proto(self._event_proto(e) + ';'))
        o += ['', '#endif', '']
        return '\n'.join(o)

    def events_c(self):
        o = [HDR, '#include "qapi-events.h"', '']
        for e in self.s.events:
            o += [wrap_proto(self._event_proto(e)), '{']
            ms = e.args_type.members
            if not ms:
                o += ['    monitor_broadcast_event(ms, %s, NULL);'
                      % c_string(e.name), '}', '']
                continue
            o += ['    json_object *o = json_object_new_object();', '']
            # Members go out in QEMU's order (qemu_dict_order).
            by_name = {m.name: m for m in ms}
            for m in (by_name[n] for n in
                      qemu_dict_order([m.name for m in ms])):
                ind = '    '
                if m.optional:
                    o.append('    if (has_%s) {' % m.c)
                    ind = '        '
                o.append('%sqapi_add_member(o, %s, %s);'
                         % (ind, c_string(m.name), m.type.to_json(m.c)))
                if m.optional:
                    o.append('    }')
            o += ['    monitor_broadcast_event(ms, %s, o);' % c_string(e.name),
                  '}', '']
        return '\n'.join(o)

    # ---- introspection
    def introspect(self):
        s = self.s
        names = {}
        entities = []
        emitted = set()
        queue = []
        empty = Struct('q_empty', None, [])
        empty.members = []
        empty.implicit = True

        def use(t):
            if t.kind == 'builtin':
                n = t.intro_name()
                if n not in emitted:
                    emitted.add(n)
                    b = s.types[n]
                    entities.append({'name': n, 'meta-type': 'builtin',
                                     'json-type': b.json_type})
                return n
            if t.kind == 'array':
                en = use(t.elem)
                n = '[' + en + ']'
                if n not in emitted:
                    emitted.add(n)
                    entities.append({'name': n, 'meta-type': 'array',
                                     'element-type': en})
                return n
            if t.kind == 'struct' and t.implicit and not t.members:
                t = empty           # QEMU shares one q_empty
            key = id(t)
            if key not in names:
                names[key] = str(len(names))
                queue.append(t)
            return names[key]

        def feats(obj, f):
            if f:
                obj['features'] = [x['name'] if isinstance(x, dict) else x
                                   for x in f]

        def members(ms):
            out = []
            for m in ms:
                j = {'name': m.name, 'type': use(m.type)}
                if m.optional:
                    j['default'] = None
                feats(j, m.features)
                out.append(j)
            return out

        def emit(t):
            n = names[id(t)]
            if t.kind == 'enum':
                ms = []
                for v in t.values:
                    j = {'name': v[0]}
                    feats(j, v[2])
                    ms.append(j)
                j = {'name': n, 'meta-type': 'enum', 'members': ms,
                     'values': [v[0] for v in t.values]}
            elif t.kind in ('struct', 'union'):
                j = {'name': n, 'meta-type': 'object',
                     'members': members(t.members)}
                if t.kind == 'union':
                    j['tag'] = t.tag.name
                    br = dict(t.branches)
                    j['variants'] = [
                        {'case': v[0], 'type': use(br.get(v[0], empty))}
                        for v in t.tag.type.values]
            elif t.kind == 'alternate':
                j = {'name': n, 'meta-type': 'alternate',
                     'members': [{'type': use(ty)}
                                 for (_, _, ty, _) in t.branches]}
            feats(j, t.features)
            entities.append(j)

        for c in s.commands:
            j = {'name': c.name, 'meta-type': 'command',
                 'arg-type': use(c.args_type),
                 'ret-type': use(c.ret_type if c.ret_type else empty)}
            if c.allow_oob:
                j['allow-oob'] = True
            feats(j, c.features)
            entities.append(j)
            while queue:
                emit(queue.pop(0))
        for e in s.events:
            j = {'name': e.name, 'meta-type': 'event',
                 'arg-type': use(e.args_type)}
            feats(j, e.features)
            entities.append(j)
            while queue:
                emit(queue.pop(0))
        text = json.dumps(entities, separators=(',', ':'))
        o = [HDR, '#include "qapi-commands.h"', '',
             'const char qapi_introspect_json[] =']
        for i in range(0, len(text), 64):
            o.append('    ' + c_string(text[i:i + 64]))
        o[-1] += ';'
        o.append('')
        return '\n'.join(o), entities


def wrap_proto(p, width=79):
    """Break a long prototype after commas."""
    if len(p) <= width:
        return p
    head, _, rest = p.partition('(')
    parts = rest.split(', ')
    lines = []
    cur = head + '('
    indent = ' ' * 4
    for i, part in enumerate(parts):
        piece = part + (', ' if i < len(parts) - 1 else '')
        if len(cur) + len(piece.rstrip()) > width and cur.strip():
            lines.append(cur.rstrip())
            cur = indent
        cur += piece
    lines.append(cur)
    return '\n'.join(lines)


RUNTIME_C = r'''/* ---- shared helpers of the generated parsers ---- */

static char *qapi_path(const char *parent, const char *member)
{
    if (!parent) {
        return xstrdup(member);
    }
    return xasprintf("%s.%s", parent, member);
}

static char *qapi_path_index(const char *parent, size_t i)
{
    return xasprintf("%s[%zu]", parent ? parent : "", i);
}

static const char *qapi_name(const char *name)
{
    return name ? name : "null";
}

static void qapi_error_type(Error **errp, const char *name,
                            const char *expected)
{
    error_setg(errp, "Invalid parameter type for '%s', expected: %s",
               qapi_name(name), expected);
}

static void qapi_error_value(Error **errp, const char *name,
                             const char *expected)
{
    error_setg(errp, "Parameter '%s' expects %s", qapi_name(name),
               expected);
}

static void qapi_error_missing(Error **errp, const char *parent,
                               const char *member)
{
    if (parent) {
        error_setg(errp, "Parameter '%s.%s' is missing", parent, member);
    } else {
        error_setg(errp, "Parameter '%s' is missing", member);
    }
}

static bool qapi_check_object(json_object *obj, const char *name,
                              Error **errp)
{
    if (!obj || !json_object_is_type(obj, json_type_object)) {
        qapi_error_type(errp, name, "object");
        return false;
    }
    return true;
}

static bool qapi_name_in(const char *const *names, const char *key)
{
    for (size_t i = 0; names && names[i]; i++) {
        if (strcmp(names[i], key) == 0) {
            return true;
        }
    }
    return false;
}

/* Fail on the first member of obj that is in neither list. */
static bool qapi_check_unexpected(json_object *obj, const char *name,
                                  const char *const *names,
                                  const char *const *more, Error **errp)
{
    json_object_object_foreach(obj, key, val) {
        (void)val;
        if (!qapi_name_in(names, key) && !qapi_name_in(more, key)) {
            if (name) {
                error_setg(errp, "Parameter '%s.%s' is unexpected", name,
                           key);
            } else {
                error_setg(errp, "Parameter '%s' is unexpected", key);
            }
            return false;
        }
    }
    return true;
}

static int qapi_enum_lookup(const char *const *names, int max,
                            const char *s)
{
    for (int i = 0; s && i < max; i++) {
        if (names[i] && strcmp(names[i], s) == 0) {
            return i;
        }
    }
    return -1;
}

static int qapi_parse_enum(json_object *obj, const char *name,
                           unsigned flags, const char *const *names,
                           int max, Error **errp)
{
    const char *s;
    int v;

    (void)flags;
    if (!obj || !json_object_is_type(obj, json_type_string)) {
        qapi_error_type(errp, name, "string");
        return -1;
    }
    s = json_object_get_string(obj);
    v = qapi_enum_lookup(names, max, s);
    if (v < 0 || strlen(s) != (size_t)json_object_get_string_len(obj)) {
        error_setg(errp, "Parameter '%s' does not accept value '%s'",
                   qapi_name(name), s);
        return -1;
    }
    return v;
}

/* A string to convert by the member's type (QAPI_PARSE_KEYVAL).  One
 * holding a NUL (\u0000) is not: C would cut it there, so "1\u0000x"
 * would pass as 1.  It fails as a wrong type instead. */
static bool qapi_is_keyval_string(json_object *obj, unsigned flags)
{
    return (flags & QAPI_PARSE_KEYVAL) && obj &&
        json_object_is_type(obj, json_type_string) &&
        strlen(json_object_get_string(obj)) ==
            (size_t)json_object_get_string_len(obj);
}

static bool __attribute__((unused)) qapi_keyval_is_bool(json_object *obj)
{
    bool b;

    return parse_bool(json_object_get_string(obj), &b);
}

bool qapi_parse_str(json_object *obj, const char *name, unsigned flags,
                    char **out, Error **errp)
{
    const char *s;

    (void)flags;
    if (!obj || !json_object_is_type(obj, json_type_string)) {
        qapi_error_type(errp, name, "string");
        return false;
    }
    s = json_object_get_string(obj);
    if (strlen(s) != (size_t)json_object_get_string_len(obj)) {
        error_setg(errp, "Parameter '%s' must not contain a NUL character",
                   qapi_name(name));
        return false;
    }
    *out = xstrdup(s);
    return true;
}

bool qapi_parse_bool(json_object *obj, const char *name, unsigned flags,
                     bool *out, Error **errp)
{
    if (qapi_is_keyval_string(obj, flags)) {
        if (!parse_bool(json_object_get_string(obj), out)) {
            qapi_error_value(errp, name, "'on' or 'off'");
            return false;
        }
        return true;
    }
    if (!obj || !json_object_is_type(obj, json_type_boolean)) {
        qapi_error_type(errp, name, "boolean");
        return false;
    }
    *out = json_object_get_boolean(obj);
    return true;
}

/* A JSON integer as int64, or false if it does not fit. */
static bool qapi_json_int64(json_object *obj, int64_t *out)
{
    int64_t v = json_object_get_int64(obj);

    if (v == INT64_MAX && json_object_get_uint64(obj) > (uint64_t)INT64_MAX) {
        return false;
    }
    *out = v;
    return true;
}

static bool qapi_parse_signed(json_object *obj, const char *name,
                              unsigned flags, int64_t min, int64_t max,
                              const char *what, int64_t *out, Error **errp)
{
    int64_t v;

    if (qapi_is_keyval_string(obj, flags)) {
        if (!parse_int64(json_object_get_string(obj), &v)) {
            qapi_error_value(errp, name, "integer");
            return false;
        }
    } else if (obj && json_object_is_type(obj, json_type_int)) {
        if (!qapi_json_int64(obj, &v)) {
            qapi_error_value(errp, name, what);
            return false;
        }
    } else {
        qapi_error_type(errp, name, "integer");
        return false;
    }
    if (v < min || v > max) {
        qapi_error_value(errp, name, what);
        return false;
    }
    *out = v;
    return true;
}

static bool qapi_parse_unsigned(json_object *obj, const char *name,
                                unsigned flags, uint64_t max, bool is_size,
                                const char *what, uint64_t *out,
                                Error **errp)
{
    uint64_t v;

    if (qapi_is_keyval_string(obj, flags)) {
        const char *s = json_object_get_string(obj);

        if (is_size ? !parse_size(s, &v) : !parse_uint64(s, &v)) {
            qapi_error_value(errp, name, is_size ? "size" : "integer");
            return false;
        }
    } else if (obj && json_object_is_type(obj, json_type_int)) {
        int64_t sv = json_object_get_int64(obj);

        if (sv < 0) {
            qapi_error_value(errp, name, what);
            return false;
        }
        v = sv == INT64_MAX ? json_object_get_uint64(obj) : (uint64_t)sv;
    } else if (obj && json_object_is_type(obj, json_type_double)) {
        /* QEMU's wording: its uint64 visitor refuses any number that is
         * not a 64-bit integer (an integer beyond 64 bits is a double to
         * its parser, and to qmp_json_check()), for every unsigned type */
        qapi_error_value(errp, name, "uint64");
        return false;
    } else {
        qapi_error_type(errp, name, "integer");
        return false;
    }
    if (v > max) {
        qapi_error_value(errp, name, what);
        return false;
    }
    *out = v;
    return true;
}

bool qapi_parse_int(json_object *obj, const char *name, unsigned flags,
                    int64_t *out, Error **errp)
{
    return qapi_parse_signed(obj, name, flags, INT64_MIN, INT64_MAX,
                             "int64", out, errp);
}

bool qapi_parse_int64(json_object *obj, const char *name, unsigned flags,
                      int64_t *out, Error **errp)
{
    return qapi_parse_int(obj, name, flags, out, errp);
}

bool qapi_parse_int8(json_object *obj, const char *name, unsigned flags,
                     int64_t *out, Error **errp)
{
    return qapi_parse_signed(obj, name, flags, INT8_MIN, INT8_MAX,
                             "int8_t", out, errp);
}

bool qapi_parse_int16(json_object *obj, const char *name, unsigned flags,
                      int64_t *out, Error **errp)
{
    return qapi_parse_signed(obj, name, flags, INT16_MIN, INT16_MAX,
                             "int16_t", out, errp);
}

bool qapi_parse_int32(json_object *obj, const char *name, unsigned flags,
                      int64_t *out, Error **errp)
{
    return qapi_parse_signed(obj, name, flags, INT32_MIN, INT32_MAX,
                             "int32_t", out, errp);
}

static bool qapi_parse_small_uint(json_object *obj, const char *name,
                                  unsigned flags, uint64_t max,
                                  const char *what, uint32_t *out,
                                  Error **errp)
{
    uint64_t v;

    if (!qapi_parse_unsigned(obj, name, flags, max, false, what, &v,
                             errp)) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

bool qapi_parse_uint8(json_object *obj, const char *name, unsigned flags,
                      uint32_t *out, Error **errp)
{
    return qapi_parse_small_uint(obj, name, flags, UINT8_MAX, "uint8_t",
                                 out, errp);
}

bool qapi_parse_uint16(json_object *obj, const char *name, unsigned flags,
                       uint32_t *out, Error **errp)
{
    return qapi_parse_small_uint(obj, name, flags, UINT16_MAX, "uint16_t",
                                 out, errp);
}

bool qapi_parse_uint32(json_object *obj, const char *name, unsigned flags,
                       uint32_t *out, Error **errp)
{
    return qapi_parse_small_uint(obj, name, flags, UINT32_MAX, "uint32_t",
                                 out, errp);
}

bool qapi_parse_uint64(json_object *obj, const char *name, unsigned flags,
                       uint64_t *out, Error **errp)
{
    return qapi_parse_unsigned(obj, name, flags, UINT64_MAX, false,
                               "uint64", out, errp);
}

bool qapi_parse_size(json_object *obj, const char *name, unsigned flags,
                     uint64_t *out, Error **errp)
{
    return qapi_parse_unsigned(obj, name, flags, UINT64_MAX, true, "size",
                               out, errp);
}

bool qapi_parse_number(json_object *obj, const char *name, unsigned flags,
                       double *out, Error **errp)
{
    if (qapi_is_keyval_string(obj, flags)) {
        const char *s = json_object_get_string(obj);
        char *end;

        errno = 0;
        *out = strtod(s, &end);
        if (*s == '\0' || *end != '\0' || errno != 0) {
            qapi_error_value(errp, name, "number");
            return false;
        }
        return true;
    }
    if (!obj || (!json_object_is_type(obj, json_type_int) &&
                 !json_object_is_type(obj, json_type_double))) {
        qapi_error_type(errp, name, "number");
        return false;
    }
    *out = json_object_get_double(obj);
    return true;
}

bool qapi_parse_any(json_object *obj, const char *name, unsigned flags,
                    json_object **out, Error **errp)
{
    (void)name;
    (void)flags;
    (void)errp;
    *out = obj ? json_object_get(obj) : NULL;
    return true;
}

bool qapi_parse_null(json_object *obj, const char *name, unsigned flags,
                     bool *out, Error **errp)
{
    if (qapi_is_keyval_string(obj, flags) &&
        json_object_get_string_len(obj) == 0) {
        *out = true;
        return true;
    }
    if (obj) {
        qapi_error_type(errp, name, "null");
        return false;
    }
    *out = true;
    return true;
}

/* ---- generated types ---- */
'''


# --------------------------------------------------------------------
# Reference manual

def md_escape(s):
    return s.replace('|', '\\|').replace('\n', ' ')


def feature_names(features):
    return ', '.join('`%s`' % (f['name'] if isinstance(f, dict) else f)
                     for f in features)


def md_features(x, o):
    if x.features:
        o += ['Features: %s.' % feature_names(x.features), '']


def md_cond(cond, built):
    """How the reference marks an entry with "if": cond."""
    if cond is None:
        return ''
    if built:
        return '(if `%s`)' % cond
    return '(if `%s`: not built)' % cond


def md_cond_para(x, o):
    """The condition line of a command or event."""
    if x.cond is None:
        return
    note = ''
    if not x.built:
        note = ' (not built: blockd does not know this %s)' % (
            'command' if isinstance(x, Command) else 'event')
    o += ['Condition: `%s`%s.' % (x.cond, note), '']


def md_members(ms, o):
    if not ms:
        o.append('No members.')
        o.append('')
        return
    o.append('| member | type | | description |')
    o.append('|---|---|---|---|')
    for m in ms:
        req = 'optional' if m.optional else 'mandatory'
        if m.has_default:
            req = 'default `%s`' % json.dumps(m.default)
        doc = md_escape(m.doc)
        if m.features:
            doc += ' (features: %s)' % feature_names(m.features)
        if m.cond is not None:
            doc += ' ' + md_cond(m.cond, m.built)
        o.append('| `%s` | `%s` | %s | %s |'
                 % (m.name, m.type.doc_name(), req, doc))
    o.append('')


def reference(schema):
    o = ['# QMP reference', '',
         'Generated by `schema/gen.py` from `schema/*.json`; do not edit '
         '(a test keeps `docs/qmp-reference.md` equal to the generated '
         'file).', '',
         'Conventions: member names with *optional* may be omitted; '
         '`[T]` is an array of `T`; `int` is 64-bit signed, `size` and '
         '`uint64` 64-bit unsigned.', '']
    if schema.conditions:
        o += ['Conditions: an entry marked "if `NAME`" exists only when '
              'blockd is built with `NAME` (`qapi_conditions` in '
              '`meson.build`); otherwise QMP knows nothing of it, as QEMU '
              'knows nothing of what it was built without.', '',
              '| condition | built | what |', '|---|---|---|']
        for n, d in schema.conditions.items():
            o.append('| `%s` | %s | %s |'
                     % (n, 'yes' if n in schema.enabled else 'no',
                        md_escape(d)))
        o.append('')
    for fn, title, mdoc, entries in schema.modules:
        o += ['## %s' % title, '']
        if mdoc:
            o += [mdoc, '']
        for ent in entries:
            if ent[0] == 'section':
                o += ['### %s' % ent[1], '', ent[2], '']
                continue
            x = ent[1]
            if ent[0] == 'command':
                o += ['### Command `%s`' % x.name, '', x.doc, '']
                md_cond_para(x, o)
                md_features(x, o)
                if x.allow_oob:
                    o += ['Allowed out-of-band.', '']
                t = x.args_type
                if t.implicit:
                    o.append('Arguments:')
                    o.append('')
                    md_members(t.all_members, o)
                else:
                    o += ['Arguments: the members of `%s`.' % t.name, '']
                if x.ret_type is not None:
                    o += ['Returns: `%s`' % x.ret_type.doc_name(), '']
                else:
                    o += ['Returns: `{}`', '']
            elif ent[0] == 'event':
                o += ['### Event `%s`' % x.name, '', x.doc, '']
                md_cond_para(x, o)
                md_features(x, o)
                o += ['Data:', '']
                md_members(x.args_type.all_members, o)
            else:
                t = x
                o += ['### %s `%s`' % (t.kind.capitalize(), t.name), '',
                      t.doc, '']
                md_features(t, o)
                if t.kind == 'enum':
                    o.append('| value | description |')
                    o.append('|---|---|')
                    for v in t.all_values:
                        doc = md_escape(v[1])
                        if v[3] is not None:
                            doc += ' ' + md_cond(v[3],
                                                 schema.is_built(v[3]))
                        o.append('| `%s` | %s |' % (v[0], doc.strip()))
                    o.append('')
                elif t.kind == 'struct':
                    md_members(t.all_members, o)
                elif t.kind == 'union':
                    o += ['Discriminator: `%s`.' % t.discriminator, '']
                    md_members(t.all_members, o)
                    br = {b[0]: b for b in t.all_branches}
                    o.append('| `%s` | extra members |' % t.discriminator)
                    o.append('|---|---|')
                    for v in t.tag.type.all_values:
                        b = br.get(v[0])
                        cell = '`%s`' % b[1].name if b else 'none'
                        if b and b[2] is not None:
                            cell += ' ' + md_cond(b[2],
                                                  schema.is_built(b[2]))
                        o.append('| `%s` | %s |' % (v[0], cell))
                    o.append('')
                elif t.kind == 'alternate':
                    o.append('| branch | type | JSON |')
                    o.append('|---|---|---|')
                    for (b, c, ty, k, cond) in t.all_branches:
                        extra = ''
                        if cond is not None:
                            extra = ' ' + md_cond(cond, schema.is_built(cond))
                        o.append('| `%s` | `%s` | %s%s |'
                                 % (b, ty.doc_name(), k, extra))
                    o.append('')
    return '\n'.join(o).rstrip('\n') + '\n'


# --------------------------------------------------------------------
# blockd-qmp(7): the same data as the reference, as reStructuredText
# for rst2man (docs/man/meson.build), listing only what this build has.

def rst_escape(text):
    """Plain text safe in reStructuredText: markup characters escaped."""
    return re.sub(r'([\\*`|_<>\[\]])', r'\\\1', text or '')


def rst_members(ms, o, indent='   '):
    for m in ms:
        if m.cond is not None and not m.built:
            continue
        req = 'optional' if m.optional else 'mandatory'
        if m.has_default:
            req = 'default %s' % json.dumps(m.default)
        o.append('%s* ``%s`` (%s, %s): %s' % (
            indent, m.name, rst_escape(m.type.doc_name()), req,
            rst_escape(m.doc)))
    o.append('')


def command_members(schema, x):
    """A command's arguments: its members, and for a boxed union the
    members of every branch built in (unique names, in order)."""
    t = x.args_type
    ms = list(t.all_members or [])
    if getattr(t, 'all_branches', None) and t.kind == 'union':
        for (_, bt, cond) in t.all_branches:
            if cond is None or schema.is_built(cond):
                ms += list(bt.all_members or [])
    seen = set()
    out = []
    for m in ms:
        if m.name not in seen:
            seen.add(m.name)
            out.append(m)
    return out


def man_qmp(schema):
    title = 'blockd-qmp'
    o = ['=' * len(title), title, '=' * len(title), '',
         '-' * 40, "blockd's QMP commands and events", '-' * 40, '',
         ':Manual section: 7',
         ':Manual group: blockd', '',
         'DESCRIPTION', '===========', '',
         'blockd is controlled with QMP, the QEMU Machine Protocol: JSON '
         'objects over a unix or TCP socket (``--qmp``, ``--chardev`` '
         'with ``--monitor``).  After the greeting a client sends '
         '``{"execute": "qmp_capabilities"}``, then commands as '
         '``{"execute": NAME, "arguments": {...}}``; each gets '
         '``{"return": ...}`` or ``{"error": {"class": ..., "desc": '
         '...}}``.  Events arrive as ``{"event": NAME, "data": {...}, '
         '"timestamp": ...}``.  blockctl(1) sends commands from the '
         'shell.', '',
         'This page is generated from the schema blockd is built from and '
         'lists what this build accepts (``query-qmp-schema`` returns '
         'the same in machine-readable form, with every type).  Argument '
         'types named here are described in the QMP reference, '
         'docs/qmp-reference.md.', '',
         'COMMANDS', '========', '']
    events = []
    for fn, mtitle, mdoc, entries in schema.modules:
        for ent in entries:
            if ent[0] == 'event':
                events.append(ent[1])
            if ent[0] != 'command':
                continue
            x = ent[1]
            if not schema.is_built(x.cond):
                continue
            o += [x.name, '-' * len(x.name), '', rst_escape(x.doc), '']
            ms = command_members(schema, x)
            if ms:
                o += ['Arguments:', '']
                rst_members(ms, o, '')
            if x.ret_type is not None:
                o += ['Returns: %s' % rst_escape(x.ret_type.doc_name()), '']
    o += ['EVENTS', '======', '']
    for x in events:
        if not schema.is_built(x.cond):
            continue
        o += [x.name, '-' * len(x.name), '', rst_escape(x.doc), '']
        ms = x.args_type.all_members
        if ms:
            o += ['Data:', '']
            rst_members(ms, o, '')
    o += ['SEE ALSO', '========', '',
          'blockd(8), blockctl(1), blockd-nbd(8)', '']
    return '\n'.join(o)


def completion_data(schema):
    """{command: [argument names]} of the commands built in, for
    blockctl's bash completion (docs/man/gen-completion.py)."""
    out = {}
    for fn, mtitle, mdoc, entries in schema.modules:
        for ent in entries:
            if ent[0] == 'command' and schema.is_built(ent[1].cond):
                out[ent[1].name] = [m.name for m in
                                    command_members(schema, ent[1])
                                    if m.cond is None or m.built]
    return json.dumps(out, indent=1, sort_keys=True) + '\n'


# --------------------------------------------------------------------

def write_if_changed(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--schema', required=True)
    ap.add_argument('--output-dir', required=True)
    ap.add_argument('--enable', default='',
                    help='comma-separated conditions to build ("if")')
    args = ap.parse_args()
    try:
        schema = Schema(args.schema,
                        [n for n in args.enable.split(',') if n])
    except (SchemaError, KeyError, OSError) as e:
        sys.stderr.write('gen.py: %s\n' % e)
        return 1
    g = CGen(schema)
    intro_c, _ = g.introspect()
    out = {
        'qapi-types.h': g.types_h(),
        'qapi-types.c': g.types_c(),
        'qapi-cmdtable.h': g.cmdtable_h(),
        'qapi-cmdtable.c': g.cmdtable_c(),
        'qapi-commands.h': g.commands_h(),
        'qapi-commands.c': g.commands_c(),
        'qapi-events.h': g.events_h(),
        'qapi-events.c': g.events_c(),
        'qapi-introspect.c': intro_c,
        'qmp-reference.md': reference(schema),
        'blockd-qmp.7.rst': man_qmp(schema),
        'qmp-commands.json': completion_data(schema),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    for name, text in out.items():
        write_if_changed(os.path.join(args.output_dir, name), text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
