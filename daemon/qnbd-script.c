/* qnbd-script.c - qemu-nbd's options as QMP commands (see qnbd.h).
 *
 * Node graph of a served image (node-names are fixed, so that a script
 * printed with --print-qmp can be edited by hand):
 *
 *   export "qemu-nbd-export" ──> qnbd-offset   raw window (-o)
 *                                  └─> qnbd-overlay   qcow2 (-s)
 *                                        ├─ file: qnbd-overlay-file
 *                                        └─ backing: qnbd-fmt
 *                                  └─> qnbd-fmt       -f FMT or probed
 *                                        └─ file: qnbd-file
 *
 * Every command's arguments go through the schema's normalizer (the
 * same one blockctl uses), so a bad --object or --image-opts string is
 * refused before anything runs and the printed script is typed JSON.
 */
#include "daemon/qnbd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "blockdev/qcow2-meta.h"
#include "qapi-cmdtable.h"
#include "qapi-types.h"
#include "util/cleanup.h"
#include "util/keyval.h"
#include "util/util.h"

static const char overlay_cmd[] = "x-blockd-nbd-create-overlay";

/* Normalize args for command name (takes args) and append. */
static bool add_cmd(QnbdScript *s, const char *name, json_object *args,
                    unsigned flags, const char *error_prefix, Error **errp)
{
    const QmpCommand *cmd = qmp_find_command(name);
    json_object *out = NULL;
    bool ok;

    if (cmd == NULL || cmd->normalize == NULL) {
        error_setg(errp, "The command %s has not been found", name);
        json_object_put(args);
        return false;
    }
    ok = cmd->normalize(args, flags, &out, errp);
    json_object_put(args);
    if (!ok) {
        return false;
    }
    s->cmds = xrealloc(s->cmds, (s->n + 1) * sizeof(*s->cmds));
    s->cmds[s->n++] = (QnbdCmd) {
        .name = name, .args = out, .error_prefix = error_prefix,
    };
    return true;
}

static void add_str(json_object *o, const char *key, const char *val)
{
    json_object_object_add(o, key, json_object_new_string(val));
}

static void add_bool(json_object *o, const char *key, bool val)
{
    json_object_object_add(o, key, json_object_new_boolean(val));
}

/* The options every node of the image gets from -r, --cache and
 * --discard (keys already present are kept: --image-opts may set
 * them). */
static void add_node_opts(const QnbdOptions *o, json_object *node,
                          bool read_only)
{
    if (!json_object_object_get_ex(node, "read-only", NULL)) {
        add_bool(node, "read-only", read_only);
    }
    if (o->seen_cache && !json_object_object_get_ex(node, "cache", NULL)) {
        json_object *cache = json_object_new_object();

        add_bool(cache, "direct", o->cache_direct);
        add_bool(cache, "no-flush", o->cache_no_flush);
        json_object_object_add(node, "cache", cache);
    }
    if (o->seen_discard &&
        !json_object_object_get_ex(node, "discard", NULL)) {
        add_str(node, "discard", o->discard_unmap ? "unmap" : "ignore");
    }
}

static const char *json_str(json_object *o, const char *key)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string)) {
        return NULL;
    }
    return json_object_get_string(v);
}

/* qemu-nbd without -f: QEMU probes every format it knows; blockd knows
 * qcow2 and raw.  A file that cannot be read is left to blockdev-add,
 * which says why. */
static const char *probe_format(const char *path, bool *probed_raw)
{
    uint8_t buf[BLK_PROBE_BUF_SIZE];
    CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    *probed_raw = false;
    if (fd < 0 || (n = pread(fd, buf, sizeof(buf), 0)) < 0) {
        return "raw";
    }
    /* The block layer's own test: qcow2 is the other format it knows. */
    if (!blk_probe_is_raw(buf, (size_t)n)) {
        return "qcow2";
    }
    *probed_raw = true;
    return "raw";
}

/* QemuOpts sizes ("1M", "512k") in --image-opts strings: QEMU's raw
 * driver reads offset and size as sizes; the schema wants integers. */
static void convert_sizes(json_object *obj)
{
    json_object_object_foreach(obj, key, val) {
        if (json_object_is_type(val, json_type_object)) {
            convert_sizes(val);
        } else if (json_object_is_type(val, json_type_string) &&
                   (strcmp(key, "offset") == 0 ||
                    strcmp(key, "size") == 0)) {
            const char *str = json_object_get_string(val);
            char *end;
            unsigned long long v;
            int shift = 0;

            errno = 0;
            v = strtoull(str, &end, 10);
            if (errno != 0 || end == str || str[0] == '-') {
                continue;
            }
            switch (*end) {
            case 'k': case 'K': shift = 10; break;
            case 'm': case 'M': shift = 20; break;
            case 'g': case 'G': shift = 30; break;
            case 't': case 'T': shift = 40; break;
            case 'b': case 'B': case '\0': shift = 0; break;
            default: continue;
            }
            if (*end != '\0' && end[1] != '\0') {
                continue;
            }
            if (shift > 0 && v > (UINT64_MAX >> shift)) {
                continue;
            }
            {
                char num[32];

                snprintf(num, sizeof(num), "%llu", v << shift);
                /* Same key: json-c replaces the value in place. */
                json_object_object_add(obj, key,
                                       json_object_new_string(num));
            }
        }
    }
}

/* FILE as a file node and a format node; returns the top node-name. */
static const char *add_image_nodes(const QnbdOptions *o, QnbdScript *s,
                                   bool read_only, Error **errp)
{
    json_object *file = json_object_new_object();
    json_object *fmt;
    const char *format = o->format;
    bool probed_raw = false;

    add_node_opts(o, file, read_only);
    add_str(file, "node-name", "qnbd-file");
    if (strcmp(o->filename, "null-co://") == 0 ||
        strcmp(o->filename, "null-aio://") == 0) {
        /* QEMU's protocol syntax for the null drivers (iotests use
         * it): a 1 GiB node reading zeroes, no probe. */
        add_str(file, "driver", strcmp(o->filename, "null-co://") == 0
                                ? "null-co" : "null-aio");
        if (format == NULL) {
            format = "raw";
        }
    } else {
        add_str(file, "driver", "file");
        add_str(file, "filename", o->filename);
        if (o->aio != NULL) {
            add_str(file, "aio", o->aio);
        }
    }
    if (format == NULL) {
        format = probe_format(o->filename, &probed_raw);
    }
    s->format = format;
    if (!add_cmd(s, "blockdev-add", file, 0, "Failed to blk_new_open", errp)) {
        return NULL;
    }
    if (strcmp(format, "file") == 0 || strcmp(format, "host_device") == 0) {
        return "qnbd-file";
    }
    fmt = json_object_new_object();
    add_str(fmt, "driver", format);
    add_str(fmt, "node-name", "qnbd-fmt");
    add_str(fmt, "file", "qnbd-file");
    if (o->sn_id || o->sn_name || o->sn_id_or_name) {
        /* blockd's qcow2 takes one id or name. */
        add_str(fmt, "snapshot", o->sn_id ? o->sn_id
                                 : o->sn_name ? o->sn_name
                                 : o->sn_id_or_name);
    }
    add_node_opts(o, fmt, read_only);
    if (!add_cmd(s, "blockdev-add", fmt, 0, "Failed to blk_new_open", errp)) {
        return NULL;
    }
    if (probed_raw) {
        s->probed_raw_node = xstrdup("qnbd-fmt");
        s->probed_raw_path = xstrdup(o->filename);
    }
    return "qnbd-fmt";
}

/* --image-opts FILE: QEMU's option string (implied key "file": a file
 * name).  The top node gets node-name qnbd-fmt unless it names itself;
 * without a driver the format is probed from file.filename. */
static const char *add_image_opts_node(const QnbdOptions *o, QnbdScript *s,
                                       bool read_only, Error **errp)
{
    CLEANUP_JSON json_object *raw = keyval_parse(o->filename, "file", errp);
    json_object *node = NULL, *file;
    const char *name;
    bool probed_raw = false;

    if (raw == NULL) {
        return NULL;
    }
    if (json_object_object_get_ex(raw, "file", &file) &&
        json_object_is_type(file, json_type_string)) {
        json_object *f = json_object_new_object();

        add_str(f, "driver", "file");
        add_str(f, "filename", json_object_get_string(file));
        json_object_object_add(raw, "file", f);
    }
    if (!json_object_object_get_ex(raw, "driver", NULL)) {
        json_object *f = NULL;
        const char *path;

        json_object_object_get_ex(raw, "file", &f);
        path = json_str(f, "filename");
        add_str(raw, "driver", path ? probe_format(path, &probed_raw)
                                    : "raw");
    }
    if (!json_object_object_get_ex(raw, "node-name", NULL)) {
        add_str(raw, "node-name", "qnbd-fmt");
    }
    convert_sizes(raw);
    /* Typed first (the string is key=value), then ours added. */
    {
        const QmpCommand *cmd = qmp_find_command("blockdev-add");

        if (!cmd->normalize(raw, QAPI_PARSE_KEYVAL, &node, errp)) {
            return NULL;
        }
    }
    if (o->aio != NULL && strcmp(json_str(node, "driver"), "file") == 0 &&
        !json_object_object_get_ex(node, "aio", NULL)) {
        add_str(node, "aio", o->aio);
    }
    add_node_opts(o, node, read_only);
    name = json_str(node, "node-name");
    s->export_node = xstrdup(name);
    if (probed_raw) {
        s->probed_raw_node = xstrdup(s->export_node);
        s->probed_raw_path = xstrdup(json_str(
            json_object_object_get(node, "file"), "filename"));
    }
    if (!add_cmd(s, "blockdev-add", node, 0, "Failed to blk_new_open",
                 errp)) {
        return NULL;
    }
    return s->export_node;
}

/* -s: the temporary qcow2 overlay over top.  Its file is made by the
 * runner (the overlay_cmd step) once top is open and its size known. */
static const char *add_overlay(const QnbdOptions *o, QnbdScript *s,
                               const char *top, const char *format,
                               bool create, Error **errp)
{
    const char *tmpdir = getenv("TMPDIR");
    json_object *step = json_object_new_object();
    json_object *file, *qcow2;

    if (tmpdir == NULL || tmpdir[0] == '\0') {
        tmpdir = "/var/tmp";
    }
    if (create) {
        char *path = xasprintf("%s/vl.XXXXXX", tmpdir);
        int fd = mkostemp(path, O_CLOEXEC);

        if (fd < 0) {
            error_setg_errno(errp, errno, "Could not create temporary "
                             "overlay '%s'", path);
            free(path);
            return NULL;
        }
        close(fd);
        s->overlay = path;
    } else {
        s->overlay = xasprintf("%s/vl.XXXXXX", tmpdir);
    }
    /* Not a QMP command: the runner writes an empty qcow2 of the size
     * of args.backing into args.filename. */
    add_str(step, "filename", s->overlay);
    add_str(step, "backing", top);
    if (!o->image_opts) {
        char abspath[PATH_MAX];

        add_str(step, "backing-file",
                realpath(o->filename, abspath) ? abspath : o->filename);
    }
    if (format != NULL) {
        add_str(step, "backing-fmt", format);
    }
    s->cmds = xrealloc(s->cmds, (s->n + 1) * sizeof(*s->cmds));
    s->cmds[s->n++] = (QnbdCmd) { .name = overlay_cmd, .args = step };

    file = json_object_new_object();
    add_str(file, "driver", "file");
    add_str(file, "node-name", "qnbd-overlay-file");
    add_str(file, "filename", s->overlay);
    add_node_opts(o, file, false);
    if (!add_cmd(s, "blockdev-add", file, 0, NULL, errp)) {
        return NULL;
    }
    qcow2 = json_object_new_object();
    add_str(qcow2, "driver", "qcow2");
    add_str(qcow2, "node-name", "qnbd-overlay");
    add_str(qcow2, "file", "qnbd-overlay-file");
    add_str(qcow2, "backing", top);
    add_node_opts(o, qcow2, false);
    if (!add_cmd(s, "blockdev-add", qcow2, 0, NULL, errp)) {
        return NULL;
    }
    return "qnbd-overlay";
}

bool qnbd_script_is_overlay(const QnbdCmd *c)
{
    return c->name == overlay_cmd;
}

static bool add_server(const QnbdOptions *o, QnbdScript *s, Error **errp)
{
    json_object *args = json_object_new_object();
    json_object *addr = json_object_new_object();
    json_object *data = json_object_new_object();

    if (o->socket_activation) {
        add_str(addr, "type", "fd");
        add_str(data, "str", "3");
    } else if (o->sockpath != NULL) {
        add_str(addr, "type", "unix");
        add_str(data, "path", o->sockpath);
    } else {
        add_str(addr, "type", "inet");
        add_str(data, "host", o->bind);
        add_str(data, "port", o->port);
    }
    json_object_object_add(addr, "data", data);
    json_object_object_add(args, "addr", addr);
    json_object_object_add(args, "max-connections",
                           json_object_new_int64(o->shared));
    if (o->tls_creds != NULL) {
        add_str(args, "tls-creds", o->tls_creds);
    }
    if (o->tls_authz != NULL) {
        add_str(args, "tls-authz", o->tls_authz);
    }
    if (o->has_handshake_limit) {
        json_object_object_add(args, "handshake-max-seconds",
                               json_object_new_int64(o->handshake_limit));
    }
    return add_cmd(s, "nbd-server-start", args, 0, NULL, errp);
}

static bool add_export(const QnbdOptions *o, QnbdScript *s, const char *top,
                       Error **errp)
{
    json_object *args = json_object_new_object();

    add_str(args, "type", "nbd");
    add_str(args, "id", QNBD_EXPORT_ID);
    add_str(args, "node-name", top);
    add_str(args, "name", o->export_name);
    if (o->description != NULL) {
        add_str(args, "description", o->description);
    }
    /* block-export-add defaults to read-only: always say. */
    add_bool(args, "writable", !o->read_only);
    add_bool(args, "writethrough", o->writethrough);
    if (o->alloc_depth) {
        add_bool(args, "allocation-depth", true);
    }
    if (o->nbitmaps > 0) {
        json_object *bitmaps = json_object_new_array();

        /* Last first: qemu-nbd prepends each -B to its list, which
         * decides which missing bitmap is reported and the order of the
         * contexts. */
        for (size_t i = o->nbitmaps; i-- > 0;) {
            json_object_array_add(bitmaps,
                                  json_object_new_string(o->bitmaps[i]));
        }
        json_object_object_add(args, "bitmaps", bitmaps);
    }
    return add_cmd(s, "block-export-add", args, 0, NULL, errp);
}

/* The node exported: detect-zeroes applies to what clients write. */
static bool set_top_opts(const QnbdOptions *o, QnbdScript *s,
                         const char *top)
{
    (void)top;
    if (o->detect_zeroes == NULL) {
        return true;
    }
    for (size_t i = s->n; i-- > 0;) {
        if (strcmp(s->cmds[i].name, "blockdev-add") == 0) {
            add_str(s->cmds[i].args, "detect-zeroes", o->detect_zeroes);
            return true;
        }
    }
    return false;
}

bool qnbd_build_script(const QnbdOptions *o, bool create_overlay,
                       QnbdScript *s, Error **errp)
{
    /* -s writes go to the overlay: the image itself is read-only. */
    bool base_ro = o->read_only || o->snapshot;
    const char *top;

    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < o->nobjects; i++) {
        json_object *args = keyval_parse(o->objects[i], "qom-type", errp);

        if (args == NULL ||
            !add_cmd(s, "object-add", args, QAPI_PARSE_KEYVAL, NULL, errp)) {
            return false;
        }
    }
    if (!add_server(o, s, errp)) {
        return false;
    }
    if (o->image_opts) {
        top = add_image_opts_node(o, s, base_ro, errp);
    } else {
        top = add_image_nodes(o, s, base_ro, errp);
    }
    if (top == NULL) {
        return false;
    }
    if (o->snapshot) {
        top = add_overlay(o, s, top, s->format, create_overlay, errp);
        if (top == NULL) {
            return false;
        }
    }
    if (o->offset != 0) {
        json_object *raw = json_object_new_object();

        add_str(raw, "driver", "raw");
        add_str(raw, "node-name", "qnbd-offset");
        add_str(raw, "file", top);
        json_object_object_add(raw, "offset",
                               json_object_new_int64((int64_t)o->offset));
        add_node_opts(o, raw, o->read_only);
        if (!add_cmd(s, "blockdev-add", raw, 0, NULL, errp)) {
            return false;
        }
        top = "qnbd-offset";
    }
    set_top_opts(o, s, top);
    {
        char *name = xstrdup(top);   /* top may be export_node itself */

        free(s->export_node);
        s->export_node = name;
    }
    return add_export(o, s, s->export_node, errp);
}

void qnbd_script_free(QnbdScript *s)
{
    for (size_t i = 0; i < s->n; i++) {
        json_object_put(s->cmds[i].args);
    }
    free(s->cmds);
    free(s->export_node);
    free(s->probed_raw_node);
    free(s->probed_raw_path);
    free(s->overlay);
    memset(s, 0, sizeof(*s));
}

/* 'text' for a POSIX shell. */
static void print_quoted(FILE *f, const char *text)
{
    fputc('\'', f);
    for (const char *p = text; *p; p++) {
        if (*p == '\'') {
            fputs("'\\''", f);
        } else {
            fputc(*p, f);
        }
    }
    fputc('\'', f);
}

/* nbd-server-start's legacy addr ({"type", "data": {...}}) flattened,
 * as blockd's --nbd-server takes it (qemu-storage-daemon's syntax). */
static json_object *flat_server_args(json_object *args)
{
    json_object *copy = NULL, *addr, *data, *flat;

    json_object_deep_copy(args, &copy, NULL);
    if (json_object_object_get_ex(copy, "addr", &addr) &&
        json_object_object_get_ex(addr, "data", &data)) {
        flat = json_object_new_object();
        json_object_object_add(flat, "type",
            json_object_get(json_object_object_get(addr, "type")));
        json_object_object_foreach(data, key, val) {
            json_object_object_add(flat, key, json_object_get(val));
        }
        json_object_object_add(copy, "addr", flat);
    }
    return copy;
}

void qnbd_script_print(const QnbdScript *s, const QnbdOptions *o, FILE *f)
{
    const int jflags = JSON_C_TO_STRING_SPACED |
                       JSON_C_TO_STRING_NOSLASHESCAPE;
    static const struct {
        const char *command, *option;
    } opt_of[] = {
        { "object-add", "--object" },
        { "blockdev-add", "--blockdev" },
        { "nbd-server-start", "--nbd-server" },
        { "block-export-add", "--export" },
    };

    fprintf(f, "{\"execute\": \"qmp_capabilities\"}\n");
    for (size_t i = 0; i < s->n; i++) {
        const QnbdCmd *c = &s->cmds[i];
        CLEANUP_JSON json_object *req = NULL;

        if (qnbd_script_is_overlay(c)) {
            fprintf(f, "# -s: blockd-nbd first writes an empty qcow2 at "
                    "%s, the size of node %s (qemu-img create -f qcow2 "
                    "-b IMAGE -F FORMAT %s)\n",
                    json_str(c->args, "filename"),
                    json_str(c->args, "backing"),
                    json_str(c->args, "filename"));
            continue;
        }
        req = json_object_new_object();
        add_str(req, "execute", c->name);
        json_object_object_add(req, "arguments", json_object_get(c->args));
        fprintf(f, "%s\n", json_object_to_json_string_ext(req, jflags));
    }
    fprintf(f, "\n");
    if (o->socket_activation) {
        fprintf(f, "# listening on the inherited descriptor 3 "
                "(socket activation)\n");
    }
    fprintf(f, "blockd");
    for (size_t i = 0; i < s->n; i++) {
        const QnbdCmd *c = &s->cmds[i];
        CLEANUP_JSON json_object *flat = NULL;
        json_object *args = c->args;
        const char *opt = NULL;

        for (size_t k = 0; k < sizeof(opt_of) / sizeof(opt_of[0]); k++) {
            if (strcmp(opt_of[k].command, c->name) == 0) {
                opt = opt_of[k].option;
            }
        }
        if (opt == NULL) {
            continue;
        }
        if (strcmp(c->name, "nbd-server-start") == 0) {
            args = flat = flat_server_args(c->args);
        }
        fprintf(f, " \\\n    %s ", opt);
        print_quoted(f, json_object_to_json_string_ext(args,
                            JSON_C_TO_STRING_PLAIN |
                            JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    fprintf(f, "\n");
    if (!o->persistent) {
        fprintf(f, "# blockd keeps serving after the last client leaves "
                "(blockd-nbd without -t exits then)\n");
    }
}

/* ---- the -s overlay ----------------------------------------------------
 *
 * An empty qcow2 as qemu-nbd makes it (bdrv_img_create with the
 * backing node's size): version 3, 64 KiB clusters, 16-bit refcounts,
 * the size rounded up to 512 bytes.  The layout and the clusters come
 * from blockdev's qcow2 creation (qcow2-meta.h), as blockdev-create
 * writes them; here they go straight to the temporary file, which no
 * node holds yet. */
bool qnbd_overlay_create(const char *path, uint64_t size,
                         const char *backing_file, const char *backing_fmt,
                         Error **errp)
{
    Qcow2CreateParams p = {
        .size = DIV_ROUND_UP(size, 512) * 512,
        .version = 3,
        .cluster_bits = 16,
        .refcount_order = 4,
        .backing_file = backing_file,
        .backing_format = backing_file != NULL ? backing_fmt : NULL,
    };
    Qcow2CreateLayout l;
    CLEANUP_FREE uint8_t *buf = NULL;
    CLEANUP_CLOSE int fd = -1;
    uint64_t meta;

    if ((backing_file != NULL && strlen(backing_file) > 1023) ||
        !qcow2_create_layout(&p, &l, NULL)) {
        error_setg(errp, "Could not create temporary overlay: image too "
                   "large or backing file name too long");
        return false;
    }
    meta = qcow2_create_meta_clusters(&l);
    buf = xmalloc(l.cluster_size);
    fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) {
        goto fail;
    }
    for (uint64_t i = 0; i < meta; i++) {       /* in order from 0 */
        qcow2_create_cluster(&p, &l, i, buf);
        if (write_full(fd, buf, l.cluster_size) < 0) {
            goto fail;
        }
    }
    if (ftruncate(fd, (off_t)(l.total_clusters * l.cluster_size)) < 0) {
        goto fail;
    }
    return true;

fail:
    error_setg_errno(errp, errno, "Could not create temporary overlay "
                     "'%s'", path);
    return false;
}
