#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int text_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;  /* 'A'-'F' become 'a'-'f'; no other byte does */
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

void text_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

size_t text_pct_byte(unsigned char c, char *out)
{
    static const char hex[] = "0123456789ABCDEF";

    if (c && strchr(TEXT_UNRESERVED, c)) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = '%';
    out[1] = hex[c >> 4];
    out[2] = hex[c & 15];
    return 3;
}

long text_pct_encode(const char *s, char *out, size_t cap)
{
    size_t o = 0;

    for (; *s; s++) {
        if (o + 4 > cap)
            return -1;
        o += text_pct_byte((unsigned char)*s, out + o);
    }
    out[o] = '\0';
    return (long)o;
}

/* Ranges, not a search of the alphabet: this runs for every byte of the CA bundle at
 * start-up (200 KB), where a strchr() per byte made the whole load 3.6 times slower. */
int text_base64_digit(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

long text_base64_decode(const unsigned char *in, size_t n, unsigned char *out, int url)
{
    unsigned long acc = 0;
    size_t o = 0;
    int bits = 0, pad = 0;

    for (size_t i = 0; i < n; i++) {
        int v = text_base64_digit(in[i], url);
        if (v < 0) {
            /* padding, or (PEM) the white space between lines: off the digits' path */
            if (in[i] == '=')
                pad = 1;
            else if (url || !memchr(" \t\r\n", in[i], 4))
                return -1;
            continue;
        }
        if (pad)
            return -1;
        acc = (acc << 6) | (unsigned long)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return bits == 6 ? -1 : (long)o;
}

size_t text_utf8_next(const unsigned char *p, size_t avail, unsigned *cp)
{
    unsigned char c = p[0];
    /* the sequence's length from its lead byte; 0: not a lead byte (C0 and C1 only start
     * overlong forms, F5 and above code points over U+10FFFF) */
    size_t n = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
    /* the second byte's range, narrower after E0 and F0 (overlong), ED (surrogates) and
     * F4 (over U+10FFFF) */
    unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;

    *cp = n == 1 ? c : c & (0x7fu >> n);
    if (n <= 1 || avail < n || p[1] < lo || p[1] > hi)
        return n == 1 ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
        *cp = *cp << 6 | (p[i] & 0x3f);
    }
    return n;
}

unsigned text_utf8_put(unsigned long cp, unsigned char *out)
{
    unsigned n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[] = { 0, 0, 0xc0, 0xe0, 0xf0 };

    /* continuation bytes from the last one back, then the lead byte */
    for (unsigned i = n - 1; i > 0; i--) {
        out[i] = (unsigned char)(0x80 | (cp & 0x3f));
        cp >>= 6;
    }
    out[0] = (unsigned char)(lead[n] | cp);
    return n;
}

int text_clean(const char *s, unsigned char lowest, const char *bad)
{
    for (; *s; s++)
        if ((unsigned char)*s < lowest || *s == 0x7f || (bad && strchr(bad, *s)))
            return 0;
    return 1;
}

int text_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n > k && strcmp(s + n - k, suffix) == 0;
}

void text_wipe_free(void *buf, size_t len)
{
    if (buf) {
        explicit_bzero(buf, len);
        free(buf);
    }
}

int text_read_file(const char *path, const char *what, size_t max, int flags, char **out,
                   size_t *out_len, struct lerr *e)
{
    const char *name = path ? path : "stdin";
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO, rc = 0;
    size_t len = 0, cap = 65536;  /* a pipe's first read */
    struct stat st;
    ssize_t n = 1;
    char *buf = NULL;

    if (fd < 0 && (flags & TEXT_READ_MISSING_OK) && (errno == ENOENT || errno == ENOTDIR))
        return 1;  /* "" too is no file */
    if (fd < 0)
        return lerr_set(e, LERR_IO, "cannot open %s%s: %s", what, name, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
    else if (flags & TEXT_READ_REGULAR)
        rc = lerr_set(e, LERR_INVALID, "%s%s is not a regular file", what, name);
    if (rc == 0)
        buf = malloc(cap);
    /* reads up to max + 1 bytes: one more than max says the file is too large */
    while (rc == 0 && buf && n != 0) {
        if ((n = read(fd, buf + len, cap - len)) < 0 && errno != EINTR)
            rc = lerr_set(e, LERR_IO, "cannot read %s%s: %s", what, name, strerror(errno));
        else if (n > 0 && (len += (size_t)n) > max)
            rc = lerr_set(e, LERR_TOO_LARGE, "%s%s is larger than %zu bytes", what, name, max);
        else if (len == cap) {  /* full: a pipe, or a file that grew since fstat */
            char *old = buf;

            cap = cap > max / 2 ? max + 1 : 2 * cap;
            if ((buf = malloc(cap)))
                memcpy(buf, old, len);
            text_wipe_free(old, len);  /* not realloc: it would not wipe the old one */
        }
    }
    if (path)
        close(fd);
    if (rc == 0 && buf) {
        buf[len] = '\0';
        *out = buf;
        *out_len = len;
        return 0;
    }
    text_wipe_free(buf, len);
    return rc < 0 ? -1 : lerr_set(e, LERR_NOMEM, "out of memory reading %s%s", what, name);
}
