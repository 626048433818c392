/*
 * err.c - texts for the error codes of err.h.
 */
#include "autoconfig.h"

#include "common/err.h"

const char *err_str(int code)
{
    switch (code) {
    case ERR_OK:
        return "success";
    case ERR_INVAL:
        return "invalid argument or input";
    case ERR_LIMIT:
        return "limit exceeded";
    case ERR_PARSE:
        return "parse error";
    case ERR_IO:
        return "I/O error";
    case ERR_TLS:
        return "TLS error";
    case ERR_TIMEOUT:
        return "timed out";
    case ERR_NOTFOUND:
        return "not found";
    case ERR_EXISTS:
        return "already exists";
    case ERR_CLOSED:
        return "closed";
    case ERR_CONFIG:
        return "configuration error";
    case ERR_SYS:
        return "system error";
    case ERR_AGAIN:
        return "try again";
    case ERR_AUTH:
        return "authentication failed";
    case ERR_PERM:
        return "not permitted";
    case ERR_BADSTATE:
        return "invalid state";
    case ERR_DB:
        return "database error";
    }
    return "unknown error";
}
