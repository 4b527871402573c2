/* qnbd-list.c - blockd-nbd -L: list a server's exports as qemu-nbd
 * 7.2 prints them (nbd/client.h's list mode), through TLS when
 * --tls-creds names a tls-creds-* object with endpoint=client. */
#include "daemon/qnbd.h"

#include <stdlib.h>

#include "crypto/object.h"
#include "crypto/tls.h"
#include "nbd/client-tls.h"
#include "nbd/client.h"
#include "qapi-types.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/keyval.h"
#include "util/sock.h"

int qnbd_list(const QnbdOptions *o)
{
    SockAddr addr = { 0 };
    NbdClientOpts co = { .timeout_ms = 60 * 1000 };
    NbdClientTls tls = { 0 };
    NbdExportList list = { 0 };
    ObjectSet *objects = NULL;
    Error *err = NULL;
    int status = 1;

    if (o->sockpath != NULL) {
        addr.type = SOCK_ADDR_UNIX;
        addr.path = o->sockpath;
    } else {
        addr.type = SOCK_ADDR_INET;
        addr.host = o->bind;
        addr.port = o->port;
    }
    if (o->nobjects > 0 || o->tls_creds != NULL) {
        QmpCtx ctx = { 0 };

        objects = object_set_new();
        ctx.objects = objects;
        for (size_t i = 0; i < o->nobjects; i++) {
            CLEANUP_JSON json_object *args =
                keyval_parse(o->objects[i], "qom-type", &err);

            if (args == NULL ||
                !qmp_execute(&ctx, "object-add", args, QAPI_PARSE_KEYVAL,
                             NULL, &err)) {
                goto out;
            }
        }
    }
    if (o->tls_creds != NULL) {
        tls.creds = object_get_tls_creds(objects, o->tls_creds,
                                         TLS_ENDPOINT_CLIENT, &err);
        if (tls.creds == NULL) {
            error_prepend(&err, "Failed to get TLS creds: ");
            goto out;
        }
        tls.hostname = o->tls_hostname ? o->tls_hostname : o->bind;
        co.starttls = nbd_client_starttls;
        co.starttls_opaque = &tls;
    }
    if (!nbd_client_list(&addr, &co, &list, &err)) {
        goto out;
    }
    nbd_export_list_print(stdout, &list);
    fflush(stdout);
    nbd_export_list_clear(&list);
    status = 0;
out:
    if (err != NULL) {
        error_report_err(o->prog, err);
    }
    if (objects != NULL) {
        object_set_free(objects);
    }
    return status;
}

