#include "creds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "http.h"
#include "httpresp.h"
#include "log.h"
#include "ratelimit.h"
#include "text.h"

#define XML_MAX_DEPTH 16
#define XML_TEXT_MAX 8192
#define XML_PATH_MAX 1024
#define FLY_ANSWER_MAX (64 * 1024)
#define STS_ANSWER_MAX (256 * 1024)

/* ======================================================================================
 * Small helpers
 * ==================================================================================== */

static int creds_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void creds_trim(const char *b, size_t *s, size_t *end)
{
    while (*s < *end && creds_ws(b[*s]))
        (*s)++;
    while (*end > *s && creds_ws(b[*end - 1]))
        (*end)--;
}

/* Everything that ends up in a header or a form body: printable ASCII, no spaces.
 * AWS keys, session tokens and JWTs never hold anything else. */
static int creds_clean(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* Copies src when it fits; returns whether it did. */
static int creds_copy(char *dst, size_t cap, const char *src)
{
    return (size_t)snprintf(dst, cap, "%s", src) < cap;
}

/* Copies a secret or an identifier; the messages name it, never quote it. */
static int creds_put(char *dst, size_t cap, const char *src, size_t n, const char *what,
                     struct lerr *e)
{
    if (n == 0)
        return lerr_set(e, LERR_INVALID, "%s: empty", what);
    if (n >= cap)
        return lerr_set(e, LERR_INVALID, "%s: longer than %zu bytes", what, cap - 1);
    if (!creds_clean(src, n))
        return lerr_set(e, LERR_INVALID, "%s: contains spaces, control or non-ASCII characters",
                        what);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

/* printf rather than strftime: strftime would bring musl's locale and time zone code.
 * gmtime_r cannot fail here: every time shown comes from creds_parse_time or a JWT's exp,
 * both before the year 10000. */
static const char *creds_fmt_time(int64_t t, char out[80])
{
    time_t tt = (time_t)t;
    struct tm tm = { 0 };

    gmtime_r(&tt, &tm);
    snprintf(out, 80, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return out;
}

static int creds_region_ok(const char *s, size_t n)
{
    size_t k = 0;

    while (k < n && ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= '0' && s[k] <= '9') || s[k] == '-'))
        k++;
    return k == n && n > 0 && n < CREDS_REGION_MAX;
}

void creds_snapshot_wipe(struct creds_snapshot *s)
{
    explicit_bzero(s, offsetof(struct creds_snapshot, session_token) +
                          strnlen(s->session_token, sizeof s->session_token));
}

void creds_sigv4(const struct creds_snapshot *s, struct sigv4_credentials *out)
{
    out->access_key_id = s->access_key_id;
    out->secret_access_key = s->secret_access_key;
    out->session_token = s->session_token[0] ? s->session_token : NULL;
}

/* ======================================================================================
 * ISO 8601 times
 * ==================================================================================== */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), so
 * that no time zone or libc timegm() is involved. */
static int64_t creds_days(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Whether s starts with pat, where '0' stands for any digit; each run of '0's is a number,
 * stored in turn in v. */
static int creds_pattern(const char *s, size_t len, const char *pat, int *v)
{
    size_t n = strlen(pat);

    for (size_t k = 0; k < n; k++) {
        if (k >= len || (pat[k] == '0' ? s[k] < '0' || s[k] > '9' : s[k] != pat[k]))
            return 0;
        if (pat[k] == '0')
            *v = *v * 10 + (s[k] - '0');
        else if (k > 0 && pat[k - 1] == '0')
            v++;
    }
    return 1;
}

int creds_parse_time(const char *s, size_t len, int64_t *out, struct lerr *e)
{
    int v[6] = { 0 }, zone[2] = { 0 }, offset = 0;  /* v: year, month, day, h, min, s */
    size_t i = 19;

    if (!creds_pattern(s, len, "0000-00-00T00:00:00", v))
        goto bad;
    if (i < len && s[i] == '.') {
        while (++i < len && s[i] >= '0' && s[i] <= '9')
            continue;
        if (i == 20)
            goto bad;
    }
    if (i + 6 == len && (s[i] == '+' || s[i] == '-') &&
        creds_pattern(s + i + 1, 5, "00:00", zone) && zone[0] <= 23 && zone[1] <= 59)
        offset = (zone[0] * 3600 + zone[1] * 60) * (s[i] == '+' ? 1 : -1);
    else if (i + 1 != len || s[i] != 'Z')
        goto bad;  /* a time without a zone would be a guess */
    /* A day past the month's last would be on or after the next month's first. */
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[3] > 23 || v[4] > 59 || v[5] > 60 ||
        creds_days(v[0], (unsigned)v[1], (unsigned)v[2]) >=
            creds_days(v[0] + v[1] / 12, (unsigned)(v[1] % 12 + 1), 1))
        goto bad;
    *out = creds_days(v[0], (unsigned)v[1], (unsigned)v[2]) * 86400 + v[3] * 3600 + v[4] * 60 +
           v[5] - offset;
    return 0;
bad:
    return lerr_set(e, LERR_INVALID, "not an ISO 8601 time (YYYY-MM-DDTHH:MM:SSZ)");
}

/* ======================================================================================
 * JWT exp claim
 * ==================================================================================== */

int creds_jwt_exp(const char *token, size_t len, int64_t *exp, struct lerr *e)
{
    const char *d1 = memchr(token, '.', len), *d2;
    unsigned char *buf;
    size_t plen;
    long blen;
    cJSON *root;
    const cJSON *item;
    int rc = -1;

    d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        return lerr_set(e, LERR_INVALID, "not a JWT (header.payload.signature)");
    plen = (size_t)(d2 - d1 - 1);  /* the payload, after d1 */
    if (!(buf = malloc(plen * 3 / 4 + 3)))
        return lerr_set(e, LERR_NOMEM, "out of memory");
    blen = plen ? text_base64_decode((const unsigned char *)d1 + 1, plen, buf, 1) : -1;
    root = blen < 0 ? NULL : json_parse((const char *)buf, (size_t)blen);
    item = cJSON_GetObjectItemCaseSensitive(root, "exp");  /* NULL-safe */
    if (blen < 0) {
        lerr_set(e, LERR_INVALID, "JWT payload is not base64url");
    } else if (!root) {
        lerr_set(e, LERR_INVALID, "JWT payload is not JSON");
    } else if (!cJSON_IsObject(root) || !cJSON_IsNumber(item) || !(item->valuedouble >= 0) ||
               !(item->valuedouble < 253402300800.0)) {
        /* NumericDate: seconds; anything beyond year 9999 is not a real expiry. */
        lerr_set(e, LERR_INVALID, "JWT has no numeric exp claim");
    } else {
        *exp = (int64_t)item->valuedouble;
        rc = 0;
    }
    cJSON_Delete(root);
    text_wipe_free(buf, plen * 3 / 4 + 3);
    return rc;
}

/* ======================================================================================
 * STS's XML answers: a strict little recursive-descent reader. One call reads one element,
 * its children by calling itself, going from markup to markup through a table of what may
 * follow '<'. The open elements are kept as a path ("/ErrorResponse/Error/Code"): each
 * call adds its name, its end tag must match it, and a leaf's text is kept when its path
 * is a field's.
 * ==================================================================================== */

#define STS_OK_ROOT "/AssumeRoleWithWebIdentityResponse"
#define STS_ERR_ROOT "/ErrorResponse"
#define STS_CREDS STS_OK_ROOT "/AssumeRoleWithWebIdentityResult/Credentials/"
#define STS_AT(f) offsetof(struct creds_sts_answer, f), sizeof ((struct creds_sts_answer *)0)->f

/* The leaves kept, where their text goes: the credentials, then the error's words. */
enum { F_EXPIRATION = 3, F_CODE, F_MESSAGE, F_COUNT };
static const struct {
    const char *path;
    size_t off, cap;
} sts_fields[F_COUNT] = {
    { STS_CREDS "AccessKeyId", STS_AT(creds.access_key_id) },
    { STS_CREDS "SecretAccessKey", STS_AT(creds.secret_access_key) },
    { STS_CREDS "SessionToken", STS_AT(creds.session_token) },
    { STS_CREDS "Expiration", STS_AT(creds.expiration) },
    { STS_ERR_ROOT "/Error/Code", STS_AT(error_code) },
    { STS_ERR_ROOT "/Error/Message", STS_AT(error_message) },
};

/* What may follow '<', tried in order. CDATA and end tags only inside the root; a
 * construct with a close is skipped past it, one with only a why is refused. */
enum { M_COMMENT, M_CDATA, M_END_TAG, M_PI, M_DECLARATION, M_START_TAG };  /* its rows */
static const struct {
    const char *open, *close, *why;
} xml_markup[] = {
    { "<!--", "--", "comment" },
    { "<![CDATA[", "]]>", "CDATA section" },
    { "</", NULL, NULL },
    { "<?", NULL, "a processing instruction is not accepted" },
    { "<!", NULL, "a DOCTYPE or other declaration is not accepted" },
    { "<", NULL, NULL },
};

struct xml {
    const char *b;
    size_t len, i;
    char path[XML_PATH_MAX];               /* the open elements, "/Root/Child" */
    char text[XML_TEXT_MAX];               /* the innermost element's text, or an attribute's;
                                              references decoded */
    size_t text_len;
    struct creds_sts_answer *out;
    unsigned seen;                         /* 1 << F_* for each field read */
};

static int xml_bad(const struct xml *x, struct lerr *e, const char *what)
{
    return lerr_set(e, LERR_MALFORMED, "malformed XML: %s at byte %zu", what, x->i);
}

static int xml_at(const struct xml *x, const char *lit)
{
    size_t n = strlen(lit);
    return x->len - x->i >= n && memcmp(x->b + x->i, lit, n) == 0;
}

/* Char of XML 1.0 as bytes: controls other than tab, LF, CR are refused. */
static int xml_char(unsigned char c)
{
    return c >= 0x20 || creds_ws((char)c);
}

/* Returns how much it skipped. */
static size_t xml_skip_space(struct xml *x)
{
    size_t start = x->i;

    while (x->i < x->len && creds_ws(x->b[x->i]))
        x->i++;
    return x->i - start;
}

/* The length of the name at x->i, 0 when there is none. ASCII names only: all STS sends. */
static size_t xml_name(const struct xml *x)
{
    size_t n = 0;

    for (; x->i + n < x->len; n++) {
        unsigned char c = (unsigned char)x->b[x->i + n];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':' ||
              (n > 0 && ((c >= '0' && c <= '9') || c == '-' || c == '.'))))
            break;
    }
    return n;
}

static int xml_text_add(struct xml *x, const char *s, size_t n, struct lerr *e)
{
    if (n > XML_TEXT_MAX - x->text_len)
        return lerr_set(e, LERR_TOO_LARGE, "XML text longer than %d bytes at byte %zu",
                        XML_TEXT_MAX, x->i);
    memcpy(x->text + x->text_len, s, n);
    x->text_len += n;
    return 0;
}

static int xml_text_blank(const struct xml *x)
{
    size_t start = 0, end = x->text_len;

    creds_trim(x->text, &start, &end);
    return start == end;
}

/* At '&': appends the character a reference stands for, and moves past its ';'. */
static int xml_reference(struct xml *x, struct lerr *e)
{
    static const char *const named[] = { "amp&", "lt<", "gt>", "quot\"", "apos'" };
    size_t start = x->i + 1, end = start, n, k;
    unsigned long cp = 0;
    int hex;
    char out[4];

    while (end < x->len && end - start < 12 && x->b[end] != ';')
        end++;
    if (end >= x->len || x->b[end] != ';' || end == start)
        return xml_bad(x, e, "unterminated or empty entity reference");
    n = end - start;
    for (k = 0; k < sizeof named / sizeof named[0]; k++) {
        if (strlen(named[k]) == n + 1 && memcmp(named[k], x->b + start, n) == 0) {
            x->i = end + 1;
            return xml_text_add(x, named[k] + n, 1, e);
        }
    }
    if (x->b[start] != '#')
        return xml_bad(x, e, "unknown entity");
    hex = x->b[start + 1] == 'x';
    if ((k = start + 1 + (size_t)hex) == end)
        return xml_bad(x, e, "empty character reference");
    for (; k < end; k++) {
        int v = text_hex_digit((unsigned char)x->b[k]);

        if (v < 0 || (!hex && v > 9))
            return xml_bad(x, e, "bad character reference");
        if ((cp = cp * (hex ? 16 : 10) + (unsigned long)v) > 0x10ffff)
            return xml_bad(x, e, "character reference out of range");
    }
    if (cp < 0x20 ? !creds_ws((char)cp) : (cp >= 0xd800 && cp < 0xe000) || cp == 0xfffe ||
                                              cp == 0xffff)
        return xml_bad(x, e, "character reference to a character XML does not allow");
    x->i = end + 1;
    return xml_text_add(x, out, text_utf8_put(cp, (unsigned char *)out), e);
}

/* Character data up to the next '<' or, in an attribute value, its closing quote. */
static int xml_text(struct xml *x, char stop, struct lerr *e)
{
    while (x->i < x->len && x->b[x->i] != '<' && x->b[x->i] != stop) {
        if (!xml_char((unsigned char)x->b[x->i]))
            return xml_bad(x, e, "control character");
        if (stop == '<' && xml_at(x, "]]>"))
            return xml_bad(x, e, "\"]]>\" in text");
        if ((x->b[x->i] == '&' ? xml_reference(x, e) : xml_text_add(x, x->b + x->i++, 1, e)) < 0)
            return -1;
    }
    return 0;
}

/* Moves past the next `end`, refusing control characters on the way. */
static int xml_skip_past(struct xml *x, const char *end, const char *what, struct lerr *e)
{
    const char *p = memmem(x->b + x->i, x->len - x->i, end, strlen(end));

    for (; x->i < x->len && x->b + x->i != p; x->i++)
        if (!xml_char((unsigned char)x->b[x->i]))
            return lerr_set(e, LERR_MALFORMED, "malformed XML: control character in %s at "
                            "byte %zu", what, x->i);
    if (!p)
        return lerr_set(e, LERR_MALFORMED, "malformed XML: unterminated %s", what);
    x->i += strlen(end);
    return 0;
}

/* Attributes of a start tag: checked, then forgotten (xmlns is all STS sends). */
static int xml_attributes(struct xml *x, struct lerr *e)
{
    size_t seen[16][2], nseen = 0;  /* offset and length of each name */

    for (;;) {
        size_t space = xml_skip_space(x), n = xml_name(x);

        if (x->i >= x->len)
            return xml_bad(x, e, "truncated start tag");
        if (x->b[x->i] == '>' || x->b[x->i] == '/')
            return 0;
        if (!space || n == 0 || nseen == sizeof seen / sizeof seen[0])
            return xml_bad(x, e, !space ? "expected whitespace before an attribute"
                                 : n ? "too many attributes" : "expected a name");
        for (size_t k = 0; k < nseen; k++)
            if (seen[k][1] == n && memcmp(x->b + seen[k][0], x->b + x->i, n) == 0)
                return xml_bad(x, e, "repeated attribute");
        seen[nseen][0] = x->i;
        seen[nseen++][1] = n;
        x->i += n;
        xml_skip_space(x);
        if (!xml_at(x, "="))
            return xml_bad(x, e, "expected '=' after an attribute name");
        x->i++;
        xml_skip_space(x);
        if (!xml_at(x, "\"") && !xml_at(x, "'"))
            return xml_bad(x, e, "expected a quoted attribute value");
        if (xml_text(x, x->b[x->i++], e) < 0)
            return -1;
        if (x->i >= x->len || x->b[x->i] == '<')
            return xml_bad(x, e, "'<' or the end of the input in an attribute value");
        x->i++;
    }
}

/* Error codes and messages are shown to people: control characters become spaces. */
static void sts_copy_text(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    for (size_t k = 0; k < n; k++)
        dst[k] = (unsigned char)src[k] < 0x20 || src[k] == 0x7f ? ' ' : src[k];
    dst[n] = '\0';
}

/* A leaf ends: its text is kept if it is one of the fields. */
static int sts_leaf(struct xml *x, struct lerr *e)
{
    char *dst, what[64];
    int f = 0;

    while (f < F_COUNT && strcmp(x->path, sts_fields[f].path) != 0)
        f++;
    if (f == F_COUNT)
        return 0;
    snprintf(what, sizeof what, "<%s>", strrchr(sts_fields[f].path, '/') + 1);
    if (x->seen & (1u << f))
        return lerr_set(e, LERR_MALFORMED, "more than one %s", what);
    x->seen |= 1u << f;
    dst = (char *)x->out + sts_fields[f].off;
    if (f == F_EXPIRATION) {
        if (creds_parse_time(x->text, x->text_len, &x->out->creds.expiration, e) < 0)
            return lerr_set(e, LERR_MALFORMED, "%s is not an ISO 8601 time", what);
    } else if (f == F_CODE && x->text_len == 0) {
        return lerr_set(e, LERR_MALFORMED, "empty %s", what);
    } else if (f >= F_CODE) {
        sts_copy_text(dst, sts_fields[f].cap, x->text, x->text_len);
    } else if (creds_put(dst, sts_fields[f].cap, x->text, x->text_len, what, e) < 0) {
        e->kind = LERR_MALFORMED;  /* what is wrong with a credential is the answer's fault */
        return -1;
    }
    return 0;
}

/* At '<': skips a comment, adds a CDATA section to the text, refuses what is refused.
 * Returns the row of xml_markup found (tags are left to the caller: M_END_TAG, M_START_TAG)
 * or -1. Outside the root there is no CDATA and no end tag: those fall to later rows. */
static int xml_markup_at(struct xml *x, int in_root, struct lerr *e)
{
    size_t k = 0, start;

    while (!xml_at(x, xml_markup[k].open) || (!in_root && (k == M_CDATA || k == M_END_TAG)))
        k++;
    if (!xml_markup[k].close)
        return xml_markup[k].why ? xml_bad(x, e, xml_markup[k].why) : (int)k;
    start = x->i += strlen(xml_markup[k].open);
    if (xml_skip_past(x, xml_markup[k].close, xml_markup[k].why, e) < 0)
        return -1;
    if (k == M_CDATA)
        return xml_text_add(x, x->b + start, x->i - 3 - start, e) < 0 ? -1 : M_CDATA;
    if (!xml_at(x, ">"))
        return xml_bad(x, e, "\"--\" inside a comment");
    x->i++;
    return M_COMMENT;
}

/* At '<' of a start tag: reads the element to its end tag, its children by recursion.
 * path_len: the parent's path; the root's name must be one of STS's two answers. A leaf's
 * text may be a field; a parent may only have had whitespace beside its children. */
static int xml_element(struct xml *x, size_t path_len, int depth, struct lerr *e)
{
    size_t n, end;
    int leaf = 1, k = M_START_TAG;

    x->i++;
    if ((n = xml_name(x)) == 0)
        return xml_bad(x, e, depth ? "expected a name" : "expected the root element");
    if (depth == XML_MAX_DEPTH || n >= sizeof x->path - path_len - 1)
        return xml_bad(x, e, "elements nested too deep (or their names too long)");
    end = path_len + (size_t)snprintf(x->path + path_len, sizeof x->path - path_len, "/%.*s",
                                      (int)n, x->b + x->i);
    x->i += n;
    if (depth == 0) {
        x->out->is_error = strcmp(x->path, STS_ERR_ROOT) == 0;
        if (!x->out->is_error && strcmp(x->path, STS_OK_ROOT) != 0)
            return lerr_set(e, LERR_MALFORMED, "unexpected root element <%.64s>", x->path + 1);
    }
    if (xml_attributes(x, e) < 0)
        return -1;
    x->text_len = 0;  /* the attributes' */
    if (xml_at(x, "/>"))
        k = M_END_TAG;  /* no content, no end tag */
    else if (!xml_at(x, ">"))
        return xml_bad(x, e, "expected \"/>\"");
    x->i += k == M_END_TAG ? 2 : 1;
    while (k != M_END_TAG) {
        if (xml_text(x, '<', e) < 0)
            return -1;
        if (x->i >= x->len)
            return xml_bad(x, e, "truncated: an element is not closed");
        if ((k = xml_markup_at(x, 1, e)) < 0)
            return -1;
        leaf &= k != M_START_TAG;
        /* at a child's start tag or the end tag: what text came since the last child */
        if (!leaf && (k == M_START_TAG || k == M_END_TAG) && !xml_text_blank(x))
            return xml_bad(x, e, "text beside child elements");
        if (k == M_START_TAG && xml_element(x, end, depth + 1, e) < 0)
            return -1;
        if (k != M_END_TAG)
            continue;
        /* "</" and the name of this element, the path's last */
        x->i += 2;
        if (x->len - x->i < n || memcmp(x->b + x->i, x->path + path_len + 1, n) != 0 ||
            xml_name(x) != n)
            return xml_bad(x, e, "end tag does not match the open element");
        x->i += n;
        xml_skip_space(x);
        if (!xml_at(x, ">"))
            return xml_bad(x, e, "expected '>' closing an end tag");
        x->i++;
    }
    if (leaf && sts_leaf(x, e) < 0)
        return -1;
    x->path[path_len] = '\0';
    x->text_len = 0;
    return 0;
}

/* The optional BOM and XML declaration, then one element with only whitespace and
 * comments around it. */
static int xml_document(struct xml *x, struct lerr *e)
{
    int rooted = 0, k;  /* k: a row of xml_markup, or -1 */

    if (xml_at(x, "\xef\xbb\xbf"))
        x->i += 3;
    if (xml_at(x, "<?xml") && x->len - x->i > 5 && creds_ws(x->b[x->i + 5])) {
        x->i += 5;
        if (xml_skip_past(x, "?>", "XML declaration", e) < 0)
            return -1;
    }
    for (;;) {
        xml_skip_space(x);
        if (x->i >= x->len)
            return rooted ? 0 : xml_bad(x, e, "no root element");
        if (x->b[x->i] != '<' || (rooted && !xml_at(x, "<!--")))
            return xml_bad(x, e, rooted ? "content after the root element"
                                        : "expected the root element");
        if ((k = xml_markup_at(x, 0, e)) < 0)
            return -1;
        if (k == M_START_TAG && xml_element(x, 0, 0, e) < 0)
            return -1;
        rooted |= k == M_START_TAG;
    }
}

int creds_sts_parse(const char *xml, size_t len, struct creds_sts_answer *out, struct lerr *e)
{
    struct xml x = { .b = xml, .len = len, .out = out };  /* 9 KB: fine on any stack here */
    unsigned missing;
    int rc = -1;

    memset(out, 0, sizeof *out);
    if (xml_document(&x, e) == 0) {
        missing = (out->is_error ? 1u << F_CODE : (1u << (F_EXPIRATION + 1)) - 1) & ~x.seen;
        if (missing)
            lerr_set(e, LERR_MALFORMED, "no <%s>",
                     strrchr(sts_fields[__builtin_ctz(missing)].path, '/') + 1);
        else
            rc = 0;
    }
    explicit_bzero(&x, sizeof x);
    if (rc < 0)
        creds_snapshot_wipe(&out->creds);
    return rc;
}


/* ======================================================================================
 * The shared files' INI dialect
 * ==================================================================================== */

/* A ';' or '#' after whitespace starts a comment, as in the AWS SDKs. */
static size_t creds_cut_comment(const char *b, size_t s, size_t end)
{
    for (size_t k = s + 1; k < end; k++)
        if ((b[k] == '#' || b[k] == ';') && creds_ws(b[k - 1]))
            return k;
    return end;
}

int creds_ini_parse(const char *buf, size_t len, creds_ini_fn fn, void *ctx, struct lerr *e)
{
    const char *sec = NULL, *why = NULL;
    size_t sec_len = 0, i = 0, line = 0;
    int sub_ok = 0;  /* the last setting had an empty value: indented lines belong to it */
    int section;     /* the line is a [section] */

    while (i < len && !why) {
        const char *nl = memchr(buf + i, '\n', len - i), *mark;
        size_t start = i, end = nl ? (size_t)(nl - buf) : len, s = start, ks, ke, vs, ve;

        i = end + 1;
        line++;
        for (size_t k = start; k < end; k++)
            if (((unsigned char)buf[k] < 0x20 && buf[k] != '\t' &&
                 !(buf[k] == '\r' && k + 1 == end)) || buf[k] == 0x7f)
                why = "control character";
        creds_trim(buf, &s, &end);
        if (why || s == end || buf[s] == '#' || buf[s] == ';' || (s > start && sub_ok))
            continue;  /* sub_ok: a sub-setting ("s3 =" then "  max_concurrent_requests = 10") */
        section = buf[s] == '[';
        mark = memchr(buf + s, section ? ']' : '=', end - s);
        ks = s + (size_t)section;
        ke = mark ? (size_t)(mark - buf) : s;
        vs = ke + 1;
        ve = section ? end : creds_cut_comment(buf, vs, end);
        creds_trim(buf, &ks, &ke);
        creds_trim(buf, &vs, &ve);
        if (!mark)
            why = section ? "'[' without ']'" : "expected [section] or key = value";
        else if (section && vs < ve && buf[vs] != '#' && buf[vs] != ';')
            why = "text after the section name";
        else if (!section && !sec)
            why = "setting before any [section]";
        else if (ks == ke)
            why = section ? "empty section name" : "setting without a name";
        if (section) {
            sec = buf + ks;
            sec_len = ke - ks;
        }
        sub_ok = !section && vs == ve;
        if (!why && fn(ctx, sec, sec_len, section ? NULL : buf + ks, section ? 0 : ke - ks,
                       section ? NULL : buf + vs, section ? 0 : ve - vs, e) < 0)
            return -1;
    }
    return why ? lerr_set(e, LERR_MALFORMED, "line %zu: %s", line, why) : 0;
}

/* --- one profile ------------------------------------------------------------------------ */

struct profile_parse {
    int config_file;
    const char *profile;
    struct creds_profile *out;
    int in_profile;
};

/* Section names are compared as they are, keys case-insensitively (nocase). */
static int span_eq(const char *s, size_t n, const char *lit, int nocase)
{
    return n == strlen(lit) && (nocase ? strncasecmp(s, lit, n) : memcmp(s, lit, n)) == 0;
}

/* [NAME] in the credentials file; [profile NAME] or [default] in the config file. */
static int profile_section_matches(const struct profile_parse *pp, const char *s, size_t n)
{
    size_t k = 7;

    if (!pp->config_file || span_eq(s, n, "default", 0))
        return span_eq(s, n, pp->profile, 0);
    if (n <= k || memcmp(s, "profile", k) != 0 || !creds_ws(s[k]))
        return 0;
    creds_trim(s, &k, &n);
    return span_eq(s + k, n - k, pp->profile, 0);
}

/* The settings a profile is read for: where each value goes and the bit it sets. Then
 * the settings of sources lambdo does not support (a non-empty one is noted). */
#define PROFILE_AT(f) offsetof(struct creds_profile, f), sizeof ((struct creds_profile *)0)->f
static const struct {
    const char *key;
    size_t off, cap;
    unsigned bit;
} profile_keys[] = {
    { "aws_access_key_id", PROFILE_AT(creds.access_key_id), CREDS_HAVE_KEY_ID },
    { "aws_secret_access_key", PROFILE_AT(creds.secret_access_key), CREDS_HAVE_SECRET },
    { "aws_session_token", PROFILE_AT(creds.session_token), CREDS_HAVE_TOKEN },
    { "region", PROFILE_AT(region), CREDS_HAVE_REGION },
};
static const char *const profile_unsupported[] = {
    "role_arn", "source_profile", "credential_source", "credential_process",
    "web_identity_token_file", "sso_session", "sso_start_url", "sso_account_id", "sso_role_name",
};

static int profile_setting(void *ctx, const char *sec, size_t sec_len, const char *key,
                           size_t key_len, const char *v, size_t n, struct lerr *e)
{
    struct profile_parse *pp = ctx;
    struct creds_profile *out = pp->out;
    size_t k = 0, count = sizeof profile_keys / sizeof profile_keys[0];
    char *dst;

    if (!key) {
        pp->in_profile = profile_section_matches(pp, sec, sec_len);
        out->found |= pp->in_profile;
        return 0;
    }
    while (k < count && !span_eq(key, key_len, profile_keys[k].key, 1))
        k++;
    for (size_t u = 0; u < sizeof profile_unsupported / sizeof *profile_unsupported; u++)
        if (pp->in_profile && n > 0 && span_eq(key, key_len, profile_unsupported[u], 1))
            out->have |= CREDS_HAVE_OTHER;
    if (!pp->in_profile || k == count)
        return 0;
    dst = (char *)out + profile_keys[k].off;
    out->have &= ~profile_keys[k].bit;
    explicit_bzero(dst, profile_keys[k].cap);
    if (n == 0)
        return 0;  /* an empty value unsets */
    if (profile_keys[k].bit == CREDS_HAVE_REGION && !creds_region_ok(v, n))
        return n >= profile_keys[k].cap
                   ? lerr_set(e, LERR_INVALID, "profile %.40s: region is not a region name",
                              pp->profile)
                   : lerr_set(e, LERR_INVALID, "profile %.40s: region \"%.*s\" is not a region "
                              "name", pp->profile, (int)n, v);
    if (creds_put(dst, profile_keys[k].cap, v, n, profile_keys[k].key, e) < 0)
        return lerr_wrap(e, "profile %.40s", pp->profile);
    out->have |= profile_keys[k].bit;
    return 0;
}

int creds_profile_parse(const char *buf, size_t len, int config_file, const char *profile,
                        struct creds_profile *out, struct lerr *e)
{
    struct profile_parse pp = { config_file, profile, out, 0 };

    memset(out, 0, sizeof *out);
    if (creds_ini_parse(buf, len, profile_setting, &pp, e) < 0) {
        explicit_bzero(out, sizeof *out);
        return -1;
    }
    return 0;
}

/* ======================================================================================
 * Files
 * ==================================================================================== */

/* A shared file's path: the variable (with "~/" as $HOME), else $HOME/.aws/<name>, else
 * "" (no file). */
static int creds_file_path(config_getenv_fn get, void *ctx, const char *var, const char *name,
                           char *out, size_t cap, struct lerr *e)
{
    const char *v = config_value(get, ctx, var), *home = config_value(get, ctx, "HOME");
    int tilde = v && strncmp(v, "~/", 2) == 0, n = 0;

    out[0] = '\0';  /* no file */
    if (tilde && !home)
        return lerr_set(e, LERR_INVALID, "%s: starts with ~/ but HOME is not set", var);
    if (tilde)
        n = snprintf(out, cap, "%s/%s", home, v + 2);
    else if (v)
        n = snprintf(out, cap, "%s", v);
    else if (home)
        n = snprintf(out, cap, "%s/.aws/%s", home, name);
    if (n < 0 || (size_t)n >= cap)
        return lerr_set(e, LERR_INVALID, "%s: path too long", v ? var : "HOME");
    return 0;
}

/* Reads one profile of one shared file into out, which the caller zeroed: a missing file
 * (or no path) is an empty one. */
static int creds_load_profile(const char *path, int config_file, const char *profile,
                              struct creds_profile *out, struct lerr *e)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = text_read_file(path, "", CREDS_FILE_MAX, TEXT_READ_REGULAR | TEXT_READ_MISSING_OK,
                            &buf, &len, e);  /* no path: no file */

    if (rc != 0)
        return rc < 0 ? -1 : 0;
    rc = creds_profile_parse(buf, len, config_file, profile, out, e);
    text_wipe_free(buf, len);
    return rc < 0 ? lerr_wrap(e, "%s", path) : 0;
}

/* ======================================================================================
 * The Fly API socket: a fresh OIDC token
 * ==================================================================================== */

static const char fly_request[] =
    "POST /v1/tokens/oidc HTTP/1.1\r\n"
    "Host: localhost\r\n"
    "User-Agent: lambdo\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 27\r\n"
    "Connection: close\r\n"
    "\r\n"
    "{\"aud\":\"sts.amazonaws.com\"}";

static int creds_is_socket(const char *path)
{
    struct stat st;
    return path[0] && stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

#define FLY_SOCKET_TIMEOUT_MS 10000  /* the socket is local: 10 s means it is stuck */

/* A web identity token (from the file or the Fly socket), trimmed, into a fresh heap
 * string to be wiped and freed. Returns 0, 1 when it is not a usable token, or -1. */
static int creds_token_dup(const char *b, size_t len, char **tok, struct lerr *e)
{
    size_t s = 0;

    creds_trim(b, &s, &len);
    if (len == s || len - s > CREDS_WEB_TOKEN_MAX || !creds_clean(b + s, len - s))
        return 1;
    if (!(*tok = strndup(b + s, len - s)))
        return lerr_set(e, LERR_NOMEM, "out of memory");
    return 0;
}

/* Sends the request and reads the answer until it is complete or the server closes. The
 * whole exchange has FLY_SOCKET_TIMEOUT_MS: each read waits only for what is left of it, so
 * that an answer trickled a byte at a time cannot hold the credentials (and a shutdown)
 * for hours. The caller's message names the socket. */
static int fly_exchange(int fd, char *buf, char *body, size_t *body_len, struct lerr *e)
{
    struct httpresp_head h;
    int64_t deadline = ratelimit_now_ns() / 1000000 + FLY_SOCKET_TIMEOUT_MS;
    size_t len = 0;
    ssize_t n;
    int rc = HTTPRESP_INCOMPLETE;
    char text[121];

    while ((n = send(fd, fly_request, sizeof fly_request - 1, MSG_NOSIGNAL)) < 0 &&
           errno == EINTR)
        continue;
    if (n != (ssize_t)sizeof fly_request - 1)  /* 170 bytes: all of them, or an error */
        return lerr_set(e, errno == EAGAIN ? LERR_TIMEOUT : LERR_IO, "send: %s",
                        n < 0 ? strerror(errno) : "short write");
    while (rc == HTTPRESP_INCOMPLETE) {
        int64_t left = deadline - ratelimit_now_ns() / 1000000;
        struct timeval tv = { (time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000 };

        if (len == FLY_ANSWER_MAX)
            return lerr_set(e, LERR_TOO_LARGE, "answer larger than %d bytes", FLY_ANSWER_MAX);
        n = -1;
        errno = EAGAIN;  /* no time left is the timeout it is */
        if (left > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0)
            n = recv(fd, buf + len, FLY_ANSWER_MAX - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return lerr_set(e, errno == EAGAIN ? LERR_TIMEOUT : LERR_IO, "%s",
                            errno == EAGAIN ? "no complete answer within 10 s" : strerror(errno));
        len += (size_t)n;
        rc = httpresp_parse(buf, len, 0, n == 0, &h, body, FLY_ANSWER_MAX, body_len, e);
        if (rc == HTTPRESP_INCOMPLETE && n == 0)
            return lerr_set(e, LERR_CLOSED, "closed before a complete answer");
    }
    if (rc > 0 && h.status != 200) {
        sts_copy_text(text, sizeof text, body, *body_len);
        return lerr_set(e, LERR_HTTP, "POST /v1/tokens/oidc answered HTTP %d: %s", h.status,
                        text);
    }
    return rc < 0 ? -1 : 0;
}

/* A fresh OIDC token (heap, to be wiped and freed) from POST /v1/tokens/oidc. */
static int fly_token(const char *path, char **tok, struct lerr *e)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { FLY_SOCKET_TIMEOUT_MS / 1000, 0 };
    char *buf = malloc(2 * FLY_ANSWER_MAX);
    size_t blen = 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = -1;

    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (!buf || fd < 0) {
        lerr_set(e, buf ? LERR_IO : LERR_NOMEM, "socket: %s", buf ? strerror(errno)
                                                                   : "out of memory");
    } else if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
               connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        lerr_set(e, errno == ECONNREFUSED ? LERR_REFUSED : LERR_CONNECT, "connect: %s",
                 strerror(errno));
    } else if (fly_exchange(fd, buf, buf + FLY_ANSWER_MAX, &blen, e) == 0 &&
               (rc = creds_token_dup(buf + FLY_ANSWER_MAX, blen, tok, e)) > 0) {
        rc = lerr_set(e, LERR_MALFORMED, "the answer is not a token");
    }
    if (fd >= 0)
        close(fd);
    text_wipe_free(buf, 2 * FLY_ANSWER_MAX);
    return rc < 0 ? lerr_wrap(e, "Fly API socket %s", path) : 0;
}

/* ======================================================================================
 * STS AssumeRoleWithWebIdentity
 * ==================================================================================== */

/* The form, application/x-www-form-urlencoded: the values percent-encoded but for RFC
 * 3986's unreserved bytes. cap has room for 3 bytes for each of theirs. */
static char *sts_body(const struct creds_provider *p, const char *token, size_t *len)
{
    size_t cap = 160 + 3 * (strlen(p->role_arn) + strlen(p->session_name) + strlen(token));
    char *b = malloc(cap), *o;

    if (!b)
        return NULL;
    o = stpcpy(b, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=");
    o += text_pct_encode(p->role_arn, o, cap - (size_t)(o - b));
    o = stpcpy(o, "&RoleSessionName=");
    o += text_pct_encode(p->session_name, o, cap - (size_t)(o - b));
    o = stpcpy(o, "&WebIdentityToken=");
    o += text_pct_encode(token, o, cap - (size_t)(o - b));
    *len = (size_t)(o - b) + (size_t)sprintf(o, "&DurationSeconds=%d", CREDS_STS_DURATION_S);
    return b;
}

/* STS error codes worth another attempt, each between spaces. */
static const char sts_retry_codes[] = " IDPCommunicationError Throttling ThrottlingException "
                                      "RequestLimitExceeded ServiceUnavailable InternalFailure ";

/* Replaces every run of 16 or more token characters in msg that is part of the token
 * by "[redacted]", in case a server echoed (some of) it into an error message. */
static void creds_scrub(char *msg, const char *token)
{
    static const char mark[] = "[redacted]";  /* shorter than any run replaced */

    for (char *p = msg; *p; ) {
        size_t run = 0;

        while (p[run] && text_base64_digit((unsigned char)p[run], 1) >= 0)
            run++;
        if (run >= 16 && memmem(token, strlen(token), p, run)) {
            memmove(p + sizeof mark - 1, p + run, strlen(p + run) + 1);
            memcpy(p, mark, sizeof mark - 1);
            run = sizeof mark - 1;
        }
        p += run ? run : 1;
    }
}

/* Reads STS's answer: 0 with out filled, or -1 with e set and *retry. STS's message is
 * scrubbed of the token before it is quoted, so that the rest of it still fits. */
static int sts_answer(const struct http_response *r, const char *token,
                      struct creds_snapshot *out, int *retry, struct lerr *e)
{
    struct creds_sts_answer *a = malloc(sizeof *a);
    char word[sizeof a->error_code + 2];
    struct lerr pe;
    int parsed, rc = -1;

    if (!a)
        return lerr_set(e, LERR_NOMEM, "out of memory");
    parsed = creds_sts_parse(r->body, r->body_len, a, &pe);
    *retry = r->head.status >= 500 || r->head.status == 429;
    if (parsed == 0 && a->is_error) {
        snprintf(word, sizeof word, " %s ", a->error_code);
        *retry = *retry || (!strchr(a->error_code, ' ') && strstr(sts_retry_codes, word));
        creds_scrub(a->error_message, token);
        lerr_set(e, LERR_HTTP, "STS AssumeRoleWithWebIdentity failed: %s%s%s (HTTP %d)",
                 a->error_code, a->error_message[0] ? ": " : "", a->error_message, r->head.status);
    } else if (r->head.status == 200 && parsed == 0) {
        *out = a->creds;
        rc = 0;
    } else if (r->head.status == 200) {
        lerr_set(e, LERR_MALFORMED, "STS AssumeRoleWithWebIdentity: answer not understood: %s",
                 pe.msg);
    } else {
        lerr_set(e, LERR_HTTP, "STS AssumeRoleWithWebIdentity failed: HTTP %d%s", r->head.status,
                 parsed == 0 ? " with a success answer" : ", no STS error in the answer");
    }
    text_wipe_free(a, sizeof *a);
    return rc;
}

/* Transport errors worth another attempt. */
#define STS_RETRY_KINDS (1u << LERR_TIMEOUT | 1u << LERR_CLOSED | 1u << LERR_CONNECT | \
                         1u << LERR_REFUSED | 1u << LERR_DNS | 1u << LERR_IO)

static int sts_exchange(const struct creds_provider *p, const char *token,
                        struct creds_snapshot *out, struct lerr *e)
{
    static const struct http_header hh[] = {
        { "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
        { "Accept", "text/xml" },
    };
    size_t blen = 0;
    char *body = sts_body(p, token, &blen);
    int rc = -1;

    if (!body)
        return lerr_set(e, LERR_NOMEM, "out of memory");
    for (unsigned attempt = 0;; attempt++) {
        const struct http_request req = { "POST", &p->sts, hh, 2, body, blen, 20000 };
        struct http_client hc;
        struct http_response resp;
        int retry = 0;

        http_client_init(&hc, p->anchors);
        hc.connect_timeout_ms = 5000;
        hc.io_timeout_ms = 10000;
        hc.max_body = STS_ANSWER_MAX;
        if (http_do(&hc, &req, &resp, e) < 0) {
            retry = (STS_RETRY_KINDS >> e->kind) & 1;
            lerr_wrap(e, "STS AssumeRoleWithWebIdentity");
        } else {
            rc = sts_answer(&resp, token, out, &retry, e);
            http_response_free(&resp);
        }
        http_client_close(&hc);
        if (rc == 0 || !retry || attempt + 1 >= CREDS_STS_ATTEMPTS)
            break;
        nanosleep(&(struct timespec){ 0, 200000000L << attempt }, NULL);
    }
    text_wipe_free(body, blen);
    return rc;
}

/* ======================================================================================
 * Web identity: token, exchange, refresh
 * ==================================================================================== */

static int64_t creds_now(const struct creds_provider *p)
{
    return p->hooks.now ? p->hooks.now(p->hooks.ctx) : (int64_t)time(NULL);
}

/* The token to exchange (heap, to be wiped and freed; *tok NULL on entry): the file's,
 * unless it is missing or expired and the Fly socket can give a fresh one. */
static int wi_token(const struct creds_provider *p, int64_t now, char **tok, struct lerr *e)
{
    const char *why = "does not exist";
    char *buf = NULL, t[80] = "";
    size_t len = 0;
    int64_t exp;
    struct lerr ignore;
    int rc;

    if ((rc = text_read_file(p->token_file, "", CREDS_WEB_TOKEN_MAX + 64,
                             TEXT_READ_REGULAR | TEXT_READ_MISSING_OK, &buf, &len, e)) < 0)
        return lerr_wrap(e, "AWS_WEB_IDENTITY_TOKEN_FILE");  /* "" is no file */
    if (rc == 0 && (rc = creds_token_dup(buf, len, tok, e)) > 0)
        why = "holds no usable token";
    text_wipe_free(buf, len);
    if (rc == 0 && creds_jwt_exp(*tok, strlen(*tok), &exp, &ignore) == 0 &&
        exp <= now + CREDS_TOKEN_EXP_MARGIN_S) {
        why = "holds a token that expired at ";
        creds_fmt_time(exp, t);
        text_wipe_free(*tok, strlen(*tok));
        *tok = NULL;
        rc = 1;
    }
    if (rc <= 0)
        return rc;  /* -1, or 0: a valid JWT, or something STS will judge */
    if (creds_is_socket(p->fly_socket))
        return fly_token(p->fly_socket, tok, e);
    if (p->token_file[0])
        return lerr_set(e, LERR_INVALID, "AWS_WEB_IDENTITY_TOKEN_FILE %s %s%s, and there is no "
                        "Fly API socket at %s to get a fresh token", p->token_file, why, t,
                        p->fly_socket);
    return lerr_set(e, LERR_INVALID, "no Fly API socket at %s to get a web identity token",
                    p->fly_socket);
}

/* One fetch of temporary credentials. Reads only what creds_init fixed: runs unlocked. */
static int wi_fetch(const struct creds_provider *p, struct creds_snapshot *out, struct lerr *e)
{
    char *tok = NULL, t[80];
    int rc;

    if (wi_token(p, creds_now(p), &tok, e) < 0)
        return -1;
    rc = p->hooks.exchange ? p->hooks.exchange(p->hooks.ctx, tok, out, e)
                           : sts_exchange(p, tok, out, e);
    if (rc < 0)
        creds_scrub(e->msg, tok);
    text_wipe_free(tok, strlen(tok));
    if (rc >= 0 && out->expiration <= creds_now(p) + CREDS_EXPIRY_SKEW_S)
        rc = lerr_set(e, LERR_INVALID, "STS gave credentials that expire at %s, which is not "
                      "in the future (is the clock right?)", creds_fmt_time(out->expiration, t));
    if (rc < 0)
        creds_snapshot_wipe(out);
    return rc < 0 ? -1 : 0;
}

/* p->cur was just fetched: refresh once less than max(a quarter of the lifetime,
 * min(5 minutes, half the lifetime)) remains. */
static void creds_installed(struct creds_provider *p, int64_t now)
{
    int64_t life = p->cur.expiration - now, early = life / 2 < 300 ? life / 2 : 300;

    p->refresh_at = p->cur.expiration - (early > life / 4 ? early : life / 4);
    p->retry_at = 0;
}

static int creds_usable(const struct creds_provider *p, int64_t now)
{
    return p->cur.expiration == 0 || now < p->cur.expiration - CREDS_EXPIRY_SKEW_S;
}

/* Called with p->mu held; releases it for the exchange. A failure is left for creds_get
 * in last_error and retry_at. */
static void creds_refresh(struct creds_provider *p)
{
    struct creds_snapshot *fresh = calloc(1, sizeof *fresh);  /* wiped up to the token's NUL */
    struct lerr err;
    char t[80];
    int64_t now;
    int rc;

    p->refreshing = 1;
    pthread_mutex_unlock(&p->mu);
    rc = fresh ? wi_fetch(p, fresh, &err) : lerr_set(&err, LERR_NOMEM, "out of memory");
    pthread_mutex_lock(&p->mu);
    p->refreshing = 0;
    pthread_cond_broadcast(&p->refreshed);
    now = creds_now(p);
    if (rc == 0) {
        p->cur = *fresh;
        p->exchanges++;
        creds_installed(p, now);
        log_info("AWS credentials refreshed through STS (role %s), valid until %s", p->role_arn,
                 creds_fmt_time(fresh->expiration, t));
    } else {
        int64_t left = p->cur.expiration - now;

        p->last_error = err;
        p->retry_at = now + (left > 120 ? CREDS_RETRY_S : CREDS_RETRY_SOON_S);
        if (creds_usable(p, now))
            log_warn("AWS credentials: refresh failed (%s); the current ones stay in use, "
                     "they expire in %lld s; trying again in %lld s", err.msg, (long long)left,
                     (long long)(p->retry_at - now));
    }
    text_wipe_free(fresh, sizeof *fresh);
}

int creds_get(struct creds_provider *p, struct creds_snapshot *out, struct lerr *e)
{
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    while (p->role_arn[0]) {  /* web identity */
        int64_t now = creds_now(p);
        char t[80];

        /* fresh enough; or the current ones do while another thread refreshes, or until
         * the retry after a failed refresh */
        if (now < p->refresh_at || ((p->refreshing || now < p->retry_at) && creds_usable(p, now)))
            break;
        if (p->refreshing) {
            pthread_cond_wait(&p->refreshed, &p->mu);
        } else if (now < p->retry_at) {
            *e = p->last_error;
            rc = lerr_wrap(e, "AWS credentials expired at %s and could not be refreshed",
                           creds_fmt_time(p->cur.expiration, t));
            break;
        } else {
            creds_refresh(p);
        }
    }
    if (rc == 0)  /* up to the token's NUL (creds.h) */
        memcpy(out, &p->cur, offsetof(struct creds_snapshot, session_token) +
                                 strlen(p->cur.session_token) + 1);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ======================================================================================
 * Finding the source
 * ==================================================================================== */

static int creds_from_env(struct creds_provider *p, const char *key, const char *secret,
                          const char *token, struct lerr *e)
{
    if (!key || !secret)
        return lerr_set(e, LERR_INVALID, "%s: not set, but %s is (set both or neither)",
                        key ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID",
                        key ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY");
    if (creds_put(p->cur.access_key_id, sizeof p->cur.access_key_id, key, strlen(key),
                  "AWS_ACCESS_KEY_ID", e) < 0 ||
        creds_put(p->cur.secret_access_key, sizeof p->cur.secret_access_key, secret,
                  strlen(secret), "AWS_SECRET_ACCESS_KEY", e) < 0 ||
        (token && creds_put(p->cur.session_token, sizeof p->cur.session_token, token,
                            strlen(token), "AWS_SESSION_TOKEN", e) < 0))
        return -1;
    snprintf(p->source_name, sizeof p->source_name, "environment");
    return 0;
}

static int creds_sts_url(struct creds_provider *p, config_getenv_fn get, void *ctx,
                         const char *region, struct lerr *e)
{
    const char *which = "AWS_ENDPOINT_URL_STS", *v = config_value(get, ctx, which);
    char url[160];

    if (!v)
        v = config_value(get, ctx, which = "AWS_ENDPOINT_URL");
    if (v)
        return url_parse(v, &p->sts, e) < 0 ? lerr_wrap(e, "%s", which) : 0;
    if (region[0] && !creds_region_ok(region, strlen(region)))
        return lerr_set(e, LERR_INVALID, "STS region \"%.64s\" is not a region name", region);
    /* no region: the global endpoint, https://sts.amazonaws.com/ */
    snprintf(url, sizeof url, "https://sts%s%s.amazonaws.com%s/", region[0] ? "." : "", region,
             strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    return url_parse(url, &p->sts, e);
}

static int creds_web_identity(struct creds_provider *p, config_getenv_fn get, void *ctx,
                              const char *role, const char *region, struct lerr *e)
{
    const char *file = config_value(get, ctx, "AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *name = config_value(get, ctx, "AWS_ROLE_SESSION_NAME");
    const char *sock = config_value(get, ctx, "LAMBDO_FLY_API_SOCKET");
    uint64_t r = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    if (!creds_copy(p->fly_socket, sizeof p->fly_socket, sock ? sock : CREDS_DEFAULT_FLY_SOCKET))
        return lerr_set(e, LERR_INVALID, "LAMBDO_FLY_API_SOCKET: longer than %zu bytes",
                        sizeof p->fly_socket - 1);
    if (strncmp(role, "arn:", 4) != 0 || !creds_clean(role, strlen(role)) ||
        !creds_copy(p->role_arn, sizeof p->role_arn, role))
        return lerr_set(e, LERR_INVALID, "AWS_ROLE_ARN: not a role ARN (arn:aws:iam::ACCOUNT:"
                        "role/NAME)");
    if (!creds_copy(p->token_file, sizeof p->token_file, file ? file : ""))
        return lerr_set(e, LERR_INVALID, "AWS_WEB_IDENTITY_TOKEN_FILE: path too long");
    if (!file && !creds_is_socket(p->fly_socket))
        return lerr_set(e, LERR_INVALID, "AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE "
                        "is not (and there is no Fly API socket at %s)", p->fly_socket);
    if (name && (strlen(name) < 2 || !creds_copy(p->session_name, sizeof p->session_name, name) ||
                 strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789+=,.@_-") != strlen(name)))
        return lerr_set(e, LERR_INVALID, "AWS_ROLE_SESSION_NAME: must be 2 to 64 of "
                        "A-Z a-z 0-9 + = , . @ _ -");
    if (!name) {
        getrandom(&r, sizeof r, GRND_NONBLOCK);  /* else time and pid: unique enough */
        snprintf(p->session_name, sizeof p->session_name, "lambdo-%016llx", (unsigned long long)r);
    }
    if (creds_sts_url(p, get, ctx, region, e) < 0)
        return -1;
    snprintf(p->source_name, sizeof p->source_name, "web identity (role %s)", p->role_arn);
    /* The first exchange now, so that a wrong role or token stops lambdo at start-up. */
    if (wi_fetch(p, &p->cur, e) < 0)
        return -1;
    creds_installed(p, creds_now(p));
    return 0;
}

/* The profile and the shared files, [0] the credentials file, [1] the config file. */
struct creds_files {
    char profile[256];
    int profile_set;                   /* AWS_PROFILE named it */
    char path[2][4096];                /* "": no such file */
    struct creds_profile pr[2];
    struct lerr conf_error;            /* the config file's (kind LERR_NONE: none), which only
                                          matters when the credentials come from the files */
};

/* The profile name and both paths; the config file is read now for its region. */
static int creds_files_prepare(config_getenv_fn get, void *ctx, struct creds_files *f,
                               struct lerr *e)
{
    const char *profile = config_value(get, ctx, "AWS_PROFILE");

    f->profile_set = profile != NULL;
    if (!creds_copy(f->profile, sizeof f->profile, profile ? profile : "default") ||
        !creds_clean(f->profile, strlen(f->profile)) || strpbrk(f->profile, "[]"))
        return lerr_set(e, LERR_INVALID, "AWS_PROFILE: not a profile name");
    if (creds_file_path(get, ctx, "AWS_SHARED_CREDENTIALS_FILE", "credentials", f->path[0],
                        sizeof f->path[0], e) < 0 ||
        creds_file_path(get, ctx, "AWS_CONFIG_FILE", "config", f->path[1], sizeof f->path[1],
                        e) < 0)
        return -1;
    creds_load_profile(f->path[1], 1, f->profile, &f->pr[1], &f->conf_error);
    return 0;
}

/* Keys from the credentials file's profile, else the config file's. */
static int creds_from_files(struct creds_provider *p, struct creds_files *f, struct lerr *e)
{
    if (creds_load_profile(f->path[0], 0, f->profile, &f->pr[0], e) < 0)
        return -1;
    if (f->conf_error.kind)
        return lerr_set(e, f->conf_error.kind, "%s", f->conf_error.msg);
    for (int k = 0; k < 2; k++) {
        const struct creds_profile *pr = &f->pr[k];
        int key = !!(pr->have & CREDS_HAVE_KEY_ID);

        if (!(pr->have & (CREDS_HAVE_KEY_ID | CREDS_HAVE_SECRET)))
            continue;  /* the first file with either key wins as a whole */
        if (!(pr->have & CREDS_HAVE_SECRET) || !key)
            return lerr_set(e, LERR_INVALID, "%s: profile %s has %s but no %s", f->path[k],
                            f->profile, key ? "aws_access_key_id" : "aws_secret_access_key",
                            key ? "aws_secret_access_key" : "aws_access_key_id");
        p->cur = pr->creds;
        snprintf(p->source_name, sizeof p->source_name, "shared file profile %.200s (%.1900s)",
                 f->profile, f->path[k]);
        return 0;
    }
    if (f->pr[0].found || f->pr[1].found)
        return lerr_set(e, LERR_INVALID, "%s: profile %s has no aws_access_key_id and "
                        "aws_secret_access_key%s", f->path[!f->pr[0].found], f->profile,
                        ((f->pr[0].have | f->pr[1].have) & CREDS_HAVE_OTHER)
                            ? " (role_arn, sso and credential_process profiles are not "
                              "supported)" : "");
    if (f->profile_set)
        return lerr_set(e, LERR_INVALID, "AWS_PROFILE: profile %s is in neither %s nor %s",
                        f->profile, f->path[0][0] ? f->path[0] : "(no credentials file)",
                        f->path[1][0] ? f->path[1] : "(no config file)");
    return lerr_set(e, LERR_INVALID, "no AWS credentials: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, or "
                    "put profile %s in %s", f->profile,
                    f->path[0][0] ? f->path[0] : "~/.aws/credentials (HOME is not set)");
}

int creds_config_region(config_getenv_fn get, void *ctx, char *out, size_t cap, struct lerr *e)
{
    struct creds_files f = { .profile_set = 0 };  /* 25 KB: configuration runs at start-up */
    int rc = creds_files_prepare(get, ctx, &f, e);

    if (rc == 0 && f.conf_error.kind)
        rc = lerr_set(e, f.conf_error.kind, "%s", f.conf_error.msg);
    else if (rc == 0 && (f.pr[1].have & CREDS_HAVE_REGION))
        rc = creds_copy(out, cap, f.pr[1].region) ? 1
                                                  : lerr_set(e, LERR_INVALID, "region too long");
    explicit_bzero(&f, sizeof f);
    return rc;
}

int creds_init_hooks(struct creds_provider *p, config_getenv_fn get, void *ctx,
                     const char *region, const struct tls_anchors *anchors,
                     const struct creds_hooks *hooks, struct lerr *e)
{
    const char *key = config_value(get, ctx, "AWS_ACCESS_KEY_ID");
    const char *secret = config_value(get, ctx, "AWS_SECRET_ACCESS_KEY");
    const char *role = config_value(get, ctx, "AWS_ROLE_ARN");
    struct creds_files f = { .profile_set = 0 };  /* 25 KB: creds_init runs at start-up */
    int rc;

    memset(p, 0, sizeof *p);
    if (hooks)
        p->hooks = *hooks;
    p->anchors = anchors;
    if (creds_files_prepare(get, ctx, &f, e) < 0)
        rc = -1;
    else if (key || secret)
        rc = creds_from_env(p, key, secret, config_value(get, ctx, "AWS_SESSION_TOKEN"), e);
    else if (role)
        rc = creds_web_identity(p, get, ctx, role, region && *region ? region : f.pr[1].region,
                                e);
    else if (config_value(get, ctx, "AWS_WEB_IDENTITY_TOKEN_FILE"))
        rc = lerr_set(e, LERR_INVALID, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN "
                      "is not");
    else
        rc = creds_from_files(p, &f, e);  /* fails when the config file did */
    if (rc == 0 && f.conf_error.kind)
        log_warn("AWS config file ignored (its region is not used): %s", f.conf_error.msg);
    explicit_bzero(&f, sizeof f);
    if (rc < 0) {
        explicit_bzero(p, sizeof *p);
        return -1;
    }
    p->exchanges = 1;  /* the first fetch; for static keys the one and only */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->refreshed, NULL);
    return 0;
}

void creds_free(struct creds_provider *p)
{
    if (!p->source_name[0])
        return;  /* after a failed creds_init */
    pthread_cond_destroy(&p->refreshed);
    pthread_mutex_destroy(&p->mu);
    explicit_bzero(p, sizeof *p);
}
