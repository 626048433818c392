/*
 * log.h - one line per event, to stderr or syslog.
 *
 * The log macros prefix the calling function's name. Messages are
 * sanitised: control characters (from untrusted input quoted in a message)
 * are escaped, so one event is always one line. Never pass a secret
 * (password, key, handshake digest) to a log call.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_NOTICE, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* ident: program name. use_syslog: 0 logs to stderr (with a timestamp). */
void log_init(const char *ident, int use_syslog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "err|warn|notice|info|debug"; returns 0 or ERR_INVAL. */
int log_level_parse(const char *s, enum log_level *out);
/* Reopen the log target (SIGHUP); a no-op for stderr. */
void log_reopen(void);
void log_close(void);

void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, const char *func, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Log at ERR and exit(1): start-up failures only. */
void log_fatal(const char *func, const char *fmt, ...) __attribute__((format(printf, 2, 3)))
__attribute__((noreturn));

#define log_err(...)    log_msg(LOG_LVL_ERR, __func__, __VA_ARGS__)
#define log_warn(...)   log_msg(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __func__, __VA_ARGS__)
#define log_info(...)   log_msg(LOG_LVL_INFO, __func__, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_DEBUG)                                                      \
            log_msg(LOG_LVL_DEBUG, __func__, __VA_ARGS__);                                         \
    } while (0)
#define fatal(...) log_fatal(__func__, __VA_ARGS__)

#endif
