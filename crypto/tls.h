/* tls.h - what the TLS transport (nbd/) uses from the object layer:
 * credentials that open a gnutls session and check the peer after the
 * handshake, and authorization of the peer's identity.
 *
 *   object_get_tls_creds(set, "tls0", SERVER)   at nbd-server-start /
 *   object_add_user(set, "tls0", "nbd-server")  blockdev-add (once)
 *       │
 *   tls_creds_session_new(creds, SERVER, NULL, &s)     per connection
 *   gnutls_transport_set_*(s, ...); gnutls_handshake(s)   (the caller)
 *   tls_creds_check_peer(creds, s, NULL, &identity)
 *   authz_is_allowed(authz, identity)                   (if tls-authz)
 *
 * TlsCreds and Authz pointers are borrowed from the ObjectSet: valid
 * while the object exists, which the caller guarantees by registering as
 * a user (object_add_user) for as long as it keeps them; object-del then
 * refuses the object.  Everything here runs on the loop thread.
 */
#ifndef BLOCKD_CRYPTO_TLS_H
#define BLOCKD_CRYPTO_TLS_H

#include <stdbool.h>

#include <gnutls/gnutls.h>

#include "crypto/object.h"
#include "util/error.h"

typedef enum TlsEndpoint {
    TLS_ENDPOINT_SERVER,
    TLS_ENDPOINT_CLIENT,
} TlsEndpoint;

typedef struct TlsCreds TlsCreds;   /* tls-creds-x509, -psk or -anon */
typedef struct Authz Authz;         /* authz-simple, -list or -listfile */

/* The TLS credentials object id, for an endpoint of kind want.  Errors
 * in QEMU's words: "No TLS credentials with id 'X'", "Object with id 'X'
 * is not TLS credentials", "Expected TLS credentials for a server
 * endpoint" (or client; QEMU 7.2's wording).  Borrowed (see above). */
TlsCreds *object_get_tls_creds(ObjectSet *set, const char *id,
                               TlsEndpoint want, Error **errp);
/* object_get_tls_creds and object_add_user(set, id, user) at once,
 * under the set's lock: any thread (the nbd driver's open on a
 * worker).  The caller unpins with object_remove_user. */
TlsCreds *object_use_tls_creds(ObjectSet *set, const char *id,
                               TlsEndpoint want, const char *user,
                               Error **errp);
/* The authorization object id, in QEMU's words: "Cannot find QAuthZ
 * object ID X", "Object 'X' is not a QAuthZ subclass".  Borrowed. */
Authz *object_get_authz(ObjectSet *set, const char *id, Error **errp);

/* The object id and the endpoint of creds (for messages and logs). */
const char *tls_creds_id(const TlsCreds *creds);
TlsEndpoint tls_creds_endpoint(const TlsCreds *creds);

/* A new gnutls session for one connection (gnutls_init with the
 * endpoint), with creds' credentials and priority string set, the
 * server asking for a client certificate when verify-peer is on, and
 * for a client the server name (SNI) set to hostname when hostname is
 * not NULL and not an IP address.  The caller sets the transport, runs
 * gnutls_handshake and calls gnutls_deinit.  creds must outlive the
 * session.  The session's user pointer (gnutls_session_set_ptr) belongs
 * to this module (a PSK server finds its keys through it): use the
 * transport pointer for the caller's state. */
bool tls_creds_session_new(TlsCreds *creds, TlsEndpoint endpoint,
                           const char *hostname, gnutls_session_t *out,
                           Error **errp);

/* After a successful gnutls_handshake: check the peer.  x509 with
 * verify-peer: the peer's certificate chain must verify against the CA
 * (and CRL), be within its validity period, be made for the peer's
 * role (its extended key usage, when it has one) and, on a client,
 * name hostname (NULL fails: "No hostname for certificate
 * validation", as QEMU); a missing peer certificate fails.
 * x509 without verify-peer checks nothing.  *identity (if identity is
 * not NULL) becomes a new string the caller frees: the peer
 * certificate's distinguished name ("C=GB,O=Example,CN=client" as
 * gnutls_x509_crt_get_dn prints it, QEMU's identity), the PSK username
 * a server saw, or NULL when there is none (anon, a PSK client, x509
 * with verify-peer off: an unverified name is no identity). */
bool tls_creds_check_peer(TlsCreds *creds, gnutls_session_t session,
                          const char *hostname, char **identity,
                          Error **errp);

/* Who the peer of an established session says it is, for a log line
 * about a refusal: its certificate's DN or its PSK username (a new
 * string), NULL when it showed neither. */
char *tls_session_peer_name(gnutls_session_t session);

/* Whether identity may connect.  NULL identity is denied.
 * authz-listfile re-reads its file first when it changed (refresh=on);
 * a file that no longer parses keeps the last good rules (logged).
 * Every denial is logged at info level with the object id and the
 * identity. */
bool authz_is_allowed(Authz *authz, const char *identity);

/* The object id of authz (for messages and logs). */
const char *authz_id(const Authz *authz);

#endif
