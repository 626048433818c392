/*
 * err.h - the one set of error codes used across Parley.
 *
 * Functions return 0 on success or one of these negative codes. The codes
 * say what kind of failure happened; the details go to the log at the place
 * that saw them. err_str() gives a short fixed text for a code.
 */
#ifndef PARLEY_ERR_H
#define PARLEY_ERR_H

enum err {
    ERR_OK = 0,
    ERR_INVAL = -1,     /* bad argument or malformed input */
    ERR_LIMIT = -2,     /* a configured limit was reached */
    ERR_PARSE = -3,     /* input could not be parsed */
    ERR_IO = -4,        /* read/write/socket failure */
    ERR_TLS = -5,       /* TLS handshake or record failure */
    ERR_TIMEOUT = -6,   /* a timer expired */
    ERR_NOTFOUND = -7,  /* no such item */
    ERR_EXISTS = -8,    /* item already present */
    ERR_CLOSED = -9,    /* the object is closing or closed */
    ERR_CONFIG = -10,   /* configuration is invalid */
    ERR_SYS = -11,      /* a system call failed (errno logged) */
    ERR_AGAIN = -12,    /* try again later (backpressure) */
    ERR_AUTH = -13,     /* authentication failed */
    ERR_PERM = -14,     /* not permitted */
    ERR_BADSTATE = -15, /* call not valid in the current state */
    ERR_DB = -16,       /* database failure */
};

/* Short description of an error code; never NULL. */
const char *err_str(int code);

#endif
