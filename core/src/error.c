/*
 * error.c: filling struct wr_error. Messages are formatted once, where the failure is
 * understood, and gain context (vhost, queue, file) as they travel up with wr_error_wrap.
 */
#include "warren/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int wr_error_set(struct wr_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
    err->sys_errno = 0;
    return code;
}

int wr_error_sys(struct wr_error *err, int code, const char *fmt, ...)
{
    int saved = errno;
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(saved));
    err->code = code;
    err->sys_errno = saved;
    return code;
}

void wr_error_wrap(struct wr_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[WR_ERROR_MSG_MAX], old[WR_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncating a long chain of context is fine: the innermost reason comes last. */
    if (snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old) < 0)
        err->msg[0] = '\0';
}

void wr_error_clear(struct wr_error *err)
{
    if (!err)
        return;
    err->code = WR_OK;
    err->sys_errno = 0;
    err->msg[0] = '\0';
}

const char *wr_status_str(int code)
{
    switch (code) {
    case WR_OK: return "WR_OK";
    case WR_AGAIN: return "WR_AGAIN";
    case WR_ENOMEM: return "WR_ENOMEM";
    case WR_EINVAL: return "WR_EINVAL";
    case WR_EIO: return "WR_EIO";
    case WR_EPROTO: return "WR_EPROTO";
    case WR_ENOTFOUND: return "WR_ENOTFOUND";
    case WR_EEXIST: return "WR_EEXIST";
    case WR_ELIMIT: return "WR_ELIMIT";
    case WR_EABI: return "WR_EABI";
    case WR_EBUSY: return "WR_EBUSY";
    case WR_EPERM: return "WR_EPERM";
    }
    return "WR_E?";
}
