/*
 * fuzz_config.c - arbitrary bytes as a configuration file, against a table
 * with every entry type, then a structured part through config_apply.
 * Must not crash, hang or leak; errors are expected and ignored.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/log.h"
#include "common/xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const modes[] = {"open", "closed", "invite", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool started;
    if (!started) {
        log_init("fuzz_config", 0, LOG_LVL_ERR);
        started = true;
    }
    const char *name, *host, *key, *secret, *cname, *csecret;
    int port, mode;
    bool tls, internal;
    size_t max_stanza;
    uint64_t timeout;
    struct xml_node *component;
    const struct config_entry table[] = {
        CONFIG_STRING("name", CONFIG_REQUIRED, NULL, &name),
        CONFIG_INT("listen/port", 0, "5222", 1, 65535, &port),
        CONFIG_STRING("listen@host", 0, "::", &host),
        CONFIG_BOOL("listen/tls", 0, "yes", &tls),
        CONFIG_SIZE("limits/max-stanza", 0, "64k", 1024, 16 << 20, &max_stanza),
        CONFIG_DURATION("limits/timeout", 0, "30s", 100, 0, &timeout),
        CONFIG_PATH("key", 0, "keys/server.pem", &key),
        CONFIG_ENUM("mode", 0, "open", modes, &mode),
        CONFIG_SECRET("secret", 0, &secret),
        CONFIG_NODE("component", 0, &component),
        CONFIG_END,
    };
    const struct config_entry ctable[] = {
        CONFIG_STRING("@name", CONFIG_REQUIRED, NULL, &cname),
        CONFIG_BOOL("@internal", 0, "no", &internal),
        CONFIG_SECRET("secret", 0, &csecret),
        CONFIG_END,
    };
    char err[256];
    struct config *cfg;
    if (config_parse("fuzz/router.xml", (const char *)data, size, "router", table, &cfg, err,
                     sizeof(err)) != 0)
        return 0;
    for (struct xml_node *c = component; c; c = xml_next(c, NULL, "component"))
        config_apply(cfg, c, ctable);
    config_free(cfg);
    return 0;
}
