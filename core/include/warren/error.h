/*
 * error.h: return codes and the error message a user can act on.
 *
 * A fallible function returns int: WR_OK (0) or a negative enum wr_status, and may fill an
 * optional struct wr_error. WR_AGAIN (+1) means "need more bytes / try later"; it is not an
 * error. errno is saved into the error right after the failing syscall, never passed on.
 */
#ifndef WARREN_ERROR_H
#define WARREN_ERROR_H

#include "warren/export.h"

WR_BEGIN_DECLS

enum wr_status {
    WR_OK = 0,
    WR_AGAIN = 1,
    WR_ENOMEM = -1,    /* out of memory */
    WR_EINVAL = -2,    /* invalid argument or configuration */
    WR_EIO = -3,       /* a system call failed; sys_errno says why */
    WR_EPROTO = -4,    /* malformed input from a peer or a file */
    WR_ENOTFOUND = -5, /* no such object, or nothing ready */
    WR_EEXIST = -6,    /* already exists with other properties */
    WR_ELIMIT = -7,    /* a configured limit was reached */
    WR_EABI = -8,      /* a plugin built for another ABI */
    WR_EBUSY = -9,     /* in use (if-unused, if-empty, exclusive) */
    WR_EPERM = -10,    /* not allowed (reserved names, permissions) */
};

#define WR_ERROR_MSG_MAX 512

struct wr_error {
    int code;                    /* an enum wr_status, WR_OK if nothing was set */
    int sys_errno;               /* errno of the failing syscall, or 0 */
    char msg[WR_ERROR_MSG_MAX];  /* what happened and what to do, for a human */
};

/* Sets err (if not NULL) to code and the formatted message; returns code so a caller can
 * write `return wr_error_set(err, WR_EINVAL, "...")`. Thread: any. */
WR_API int wr_error_set(struct wr_error *err, int code, const char *fmt, ...) WR_PRINTF(3, 4);

/* Like wr_error_set, and records errno (read at entry) into err->sys_errno and appends
 * ": strerror(errno)" to the message. */
WR_API int wr_error_sys(struct wr_error *err, int code, const char *fmt, ...) WR_PRINTF(3, 4);

/* Prefixes err->msg with the formatted text and ": ", keeping the code: to add context as an
 * error travels up ("vhost '/': queue 'q': ..."). No-op when err is NULL. */
WR_API void wr_error_wrap(struct wr_error *err, const char *fmt, ...) WR_PRINTF(2, 3);

/* Resets err to WR_OK with an empty message. */
WR_API void wr_error_clear(struct wr_error *err);

/* A short name for a status code ("WR_EINVAL"). */
WR_API const char *wr_status_str(int code);

WR_END_DECLS

#endif
