/*
 * jid.h - XMPP addresses (JIDs): parse, prep, compare, and an LRU cache.
 *
 * A JID is [node@]domain[/resource] (RFC 7622). Parsing splits the string
 * by the rules of RFC 7622 §3.1 (the first '/' starts the resource; in what
 * precedes it, the first '@' ends the node) and prepares each part with the
 * stringprep profiles of libidn, which is as close to RFC 7622 (PRECIS) as
 * libidn allows:
 *   node      Nodeprep (RFC 6122): case folded, NFKC, no space and none of
 *             " & ' / : < > @, no controls;
 *   domain    IP literal ("[IPv6]", or dotted-quad IPv4), or a name: IDNA
 *             ToASCII with the STD3 rules (letters, digits, hyphens; labels
 *             1..63 octets; Nameprep on non-ASCII labels), ASCII lower-cased,
 *             then ToUnicode. One trailing dot is removed (RFC 7622 §3.2);
 *   resource  Resourceprep (RFC 6122): NFKC, no controls, case kept.
 * Unassigned code points (Unicode 3.2) are allowed in all three parts, since
 * clients use newer characters (emoji in resources, MUC nicknames).
 *
 * The domain's comparison form is Unicode: A-labels ("xn--bcher-kva") are
 * turned into U-labels ("bücher"), so "bücher.example", "BÜCHER.example."
 * and "xn--bcher-kva.example" are one domain; RFC 7622 §3.2 says U-labels are
 * the form used in XMPP. An IPv6 literal is kept in the canonical text form
 * of inet_ntop ("[0:0::1]" becomes "[::1]") so two spellings of one address
 * do not pass as two domains; an IPv4 literal is kept as written (inet_pton
 * accepts only the canonical dotted-quad form).
 *
 * Every part is at most JID_PART_MAX octets after prep, and never empty when
 * present: "@example.com", "user@" and "example.com/" are refused. Inputs
 * longer than JID_INPUT_MAX are refused before libidn sees them.
 *
 * A struct jid is immutable and reference counted: jid_dup takes another
 * reference, jid_free drops one. Every function that returns a struct jid
 * returns a reference that the caller owns. Not thread-safe (neither is
 * libidn); each daemon uses it from its one loop thread.
 *
 * Errors: 0 on success, ERR_INVAL for malformed input or a prohibited
 * character, ERR_LIMIT for a part (or the input) over its length limit.
 */
#ifndef PARLEY_JID_H
#define PARLEY_JID_H

#include <stddef.h>
#include <stdint.h>

/* Longest part (node, domain or resource) after prep, in octets. */
#define JID_PART_MAX 1023
/* Longest full JID after prep: three parts and two separators. */
#define JID_FULL_MAX (3 * JID_PART_MAX + 2)
/* Longest input given to jid_parse or the prep helpers; prep may shorten a
 * string (a removed trailing dot, characters mapped to nothing), so this is
 * more than JID_FULL_MAX, but it bounds the work libidn is ever given. */
#define JID_INPUT_MAX 4096

/* Callers read these fields and never write them. */
struct jid {
    unsigned refs;
    const char *node;     /* prepped; NULL if the JID has no node */
    const char *domain;   /* prepped; never NULL or empty */
    const char *resource; /* prepped; NULL if the JID has no resource */
    const char *full;     /* node@domain/resource, as present */
    const char *bare;     /* node@domain, or domain */
    size_t node_len, domain_len, resource_len, full_len, bare_len;
    char data[]; /* the five strings above, each NUL-terminated */
};

/* Parse and prep len bytes of s (no NUL needed; an embedded NUL is
 * ERR_INVAL). On success *out is a new reference; on error *out is NULL. */
int jid_parse(const char *s, size_t len, struct jid **out);
/* jid_parse's result (0, ERR_INVAL or ERR_LIMIT) without the JID: the
 * check of an address that is passed on as it is. Allocates nothing for
 * ASCII addresses without an A-label or IP literal (what libidn would
 * decide goes through jid_parse). */
int jid_check(const char *s, size_t len);
/* jid_parse of a NUL-terminated string; NULL on error, with the code in
 * *err if err is not NULL. */
struct jid *jid_new(const char *s, int *err);
/* Build from raw (unprepped) parts; node and resource may be NULL for
 * absent, but an empty string is ERR_INVAL. */
int jid_from_parts(const char *node, const char *domain, const char *resource, struct jid **out);

/* Another reference to j (no copy: a struct jid never changes). */
struct jid *jid_dup(struct jid *j);
/* Drop a reference; the last one frees. NULL is fine. */
void jid_free(struct jid *j);

/* The bare JID (no resource): j itself (a new reference) if it is bare. */
struct jid *jid_bare(struct jid *j);
/* A new JID: the bare part of j with a raw resource, prepped here (resource
 * binding). len bytes of resource, no NUL needed. */
int jid_with_resource(const struct jid *j, const char *resource, size_t len, struct jid **out);

/* The canonical strings; valid as long as j is. */
const char *jid_full_str(const struct jid *j);
const char *jid_bare_str(const struct jid *j);

/* Nonzero if equal: all three parts, or node and domain only. Both are
 * byte comparisons of the prepped forms. */
int jid_eq_full(const struct jid *a, const struct jid *b);
int jid_eq_bare(const struct jid *a, const struct jid *b);

/* Prep one raw part of len bytes. On success *out is a NUL-terminated string
 * that the caller frees with free(), and *out_len (if not NULL) its length.
 * Empty input is ERR_INVAL. */
int jid_prep_node(const char *in, size_t len, char **out, size_t *out_len);
int jid_prep_domain(const char *in, size_t len, char **out, size_t *out_len);
int jid_prep_resource(const char *in, size_t len, char **out, size_t *out_len);

/*
 * The JID cache maps raw JID strings (as received) to prepped JIDs, so that
 * routing a stanza does not prep a JID the server has seen recently. It is a
 * segmented LRU: a new entry goes into the probation segment; a hit moves it
 * to the protected segment (4/5 of the capacity), whose least recently used
 * entry falls back to probation when it is full. Eviction takes the least
 * recently used probation entry. So a flood of distinct JIDs seen once each
 * only churns probation and cannot push out the JIDs in steady use.
 *
 * Invalid input is not cached: caching refusals would let junk evict good
 * entries, and refusing costs at most one prep of JID_INPUT_MAX bytes, which
 * the sender's stanza pays for.
 *
 * Memory is bounded twice: by the number of entries and by bytes (each
 * entry is charged its key, twice since the hash table keeps a copy, its
 * struct jid with the five prepped strings, and fixed overheads). Inputs
 * longer than JID_CACHE_KEY_MAX are prepped but never cached: routine JIDs
 * are far shorter, and long ones (up to ~10 KB of entry each, since prep
 * can lengthen a string) are the ones a flood would use to blow up memory.
 */
struct jid_cache;

/* Longest input that is cached. */
#define JID_CACHE_KEY_MAX 256
/* Default byte budget per entry of capacity (jid_cache_set_max_bytes). */
#define JID_CACHE_ENTRY_BYTES 512

struct jid_cache_stats {
    uint64_t hits;      /* found in the cache */
    uint64_t misses;    /* valid and prepped (cached unless too long or too big) */
    uint64_t invalid;   /* refused (not cached) */
    uint64_t evictions; /* dropped to make room */
    size_t count;       /* entries now */
    size_t capacity;
    size_t bytes;     /* memory charged to the entries now */
    size_t max_bytes; /* the byte budget */
};

/* capacity 0 gives a cache that never stores anything. The byte budget
 * starts at capacity * JID_CACHE_ENTRY_BYTES. */
struct jid_cache *jid_cache_new(size_t capacity);
/* Change the byte budget (evicting down to it at once). */
void jid_cache_set_max_bytes(struct jid_cache *c, size_t max_bytes);
/* Drops the cache's references; JIDs callers still hold stay valid. */
void jid_cache_free(struct jid_cache *c);
/* jid_parse through the cache: same results and errors. On success *out is
 * a new reference (shared with the cache and other callers) that the
 * caller drops with jid_free. */
int jid_cache_prep(struct jid_cache *c, const char *s, size_t len, struct jid **out);
void jid_cache_stats(const struct jid_cache *c, struct jid_cache_stats *out);

#endif
