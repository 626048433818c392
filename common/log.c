/*
 * log.c - stderr/syslog logging (see log.h).
 *
 * Process-wide state: one log target per daemon, set once at start-up.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define LOG_LINE_MAX 2048

static const char *log_ident = "parley";
static int log_syslog;
static enum log_level log_level = LOG_LVL_INFO;

static const char *const level_names[] = {"err", "warn", "notice", "info", "debug"};
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG};

void log_init(const char *ident, int use_syslog, enum log_level level)
{
    log_ident = ident;
    log_level = level;
    if (log_syslog)
        closelog();
    log_syslog = use_syslog;
    if (use_syslog)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

enum log_level log_get_level(void)
{
    return log_level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return ERR_INVAL;
}

void log_reopen(void)
{
    if (log_syslog) {
        closelog();
        openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    }
}

void log_close(void)
{
    if (log_syslog)
        closelog();
    log_syslog = 0;
}

/* Escape control bytes so that one event stays one line. */
static void sanitise(char *dst, size_t dstlen, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (; *src && o + 5 < dstlen; src++) {
        unsigned char c = (unsigned char)*src;
        if (c < 0x20 || c == 0x7f) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
}

void log_vmsg(enum log_level level, const char *func, const char *fmt, va_list ap)
{
    if (level > log_level)
        return;
    char raw[LOG_LINE_MAX], line[LOG_LINE_MAX];
    vsnprintf(raw, sizeof(raw), fmt, ap);
    sanitise(line, sizeof(line), raw);
    if (log_syslog) {
        syslog(syslog_prio[level], "%s: %s", func, line);
        return;
    }
    char stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s[%ld] %s: %s: %s\n", stamp, ts.tv_nsec / 1000000, log_ident,
            (long)getpid(), level_names[level], func, line);
}

void log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, func, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *func, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_LVL_ERR, func, fmt, ap);
    va_end(ap);
    exit(1);
}
