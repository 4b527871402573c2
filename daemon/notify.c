/* notify.c - see notify.h. */
#include "daemon/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/log.h"

bool daemon_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    CLEANUP_CLOSE int fd = -1;
    size_t len;
    socklen_t salen;

    if (path == NULL || (path[0] != '/' && path[0] != '@')) {
        return false;
    }
    len = strlen(path);
    if (len >= sizeof(sun.sun_path)) {
        log_warn("NOTIFY_SOCKET is too long");
        return false;
    }
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@') {
        sun.sun_path[0] = '\0';         /* abstract: no terminator */
        salen = offsetof(struct sockaddr_un, sun_path) + len;
    } else {
        salen = sizeof(sun);
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        sendto(fd, state, strlen(state), MSG_NOSIGNAL,
               (struct sockaddr *)&sun, salen) < 0) {
        log_warn("Could not notify the service manager (%s): %s", state,
                 strerror(errno));
        return false;
    }
    return true;
}
