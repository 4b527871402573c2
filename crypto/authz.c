/* authz.c - authorization objects (the semantics of QEMU's authz objects):
 *
 *   authz-simple     one identity, compared exactly
 *   authz-list       rules {match, policy, format exact|glob}, first
 *                    match wins, else the default policy
 *   authz-listfile   authz-list's properties in a JSON file; with
 *                    refresh, re-read when the file changed (a stat of
 *                    the file on every check: no inotify thread, and a
 *                    replaced or rewritten file is seen alike)
 */
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "crypto/internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

#define AUTHZ_FILE_MAX (16 * 1024 * 1024)

struct Authz {
    Object obj;
    char *identity;           /* authz-simple */
    AuthzRules rules;         /* authz-list, authz-listfile */
    char *filename;           /* authz-listfile */
    bool refresh;
    struct stat seen;         /* the file as last read */
};

void authz_rules_from_props(const AuthZListProperties *props,
                            AuthzRules *out)
{
    out->allow = props->policy == QAUTHZ_LIST_POLICY_ALLOW;
    out->rules = (AuthzRuleVec) { 0 };
    for (size_t i = 0; props->has_rules && i < props->rules->n; i++) {
        const QAuthZListRule *r = props->rules->v[i];

        AuthzRuleVec_append(&out->rules, (AuthzRule) {
            .match = xstrdup(r->match),
            .allow = r->policy == QAUTHZ_LIST_POLICY_ALLOW,
            .glob = r->format == QAUTHZ_LIST_FORMAT_GLOB,
        });
    }
}

void authz_rules_clear(AuthzRules *r)
{
    for (size_t i = 0; i < r->rules.len; i++) {
        free(r->rules.ptr[i].match);
    }
    AuthzRuleVec_reset(&r->rules);
}

bool authz_rules_check(const AuthzRules *r, const char *identity)
{
    for (size_t i = 0; i < r->rules.len; i++) {
        const AuthzRule *rule = &r->rules.ptr[i];
        bool hit = rule->glob ? fnmatch(rule->match, identity, 0) == 0
                              : strcmp(rule->match, identity) == 0;

        if (hit) {
            return rule->allow;
        }
    }
    return r->allow;
}

bool authz_rules_load_file(const char *filename, AuthzRules *out,
                           Error **errp)
{
    CLEANUP_FREE char *text = NULL;
    CLEANUP_JSON json_object *obj = NULL;
    AuthZListProperties *props = NULL;
    json_tokener *tok;
    enum json_tokener_error jerr;
    size_t len, end;

    if (!crypto_read_file(filename, AUTHZ_FILE_MAX, &text, &len, errp)) {
        return false;
    }
    tok = json_tokener_new();
    obj = json_tokener_parse_ex(tok, text, (int)len + 1);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!obj || jerr != json_tokener_success) {
        error_setg(errp, "Unable to parse '%s': %s", filename,
                   json_tokener_error_desc(jerr));
        return false;
    }
    if (end < len && strspn(text + end, " \t\r\n") != len - end) {
        error_setg(errp, "Unable to parse '%s': data after the JSON "
                   "object", filename);
        return false;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        error_setg(errp, "Unable to parse '%s': expected a JSON object",
                   filename);
        return false;
    }
    if (!qapi_parse_AuthZListProperties(obj, NULL, 0, &props, errp)) {
        error_prepend(errp, "In '%s': ", filename);
        return false;
    }
    authz_rules_from_props(props, out);
    qapi_free_AuthZListProperties(props);
    return true;
}

static bool same_file_state(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
           a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Re-read an authz-listfile whose file changed since it was read.  The
 * stat comes before the read, so a write racing the read is seen as a
 * change at the next check.  A file that does not parse keeps the rules
 * last read (QEMU does the same), logged once per change. */
static void authz_listfile_refresh(Authz *a)
{
    AuthzRules fresh = { 0 };
    CLEANUP_ERROR Error *err = NULL;
    struct stat st;

    if (stat(a->filename, &st) < 0) {
        memset(&st, 0, sizeof(st));
    }
    if (same_file_state(&st, &a->seen)) {
        return;
    }
    a->seen = st;
    if (!authz_rules_load_file(a->filename, &fresh, &err)) {
        log_warn("authz-listfile '%s': keeping the previous rules: %s",
                 a->obj.id, error_get_pretty(err));
        return;
    }
    authz_rules_clear(&a->rules);
    a->rules = fresh;
    log_info("authz-listfile '%s': reloaded '%s'", a->obj.id, a->filename);
}

/* A relative filename is kept relative to the directory object-add ran
 * in: --daemonize changes to / after --object lines are carried out,
 * and the file is read again later. */
static char *absolute_path(const char *path)
{
    char cwd[PATH_MAX];

    if (path[0] == '/' || !getcwd(cwd, sizeof(cwd))) {
        return xstrdup(path);
    }
    return xasprintf("%s/%s", cwd, path);
}

Object *authz_new(ObjectSet *set, const ObjectOptions *opts, Error **errp)
{
    Authz *a = xzalloc(sizeof(*a));

    (void)set;
    switch (opts->qom_type) {
    case OBJECT_TYPE_AUTHZ_SIMPLE:
        a->identity = xstrdup(opts->u.authz_simple.identity);
        break;
    case OBJECT_TYPE_AUTHZ_LIST:
        authz_rules_from_props(&opts->u.authz_list, &a->rules);
        break;
    default: {
        const AuthZListFileProperties *p = &opts->u.authz_listfile;

        if (stat(p->filename, &a->seen) < 0) {
            error_setg_errno(errp, errno, "Unable to read '%s'",
                             p->filename);
            free(a);
            return NULL;
        }
        if (!authz_rules_load_file(p->filename, &a->rules, errp)) {
            free(a);
            return NULL;
        }
        a->filename = absolute_path(p->filename);
        a->refresh = p->refresh;
        break;
    }
    }
    return &a->obj;
}

void authz_free(Object *obj)
{
    Authz *a = (Authz *)obj;

    free(a->identity);
    free(a->filename);
    authz_rules_clear(&a->rules);
    free(a);
}

Authz *object_get_authz(ObjectSet *set, const char *id, Error **errp)
{
    Object *obj = object_find(set, id);

    if (!obj) {
        error_setg(errp, "Cannot find QAuthZ object ID %s", id);
        return NULL;
    }
    if (obj->type != OBJECT_TYPE_AUTHZ_SIMPLE &&
        obj->type != OBJECT_TYPE_AUTHZ_LIST &&
        obj->type != OBJECT_TYPE_AUTHZ_LISTFILE) {
        error_setg(errp, "Object '%s' is not a QAuthZ subclass", id);
        return NULL;
    }
    return (Authz *)obj;
}

const char *authz_id(const Authz *authz)
{
    return authz->obj.id;
}

bool authz_is_allowed(Authz *a, const char *identity)
{
    bool ok;

    if (!identity) {
        log_info("authz '%s': denied a client with no identity",
                 a->obj.id);
        return false;
    }
    switch (a->obj.type) {
    case OBJECT_TYPE_AUTHZ_SIMPLE:
        ok = strcmp(a->identity, identity) == 0;
        break;
    case OBJECT_TYPE_AUTHZ_LISTFILE:
        if (a->refresh) {
            authz_listfile_refresh(a);
        }
        ok = authz_rules_check(&a->rules, identity);
        break;
    default:
        ok = authz_rules_check(&a->rules, identity);
        break;
    }
    if (!ok) {
        log_info("authz '%s': denied identity '%s'", a->obj.id, identity);
    } else {
        log_debug("authz '%s': allowed identity '%s'", a->obj.id, identity);
    }
    return ok;
}
