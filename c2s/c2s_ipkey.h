/*
 * c2s_ipkey.h - the key under which c2s accounts a client address
 * (connections per IP, connect rate, auth failure delays). Pure functions,
 * no loop, unit tested.
 *
 * IPv4 addresses (and IPv4-mapped IPv6 ones) are keyed whole; IPv6
 * addresses by their first prefix bits (default /64: one end site usually
 * holds a whole /64, so keying full addresses would give it 2^64 buckets).
 */
#ifndef PARLEY_C2S_IPKEY_H
#define PARLEY_C2S_IPKEY_H

#include <stddef.h>

#define C2S_IPKEY_MAX 16

/*
 * Write the key for addr (4 or 16 bytes) to out (C2S_IPKEY_MAX bytes) and
 * return its length: 4 for IPv4 and IPv4-mapped IPv6, 16 for IPv6 with the
 * bits past prefix (0..128) zeroed. 0 for any other length.
 */
size_t c2s_ipkey_make(const unsigned char *addr, size_t len, unsigned prefix,
                      unsigned char out[C2S_IPKEY_MAX]);

#endif
