/* creds.c: the STS XML reader, ISO 8601 times, JWT exp claims, the INI dialect of the
 * shared files, profile selection, the order of the sources, and refresh timing with an
 * injected clock and a fake STS exchange. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "creds.h"
#include "log.h"

/* ------------------------------------------------------------------ STS answers ------- */

#define STS_OK_HEAD \
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n" \
    "  <AssumeRoleWithWebIdentityResult>\n" \
    "    <SubjectFromWebIdentityToken>org:app:machine</SubjectFromWebIdentityToken>\n" \
    "    <Audience>sts.amazonaws.com</Audience>\n" \
    "    <AssumedRoleUser>\n" \
    "      <Arn>arn:aws:sts::123456789012:assumed-role/jobs/lambdo-1</Arn>\n" \
    "      <AssumedRoleId>AROA:lambdo-1</AssumedRoleId>\n" \
    "    </AssumedRoleUser>\n"
#define STS_OK_CREDS \
    "    <Credentials>\n" \
    "      <SessionToken>FwoGZXIvYXdzEXAMPLE/token+part==</SessionToken>\n" \
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n" \
    "      <Expiration>2026-11-27T21:00:00Z</Expiration>\n" \
    "      <AccessKeyId>ASIAEXAMPLE123</AccessKeyId>\n" \
    "    </Credentials>\n"
#define STS_OK_TAIL \
    "    <Provider>oidc.fly.io/acme</Provider>\n" \
    "  </AssumeRoleWithWebIdentityResult>\n" \
    "  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>" \
    "</ResponseMetadata>\n" \
    "</AssumeRoleWithWebIdentityResponse>\n"
#define STS_OK STS_OK_HEAD STS_OK_CREDS STS_OK_TAIL

#define T_2026_11_27_21 1795813200  /* 2026-11-27T21:00:00Z */

struct xml_case {
    const char *name;
    const char *xml;
    int rc;
    int is_error;
    const char *a, *b, *c;   /* key, secret, token; or code, message */
    int64_t exp;
    enum lerr_kind kind;     /* on failure */
    const char *why;         /* substring of the failure message */
};

static const struct xml_case xml_cases[] = {
    { "good", STS_OK, 0, 0, "ASIAEXAMPLE123", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
      "FwoGZXIvYXdzEXAMPLE/token+part==", T_2026_11_27_21, 0, NULL },
    { "declaration, comments, CDATA, references",
      "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n"
      "<AssumeRoleWithWebIdentityResponse a='1' b = \"&amp;&#x41;\"><!-- x -->"
      "<AssumeRoleWithWebIdentityResult><Credentials>"
      "<AccessKeyId>&#65;SIA<![CDATA[X<&>]]></AccessKeyId>"
      "<SecretAccessKey>s&#x2F;e&#47;c</SecretAccessKey>"
      "<SessionToken>t&amp;o&lt;k&gt;e&quot;n&apos;</SessionToken>"
      "<Expiration>2026-11-27T21:00:00.123Z</Expiration>"
      "</Credentials ></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
      "\n<!-- end -->\n",
      0, 0, "ASIAX<&>", "s/e/c", "t&o<k>e\"n'", T_2026_11_27_21, 0, NULL },
    { "offset expiration",
      "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
      "<AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken><Expiration>2026-11-27T23:00:00+02:00</Expiration>"
      "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
      0, 0, "A", "S", "T", T_2026_11_27_21, 0, NULL },
    { "error answer",
      "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
      "  <Error>\n    <Type>Sender</Type>\n    <Code>InvalidIdentityToken</Code>\n"
      "    <Message>No OpenIDConnect provider found in your account for "
      "https://oidc.fly.io/acme</Message>\n  </Error>\n"
      "  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n</ErrorResponse>\n",
      0, 1, "InvalidIdentityToken",
      "No OpenIDConnect provider found in your account for https://oidc.fly.io/acme", NULL, 0,
      0, NULL },
    { "error answer with entities",
      "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized &lt;&quot;x"
      "&quot;&gt; &amp; couldn&apos;t &#233;&#x1F600;</Message></Error></ErrorResponse>",
      0, 1, "AccessDenied", "Not authorized <\"x\"> & couldn't \xc3\xa9\xf0\x9f\x98\x80", NULL,
      0, 0, NULL },
    { "error answer without message",
      "<ErrorResponse><Error><Code>ExpiredTokenException</Code></Error></ErrorResponse>", 0, 1,
      "ExpiredTokenException", "", NULL, 0, 0, NULL },
    /* missing fields */
    { "no session token", STS_OK_HEAD
      "<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<Expiration>2026-11-27T21:00:00Z</Expiration></Credentials>" STS_OK_TAIL,
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "no <SessionToken>" },
    { "no expiration", STS_OK_HEAD
      "<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken></Credentials>" STS_OK_TAIL,
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "no <Expiration>" },
    { "no credentials", STS_OK_HEAD STS_OK_TAIL, -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "no <AccessKeyId>" },
    { "empty key", STS_OK_HEAD
      "<Credentials><AccessKeyId></AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken><Expiration>2026-11-27T21:00:00Z</Expiration>"
      "</Credentials>" STS_OK_TAIL, -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "<AccessKeyId>: empty" },
    { "key with a space", STS_OK_HEAD
      "<Credentials><AccessKeyId>A B</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken><Expiration>2026-11-27T21:00:00Z</Expiration>"
      "</Credentials>" STS_OK_TAIL, -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "<AccessKeyId>: contains spaces" },
    { "bad expiration", STS_OK_HEAD
      "<Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken><Expiration>tomorrow</Expiration>"
      "</Credentials>" STS_OK_TAIL, -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "<Expiration> is not an ISO 8601 time" },
    { "error without code",
      "<ErrorResponse><Error><Message>m</Message></Error></ErrorResponse>", -1, 0, NULL, NULL,
      NULL, 0, LERR_MALFORMED, "no <Code>" },
    { "error with empty code",
      "<ErrorResponse><Error><Code/><Message>m</Message></Error></ErrorResponse>", -1, 0, NULL,
      NULL, NULL, 0, LERR_MALFORMED, "empty <Code>" },
    /* nested lookalikes: same names at other paths do not count */
    { "lookalikes elsewhere",
      "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
      "<AssumedRoleUser><AccessKeyId>EVIL</AccessKeyId></AssumedRoleUser>"
      "<Credentials><Credentials><AccessKeyId>EVIL2</AccessKeyId></Credentials>"
      "<AccessKeyId>GOOD</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken><Expiration>2026-11-27T21:00:00Z</Expiration>"
      "</Credentials></AssumeRoleWithWebIdentityResult>"
      "<Credentials><AccessKeyId>EVIL3</AccessKeyId></Credentials>"
      "<Error><Code>Nope</Code></Error></AssumeRoleWithWebIdentityResponse>",
      0, 0, "GOOD", "S", "T", T_2026_11_27_21, 0, NULL },
    { "lookalikes only",
      "<AssumeRoleWithWebIdentityResponse><Result><Credentials>"
      "<AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
      "<SessionToken>T</SessionToken><Expiration>2026-11-27T21:00:00Z</Expiration>"
      "</Credentials></Result></AssumeRoleWithWebIdentityResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "no <AccessKeyId>" },
    { "error code at the wrong depth",
      "<ErrorResponse><Code>X</Code><Error><Error><Code>Y</Code></Error></Error>"
      "</ErrorResponse>", -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "no <Code>" },
    { "repeated key", STS_OK_HEAD
      "<Credentials><AccessKeyId>A</AccessKeyId><AccessKeyId>B</AccessKeyId>"
      "<SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken>"
      "<Expiration>2026-11-27T21:00:00Z</Expiration></Credentials>" STS_OK_TAIL,
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "more than one <AccessKeyId>" },
    { "other root", "<GetCallerIdentityResponse><A>1</A></GetCallerIdentityResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "unexpected root element <GetCallerIdentityResponse>" },
    { "other empty root", "<Html/>", -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "unexpected root element <Html>" },
    /* malformed XML */
    { "empty", "", -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "no root element" },
    { "not XML", "{\"Credentials\":{}}", -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "expected the root element" },
    { "mismatched end tag", "<ErrorResponse><Error><Code>X</Error></Code></ErrorResponse>", -1,
      0, NULL, NULL, NULL, 0, LERR_MALFORMED, "end tag does not match" },
    { "unknown entity", "<ErrorResponse><Error><Code>&nbsp;</Code></Error></ErrorResponse>", -1,
      0, NULL, NULL, NULL, 0, LERR_MALFORMED, "unknown entity" },
    { "NUL reference", "<ErrorResponse><Error><Code>&#0;</Code></Error></ErrorResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "does not allow" },
    { "surrogate reference", "<ErrorResponse><Error><Code>&#xD800;</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "does not allow" },
    { "huge reference", "<ErrorResponse><Error><Code>&#x110000;</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "out of range" },
    { "unterminated reference", "<ErrorResponse><Error><Code>&amp</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "entity reference" },
    { "bare ampersand", "<ErrorResponse><Error><Code>a & b</Code></Error></ErrorResponse>", -1,
      0, NULL, NULL, NULL, 0, LERR_MALFORMED, "entity" },
    { "DOCTYPE",
      "<!DOCTYPE x [<!ENTITY a \"b\">]><ErrorResponse><Error><Code>&a;</Code></Error>"
      "</ErrorResponse>", -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "DOCTYPE" },
    { "processing instruction", "<?php x ?><ErrorResponse/>", -1, 0, NULL, NULL, NULL, 0,
      LERR_MALFORMED, "processing instruction" },
    { "PI inside", "<ErrorResponse><?x y?><Error><Code>X</Code></Error></ErrorResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "processing instruction" },
    { "text after the root",
      "<ErrorResponse><Error><Code>X</Code></Error></ErrorResponse>junk", -1, 0, NULL, NULL,
      NULL, 0, LERR_MALFORMED, "content after the root element" },
    { "two roots",
      "<ErrorResponse><Error><Code>X</Code></Error></ErrorResponse><ErrorResponse/>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "content after the root element" },
    { "mixed content", "<ErrorResponse><Error>text<Code>X</Code></Error></ErrorResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "text beside child elements" },
    { "mixed content after", "<ErrorResponse><Error><Code>X</Code>t</Error></ErrorResponse>", -1,
      0, NULL, NULL, NULL, 0, LERR_MALFORMED, "text beside child elements" },
    { "unquoted attribute", "<ErrorResponse a=1><Error><Code>X</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "quoted attribute value" },
    { "repeated attribute",
      "<ErrorResponse a='1' a='2'><Error><Code>X</Code></Error></ErrorResponse>", -1, 0, NULL,
      NULL, NULL, 0, LERR_MALFORMED, "repeated attribute" },
    { "attributes without space",
      "<ErrorResponse a='1'b='2'><Error><Code>X</Code></Error></ErrorResponse>", -1, 0, NULL,
      NULL, NULL, 0, LERR_MALFORMED, "whitespace before an attribute" },
    { "'<' in an attribute", "<ErrorResponse a='<'><Error><Code>X</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "attribute value" },
    { "control character", "<ErrorResponse><Error><Code>X\x01</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "control character" },
    { "]]> in text", "<ErrorResponse><Error><Code>X]]>Y</Code></Error></ErrorResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "\"]]>\"" },
    { "double dash in comment", "<ErrorResponse><!-- a -- b --><Error/></ErrorResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "comment" },
    { "unterminated CDATA", "<ErrorResponse><Error><Code><![CDATA[X</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "CDATA" },
    { "space before the name", "< ErrorResponse/>", -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED,
      "expected the root element" },
    { "name starting with a digit", "<ErrorResponse><1/></ErrorResponse>", -1, 0, NULL, NULL,
      NULL, 0, LERR_MALFORMED, "expected a name" },
    { "too deep",
      "<ErrorResponse><a><a><a><a><a><a><a><a><a><a><a><a><a><a><a><a>x</a></a></a></a></a>"
      "</a></a></a></a></a></a></a></a></a></a></a></ErrorResponse>", -1, 0, NULL, NULL, NULL,
      0, LERR_MALFORMED, "nested too deep" },
    { "unclosed", "<ErrorResponse><Error><Code>X</Code></Error>", -1, 0, NULL, NULL, NULL, 0,
      LERR_MALFORMED, "truncated" },
    { "declaration inside", "<ErrorResponse><!ELEMENT x ANY><Error/></ErrorResponse>", -1, 0,
      NULL, NULL, NULL, 0, LERR_MALFORMED, "declaration" },
    { "unterminated comment", "<ErrorResponse><Error><Code>X</Code></Error></ErrorResponse><!--",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "unterminated comment" },
    { "control character in a comment",
      "<ErrorResponse><!-- \x02 --><Error><Code>X</Code></Error></ErrorResponse>", -1, 0, NULL,
      NULL, NULL, 0, LERR_MALFORMED, "control character" },
    { "unterminated declaration", "<?xml version='1.0'", -1, 0, NULL, NULL, NULL, 0,
      LERR_MALFORMED, "unterminated XML declaration" },
    { "unterminated attribute value", "<ErrorResponse a='1></ErrorResponse>", -1, 0, NULL, NULL,
      NULL, 0, LERR_MALFORMED, "attribute value" },
    { "bad character reference", "<ErrorResponse><Error><Code>&#1a;</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "bad character reference" },
    { "empty character reference", "<ErrorResponse><Error><Code>&#x;</Code></Error></ErrorResponse>",
      -1, 0, NULL, NULL, NULL, 0, LERR_MALFORMED, "empty character reference" },
};

static void test_sts_parse_table(void **state)
{
    for (size_t i = 0; i < sizeof xml_cases / sizeof xml_cases[0]; i++) {
        const struct xml_case *c = &xml_cases[i];
        struct creds_sts_answer a;
        struct lerr e;
        int rc;

        lerr_clear(&e);
        rc = creds_sts_parse(c->xml, strlen(c->xml), &a, &e);
        if (rc != c->rc)
            fail_msg("%s: rc %d, expected %d (%s)", c->name, rc, c->rc, e.msg);
        if (rc < 0) {
            if (e.kind != c->kind || !strstr(e.msg, c->why))
                fail_msg("%s: got %s \"%s\", expected %s \"%s\"", c->name,
                         lerr_kind_name(e.kind), e.msg, lerr_kind_name(c->kind), c->why);
            continue;
        }
        assert_int_equal(a.is_error, c->is_error);
        if (c->is_error) {
            assert_string_equal(a.error_code, c->a);
            assert_string_equal(a.error_message, c->b);
        } else {
            assert_string_equal(a.creds.access_key_id, c->a);
            assert_string_equal(a.creds.secret_access_key, c->b);
            assert_string_equal(a.creds.session_token, c->c);
            assert_int_equal(a.creds.expiration, c->exp);
        }
    }
}

/* Every proper prefix of a good answer is malformed, never a success. */
static void test_sts_parse_truncated(void **state)
{
    const char *docs[] = {
        STS_OK,
        "<ErrorResponse><Error><Code>X</Code><Message>m</Message></Error></ErrorResponse>",
    };

    for (size_t d = 0; d < 2; d++) {
        size_t len = strlen(docs[d]);
        /* the good answer ends with "\n" after the root: that prefix is complete */
        size_t complete = docs[d][len - 1] == '\n' ? len - 1 : len;

        for (size_t n = 0; n < complete; n++) {
            struct creds_sts_answer a;
            struct lerr e;

            if (creds_sts_parse(docs[d], n, &a, &e) == 0)
                fail_msg("doc %zu: prefix of %zu bytes accepted", d, n);
            assert_int_equal(e.kind, LERR_MALFORMED);
        }
    }
}

static void test_sts_parse_too_large(void **state)
{
    size_t n = 9000;
    char *doc = malloc(n + 100);
    struct creds_sts_answer a;
    struct lerr e;

    strcpy(doc, "<ErrorResponse><Error><Code>");
    memset(doc + strlen(doc), 'x', n);
    strcpy(doc + 28 + n, "</Code></Error></ErrorResponse>");
    assert_int_equal(creds_sts_parse(doc, strlen(doc), &a, &e), -1);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    free(doc);
}

/* The open elements' names have 1 KB in all: a longer one is refused, a shorter one read. */
static void test_sts_parse_long_names(void **state)
{
    char doc[1200], name[1100];
    struct creds_sts_answer a;
    struct lerr e;

    memset(name, 'n', sizeof name);
    snprintf(doc, sizeof doc, "<ErrorResponse><%.1010s/></ErrorResponse>", name);
    assert_int_equal(creds_sts_parse(doc, strlen(doc), &a, &e), -1);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_non_null(strstr(e.msg, "names too long"));
    snprintf(doc, sizeof doc, "<ErrorResponse><%.1000s/></ErrorResponse>", name);
    assert_int_equal(creds_sts_parse(doc, strlen(doc), &a, &e), -1);
    assert_string_equal(e.msg, "no <Code>");
}

/* ------------------------------------------------------------------ times ------------- */

static void test_parse_time(void **state)
{
    static const struct { const char *s; int ok; int64_t t; } cases[] = {
        { "1970-01-01T00:00:00Z", 1, 0 },
        { "2026-11-27T21:00:00Z", 1, T_2026_11_27_21 },
        { "2016-12-31T23:59:60Z", 1, 1483228800 },   /* a leap second: the next day's first */
        { "2026-11-00T00:00:00Z", 0, 0 },
        { "2026-01-32T00:00:00Z", 0, 0 },
        { "2026-11-27T21:00:00.5Z", 1, T_2026_11_27_21 },
        { "2026-11-27T21:00:00.123456789Z", 1, T_2026_11_27_21 },
        { "2026-11-27T22:30:00+01:30", 1, T_2026_11_27_21 },
        { "2026-11-27T20:00:00-01:00", 1, T_2026_11_27_21 },
        { "2024-02-29T00:00:00Z", 1, 1709164800 },
        { "2000-02-29T12:00:00Z", 1, 951825600 },
        { "2038-01-19T03:14:08Z", 1, 2147483648LL },
        { "1969-12-31T23:59:59Z", 1, -1 },
        { "2026-11-27T21:00:00", 0, 0 },      /* no zone */
        { "2026-11-27 21:00:00Z", 0, 0 },
        { "2026-11-27T21:00Z", 0, 0 },
        { "2026-13-01T00:00:00Z", 0, 0 },
        { "2026-00-01T00:00:00Z", 0, 0 },
        { "2026-04-31T00:00:00Z", 0, 0 },
        { "2023-02-29T00:00:00Z", 0, 0 },
        { "1900-02-29T00:00:00Z", 0, 0 },
        { "2026-11-27T24:00:00Z", 0, 0 },
        { "2026-11-27T21:60:00Z", 0, 0 },
        { "2026-11-27T21:00:00.Z", 0, 0 },
        { "2026-11-27T21:00:00Zjunk", 0, 0 },
        { "2026-11-27T21:00:00+0100", 0, 0 },
        { "26-11-27T21:00:00Z", 0, 0 },
        { "", 0, 0 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t t = 42;
        struct lerr e;
        int rc = creds_parse_time(cases[i].s, strlen(cases[i].s), &t, &e);

        if ((rc == 0) != cases[i].ok)
            fail_msg("\"%s\": rc %d", cases[i].s, rc);
        if (rc == 0 && t != cases[i].t)
            fail_msg("\"%s\": %lld, expected %lld", cases[i].s, (long long)t,
                     (long long)cases[i].t);
    }
}

/* ------------------------------------------------------------------ JWT exp ----------- */

static void b64url(const char *in, char *out, int pad)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(in), o = 0, i;

    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 |
                     (unsigned char)in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned char)in[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
}

/* "header.payload.signature" with payload as given. */
static void make_jwt(const char *payload, char *out, int pad)
{
    char p[1024];

    b64url(payload, p, pad);
    sprintf(out, "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.%s.c2lnbmF0dXJl", p);
}

static void test_jwt_exp(void **state)
{
    static const struct { const char *payload; int pad; int ok; int64_t exp; } cases[] = {
        { "{\"iss\":\"https://oidc.fly.io/acme\",\"exp\":1796418000,\"sub\":\"a:b:c\"}", 0, 1,
          1796418000 },
        { "{\"exp\":1796418000}", 1, 1, 1796418000 },
        { "{\"exp\":1796418000.75,\"aud\":\"sts.amazonaws.com\"}", 0, 1, 1796418000 },
        { "{\"exp\":1}", 0, 1, 1 },
        { "{\"iat\":1796418000}", 0, 0, 0 },
        { "{\"exp\":\"1796418000\"}", 0, 0, 0 },
        { "{\"exp\":-5}", 0, 0, 0 },
        { "{\"exp\":1e300}", 0, 0, 0 },
        { "[1796418000]", 0, 0, 0 },
        { "not json", 0, 0, 0 },
    };
    char tok[2048];
    int64_t exp;
    struct lerr e;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc;

        make_jwt(cases[i].payload, tok, cases[i].pad);
        rc = creds_jwt_exp(tok, strlen(tok), &exp, &e);
        if ((rc == 0) != cases[i].ok)
            fail_msg("%s: rc %d (%s)", cases[i].payload, rc, e.msg);
        if (rc == 0)
            assert_int_equal(exp, cases[i].exp);
        else
            assert_int_equal(e.kind, LERR_INVALID);
    }
    /* not JWTs at all */
    const char *bad[] = { "", "abc", "a.b", "a.b.c.d", "eyJ.e30.x", "a..c", "a.!!!!.c",
                          "a.e30x.c" /* 5 chars: 4n+1 */ };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (creds_jwt_exp(bad[i], strlen(bad[i]), &exp, &e) == 0)
            fail_msg("\"%s\" accepted", bad[i]);
    assert_int_equal(creds_jwt_exp("a.e30.c", 7, &exp, &e), -1);   /* {} */
    assert_non_null(strstr(e.msg, "no numeric exp"));
}

/* ------------------------------------------------------------------ INI --------------- */

struct ini_log {
    char s[2048];
};

static int ini_record(void *ctx, const char *sec, size_t sec_len, const char *key,
                      size_t key_len, const char *value, size_t value_len, struct lerr *e)
{
    struct ini_log *l = ctx;
    size_t n = strlen(l->s);

    if (!key)
        snprintf(l->s + n, sizeof l->s - n, "[%.*s]", (int)sec_len, sec);
    else
        snprintf(l->s + n, sizeof l->s - n, "%.*s=%.*s;", (int)key_len, key, (int)value_len,
                 value);
    return 0;
}

static void test_ini_table(void **state)
{
    static const struct { const char *in; const char *out; const char *err; } cases[] = {
        { "", "", NULL },
        { "\n\n  \n", "", NULL },
        { "[default]\naws_access_key_id = AKID\n", "[default]aws_access_key_id=AKID;", NULL },
        { "[default]\r\nkey=value\r\n", "[default]key=value;", NULL },
        { "[default]\nkey=value", "[default]key=value;", NULL },
        { "  [ my profile ]  \n\tKey\t=\t v a l \t\n", "[my profile]Key=v a l;", NULL },
        { "# comment\n; comment\n[a] # trailing\nk = v # note\nk2 = v;x ; note\n"
          "k3 = #x\n", "[a]k=v;k2=v;x;k3=;", NULL },
        { "[a];c\nk=a=b\n", "[a]k=a=b;", NULL },
        { "[a]\nk =\n", "[a]k=;", NULL },
        { "[a]\ns3 =\n  max_concurrent_requests = 20\n  region = xx\nk = v\n",
          "[a]s3=;k=v;", NULL },
        { "[a]\nk = v\n  indented = 1\n", "[a]k=v;indented=1;", NULL },
        { "[a]\nk=1\n[b]\nk=2\n[a]\nk=3\n", "[a]k=1;[b]k=2;[a]k=3;", NULL },
        { "[a]\n  # indented comment\n", "[a]", NULL },
        { "k = v\n", NULL, "line 1: setting before any [section]" },
        { "[a]\njunk\n", NULL, "line 2: expected [section] or key = value" },
        { "[a\n", NULL, "line 1: '[' without ']'" },
        { "[]\n", NULL, "line 1: empty section name" },
        { "[  ]\n", NULL, "line 1: empty section name" },
        { "[a] b\n", NULL, "line 1: text after the section name" },
        { "[a]\n = v\n", NULL, "line 2: setting without a name" },
        { "[a]\nk = v\x01\n", NULL, "line 2: control character" },
        { "[a]\nk = v\rx\n", NULL, "line 2: control character" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ini_log l = { "" };
        struct lerr e;
        int rc = creds_ini_parse(cases[i].in, strlen(cases[i].in), ini_record, &l, &e);

        if (cases[i].out) {
            if (rc != 0)
                fail_msg("case %zu: %s", i, e.msg);
            assert_string_equal(l.s, cases[i].out);
        } else {
            if (rc == 0)
                fail_msg("case %zu accepted: %s", i, l.s);
            assert_int_equal(e.kind, LERR_MALFORMED);
            assert_string_equal(e.msg, cases[i].err);
        }
    }
    /* a NUL byte is a control character too */
    {
        struct ini_log l = { "" };
        struct lerr e;
        assert_int_equal(creds_ini_parse("[a]\nk=\0v\n", 9, ini_record, &l, &e), -1);
        assert_string_equal(e.msg, "line 2: control character");
    }
}

/* ------------------------------------------------------------------ profiles ---------- */

static void test_profile_credentials_file(void **state)
{
    const char *f =
        "[default]\n"
        "aws_access_key_id = AKIDDEFAULT\n"
        "aws_secret_access_key = secretdefault\n"
        "[work]\n"
        "AWS_Access_Key_ID = AKIDWORK1\n"
        "aws_secret_access_key=secretwork\n"
        "aws_session_token = tokenwork\n"
        "region = us-west-2\n"
        "[profile work]\n"
        "aws_access_key_id = NOTTHIS\n"
        "[work]\n"
        "aws_access_key_id = AKIDWORK2\n";
    struct creds_profile pr;
    struct lerr e;

    assert_int_equal(creds_profile_parse(f, strlen(f), 0, "default", &pr, &e), 0);
    assert_true(pr.found);
    assert_int_equal(pr.have, CREDS_HAVE_KEY_ID | CREDS_HAVE_SECRET);
    assert_string_equal(pr.creds.access_key_id, "AKIDDEFAULT");
    assert_string_equal(pr.creds.secret_access_key, "secretdefault");

    /* keys are case-insensitive; later settings and sections win */
    assert_int_equal(creds_profile_parse(f, strlen(f), 0, "work", &pr, &e), 0);
    assert_int_equal(pr.have, CREDS_HAVE_KEY_ID | CREDS_HAVE_SECRET | CREDS_HAVE_TOKEN |
                              CREDS_HAVE_REGION);
    assert_string_equal(pr.creds.access_key_id, "AKIDWORK2");
    assert_string_equal(pr.creds.session_token, "tokenwork");
    assert_string_equal(pr.region, "us-west-2");

    /* "[profile work]" is a different section in the credentials file */
    assert_int_equal(creds_profile_parse(f, strlen(f), 0, "profile work", &pr, &e), 0);
    assert_true(pr.found);
    assert_string_equal(pr.creds.access_key_id, "NOTTHIS");

    assert_int_equal(creds_profile_parse(f, strlen(f), 0, "other", &pr, &e), 0);
    assert_false(pr.found);
    assert_int_equal(pr.have, 0);
}

static void test_profile_config_file(void **state)
{
    const char *f =
        "[default]\n"
        "region = eu-west-1\n"
        "[profile work]\n"
        "region = us-east-2\n"
        "role_arn = arn:aws:iam::123456789012:role/x\n"
        "[work]\n"
        "region = ap-south-1\n"
        "[profile  spaced ]\n"
        "aws_access_key_id = AKIDSPACED\n"
        "aws_secret_access_key = s\n"
        "[sso-session x]\n"
        "region = ca-central-1\n";
    struct creds_profile pr;
    struct lerr e;

    assert_int_equal(creds_profile_parse(f, strlen(f), 1, "default", &pr, &e), 0);
    assert_true(pr.found);
    assert_string_equal(pr.region, "eu-west-1");
    assert_int_equal(creds_profile_parse(f, strlen(f), 1, "work", &pr, &e), 0);
    assert_string_equal(pr.region, "us-east-2");   /* not [work] */
    assert_int_equal(pr.have, CREDS_HAVE_REGION | CREDS_HAVE_OTHER);
    assert_int_equal(creds_profile_parse(f, strlen(f), 1, "spaced", &pr, &e), 0);
    assert_string_equal(pr.creds.access_key_id, "AKIDSPACED");
    assert_int_equal(creds_profile_parse(f, strlen(f), 1, "x", &pr, &e), 0);
    assert_false(pr.found);

    /* [profile default] is the default profile too; an empty value unsets */
    const char *g = "[profile default]\nregion = us-east-1\naws_session_token = t\n"
                    "[default]\naws_session_token =\n";
    assert_int_equal(creds_profile_parse(g, strlen(g), 1, "default", &pr, &e), 0);
    assert_string_equal(pr.region, "us-east-1");
    assert_int_equal(pr.have, CREDS_HAVE_REGION);
}

static void test_profile_bad_values(void **state)
{
    static const struct { const char *in; const char *why; } cases[] = {
        { "[default]\naws_access_key_id = AK ID\n",
          "profile default: aws_access_key_id: contains spaces" },
        { "[default]\naws_secret_access_key = s\xc3\xa9\n",
          "profile default: aws_secret_access_key: contains spaces, control or non-ASCII" },
        { "[default]\nregion = EU_WEST\n", "profile default: region \"EU_WEST\" is not" },
        { "[default]\nregion = "
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
          "profile default: region is not a region name" },
    };
    struct creds_profile pr;
    struct lerr e;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(creds_profile_parse(cases[i].in, strlen(cases[i].in), 0, "default",
                                             &pr, &e), -1);
        if (!strstr(e.msg, cases[i].why))
            fail_msg("case %zu: %s", i, e.msg);
        assert_null(strstr(e.msg, "AK ID"));
    }
    /* values of other profiles are not looked at */
    assert_int_equal(creds_profile_parse(cases[0].in, strlen(cases[0].in), 0, "other", &pr, &e),
                     0);
    /* too long */
    {
        size_t n = CREDS_TOKEN_MAX + 10;
        char *f = malloc(n + 64);
        strcpy(f, "[default]\naws_session_token = ");
        memset(f + strlen(f), 't', n);
        f[30 + n] = '\0';
        assert_int_equal(creds_profile_parse(f, strlen(f), 0, "default", &pr, &e), -1);
        assert_non_null(strstr(e.msg, "aws_session_token: longer than 8191 bytes"));
        free(f);
    }
}

/* ------------------------------------------------------------------ sources ----------- */

#define MAXVARS 24

struct env {
    const char *kv[MAXVARS][2];
};

static const char *env_get(const char *name, void *ctx)
{
    struct env *env = ctx;

    for (int i = 0; i < MAXVARS && env->kv[i][0]; i++)
        if (strcmp(env->kv[i][0], name) == 0)
            return env->kv[i][1];
    return NULL;
}

static void env_set(struct env *env, const char *name, const char *value)
{
    int i;

    for (i = 0; i < MAXVARS && env->kv[i][0]; i++)
        if (strcmp(env->kv[i][0], name) == 0)
            break;
    assert_true(i < MAXVARS);
    env->kv[i][0] = name;
    env->kv[i][1] = value;
}

/* A temporary HOME with ~/.aws/credentials, ~/.aws/config and a token file. */
struct fixture {
    char home[64];
    char aws[96];
    char cred[128], conf[128], token[128];
    struct env env;
};

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int fixture_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);

    strcpy(fx->home, "/tmp/t_creds.XXXXXX");
    if (!fx || !mkdtemp(fx->home))
        return -1;
    snprintf(fx->aws, sizeof fx->aws, "%s/.aws", fx->home);
    mkdir(fx->aws, 0700);
    snprintf(fx->cred, sizeof fx->cred, "%s/credentials", fx->aws);
    snprintf(fx->conf, sizeof fx->conf, "%s/config", fx->aws);
    snprintf(fx->token, sizeof fx->token, "%s/token", fx->home);
    env_set(&fx->env, "HOME", fx->home);
    env_set(&fx->env, "LAMBDO_FLY_API_SOCKET", "/nonexistent/lambdo-test/api");
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;

    unlink(fx->cred);
    unlink(fx->conf);
    unlink(fx->token);
    rmdir(fx->aws);
    rmdir(fx->home);
    free(fx);
    return 0;
}

/* The fake STS: counts exchanges, remembers the token, answers with a lifetime from the
 * fake clock, or fails. */
struct fake {
    int64_t now;
    int64_t life;
    int fail;
    int calls;
    int sleep_ms;
    char token[256];
    char fail_msg[700];
    pthread_mutex_t mu;
};

static int64_t fake_now(void *ctx)
{
    struct fake *f = ctx;
    int64_t t;

    pthread_mutex_lock(&f->mu);
    t = f->now;
    pthread_mutex_unlock(&f->mu);
    return t;
}

static int fake_exchange(void *ctx, const char *token, struct creds_snapshot *out,
                         struct lerr *e)
{
    struct fake *f = ctx;
    int n;

    if (f->sleep_ms)
        nanosleep(&(struct timespec){ 0, f->sleep_ms * 1000000L }, NULL);
    pthread_mutex_lock(&f->mu);
    n = ++f->calls;
    snprintf(f->token, sizeof f->token, "%s", token);
    pthread_mutex_unlock(&f->mu);
    if (f->fail)
        return lerr_set(e, LERR_HTTP, "%s", f->fail_msg[0] ? f->fail_msg
                        : "STS AssumeRoleWithWebIdentity failed: ExpiredTokenException: "
                          "Token expired (HTTP 400)");
    memset(out, 0, sizeof *out);
    snprintf(out->access_key_id, sizeof out->access_key_id, "ASIAFAKE%d", n);
    snprintf(out->secret_access_key, sizeof out->secret_access_key, "secret%d", n);
    snprintf(out->session_token, sizeof out->session_token, "token%d", n);
    out->expiration = fake_now(f) + f->life;
    return 0;
}

static struct fake *fake_new(int64_t life)
{
    struct fake *f = calloc(1, sizeof *f);
    f->now = 1800000000;
    f->life = life;
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

static void fake_free(struct fake *f)
{
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static int init_with(struct fixture *fx, struct fake *f, struct creds_provider *p,
                     struct lerr *e)
{
    const struct creds_hooks h = { fake_now, fake_exchange, f };
    return creds_init_hooks(p, env_get, &fx->env, "eu-west-1", NULL, &h, e);
}

static void set_all_sources(struct fixture *fx)
{
    write_file(fx->cred, "[default]\naws_access_key_id = AKIDFILE\n"
                         "aws_secret_access_key = secretfile\n");
    write_file(fx->conf, "[default]\nregion = eu-central-1\n");
    write_file(fx->token, "web-token-123\n");
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "AKIDENV");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "secretenv");
    env_set(&fx->env, "AWS_SESSION_TOKEN", "tokenenv");
    env_set(&fx->env, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/jobs");
    env_set(&fx->env, "AWS_WEB_IDENTITY_TOKEN_FILE", fx->token);
}

static void test_order(void **state)
{
    char file_region[64];
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct creds_provider p;
    struct creds_snapshot s;
    struct sigv4_credentials sc;
    struct lerr e;

    set_all_sources(fx);
    /* environment first */
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_string_equal(p.source_name, "environment");
    /* creds_file_region's cases (gone: only tests used it), asked of creds_config_region */
    assert_int_equal(creds_config_region(env_get, &fx->env, file_region, 64, &e), 1);
    assert_string_equal(file_region, "eu-central-1");
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "AKIDENV");
    assert_string_equal(s.secret_access_key, "secretenv");
    assert_string_equal(s.session_token, "tokenenv");
    assert_int_equal(s.expiration, 0);
    creds_sigv4(&s, &sc);
    assert_string_equal(sc.session_token, "tokenenv");
    creds_free(&p);
    assert_int_equal(f->calls, 0);

    /* then web identity (empty variables count as unset) */
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_string_equal(p.source_name,
                        "web identity (role arn:aws:iam::123456789012:role/jobs)");
    assert_int_equal(f->calls, 1);
    assert_string_equal(f->token, "web-token-123");  /* the file's content, trimmed */
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "ASIAFAKE1");
    assert_int_equal(s.expiration, f->now + 3600);
    creds_free(&p);

    /* then the shared files */
    env_set(&fx->env, "AWS_ROLE_ARN", "");
    env_set(&fx->env, "AWS_WEB_IDENTITY_TOKEN_FILE", "");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_non_null(strstr(p.source_name, "shared file profile default ("));
    assert_non_null(strstr(p.source_name, "/.aws/credentials)"));
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "AKIDFILE");
    assert_string_equal(s.session_token, "");
    creds_sigv4(&s, &sc);
    assert_null(sc.session_token);
    creds_free(&p);
    creds_snapshot_wipe(&s);
    fake_free(f);
}

static const char *const secrets[] = {
    "secretenv", "secretfile", "secretcred", "secretconf", "web-token", "tokenenv", "tok\nen",
};

/* creds_init fails with a message holding why, and no secret. */
static void expect_init_error_with(struct fixture *fx, struct fake *f, const char *why)
{
    struct creds_provider p;
    struct lerr e;

    lerr_clear(&e);
    if (init_with(fx, f, &p, &e) == 0)
        fail_msg("accepted, expected \"%s\" (source %s)", why, p.source_name);
    if (!strstr(e.msg, why))
        fail_msg("got \"%s\", expected \"%s\"", e.msg, why);
    /* no secret in any message */
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(e.msg, secrets[i]))
            fail_msg("\"%s\" holds a secret", e.msg);
}

static void expect_init_error(struct fixture *fx, const char *why)
{
    struct fake *f = fake_new(3600);

    expect_init_error_with(fx, f, why);
    fake_free(f);
}

static void test_half_pairs(void **state)
{
    struct fixture *fx = *state;

    set_all_sources(fx);
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "");
    expect_init_error(fx, "AWS_SECRET_ACCESS_KEY: not set, but AWS_ACCESS_KEY_ID is "
                          "(set both or neither)");
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "secretenv");
    expect_init_error(fx, "AWS_ACCESS_KEY_ID: not set, but AWS_SECRET_ACCESS_KEY is");
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "AKID ENV");
    expect_init_error(fx, "AWS_ACCESS_KEY_ID: contains spaces");
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "AKIDENV");
    env_set(&fx->env, "AWS_SESSION_TOKEN", "tok\nen");
    expect_init_error(fx, "AWS_SESSION_TOKEN: contains spaces, control");

    /* half a web identity */
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "");
    env_set(&fx->env, "AWS_ROLE_ARN", "");
    expect_init_error(fx, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
    env_set(&fx->env, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/jobs");
    env_set(&fx->env, "AWS_WEB_IDENTITY_TOKEN_FILE", "");
    expect_init_error(fx, "AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not (and "
                          "there is no Fly API socket at /nonexistent/lambdo-test/api)");
    env_set(&fx->env, "AWS_WEB_IDENTITY_TOKEN_FILE", fx->token);
    env_set(&fx->env, "AWS_ROLE_ARN", "jobs");
    expect_init_error(fx, "AWS_ROLE_ARN: not a role ARN");
    env_set(&fx->env, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/jobs");
    env_set(&fx->env, "AWS_ROLE_SESSION_NAME", "a b");
    expect_init_error(fx, "AWS_ROLE_SESSION_NAME: must be 2 to 64");
    env_set(&fx->env, "AWS_ROLE_SESSION_NAME", "");
    unlink(fx->token);
    expect_init_error(fx, "does not exist, and there is no Fly API socket at "
                          "/nonexistent/lambdo-test/api");
    write_file(fx->token, "  \n");
    expect_init_error(fx, "holds no usable token");
    env_set(&fx->env, "AWS_WEB_IDENTITY_TOKEN_FILE", fx->home);
    expect_init_error(fx, "not a regular file");
}

static void test_files(void **state)
{
    char file_region[64];
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct creds_provider p;
    struct creds_snapshot s;
    struct lerr e;

    /* nothing anywhere */
    expect_init_error(fx, "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
                          " or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, or put profile "
                          "default in");
    /* the config file's profile, with keys */
    write_file(fx->conf, "[profile work]\nregion = us-west-1\naws_access_key_id = AKIDCONF\n"
                         "aws_secret_access_key = secretconf\n");
    env_set(&fx->env, "AWS_PROFILE", "work");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_non_null(strstr(p.source_name, "shared file profile work ("));
    assert_non_null(strstr(p.source_name, "/.aws/config)"));
    assert_int_equal(creds_config_region(env_get, &fx->env, file_region, 64, &e), 1);
    assert_string_equal(file_region, "us-west-1");
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "AKIDCONF");
    creds_free(&p);

    /* the credentials file wins, as a whole */
    write_file(fx->cred, "[work]\naws_access_key_id = AKIDCRED\n"
                         "aws_secret_access_key = secretcred\n");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "AKIDCRED");
    assert_string_equal(s.secret_access_key, "secretcred");
    creds_free(&p);

    /* AWS_SHARED_CREDENTIALS_FILE, with ~/ */
    env_set(&fx->env, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/config");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "AKIDCONF");
    creds_free(&p);
    env_set(&fx->env, "AWS_SHARED_CREDENTIALS_FILE", "");

    /* half a pair in a file */
    write_file(fx->cred, "[work]\naws_access_key_id = AKIDCRED\n");
    expect_init_error(fx, "/.aws/credentials: profile work has aws_access_key_id but no "
                          "aws_secret_access_key");
    write_file(fx->cred, "[work]\naws_secret_access_key = secretcred\n");
    expect_init_error(fx, "profile work has aws_secret_access_key but no aws_access_key_id");

    /* a profile without keys */
    write_file(fx->cred, "");
    write_file(fx->conf, "[profile work]\nrole_arn = arn:aws:iam::1:role/x\n"
                         "source_profile = default\n");
    expect_init_error(fx, "/.aws/config: profile work has no aws_access_key_id and "
                          "aws_secret_access_key (role_arn, sso and credential_process "
                          "profiles are not supported)");
    /* a named profile that does not exist */
    env_set(&fx->env, "AWS_PROFILE", "nope");
    expect_init_error(fx, "AWS_PROFILE: profile nope is in neither");
    /* malformed files */
    env_set(&fx->env, "AWS_PROFILE", "");
    write_file(fx->cred, "[default]\naws_access_key_id = AKIDCRED\naws_secret_access_key\n");
    expect_init_error(fx, "/.aws/credentials: line 3: expected [section] or key = value");

    /* a broken config file costs only its region when the keys come from elsewhere */
    write_file(fx->cred, "[default]\naws_access_key_id = AKIDCRED\n"
                         "aws_secret_access_key = secretcred\n");
    write_file(fx->conf, "region = eu-west-1\n");
    expect_init_error(fx, "/.aws/config: line 1: setting before any [section]");
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "AKIDENV");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "secretenv");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_string_equal(p.source_name, "environment");
    assert_int_equal(creds_config_region(env_get, &fx->env, file_region, 64, &e), -1);
    creds_free(&p);

    /* the region alone, for configuration code */
    {
        char region[64] = "";

        write_file(fx->conf, "[default]\nregion = sa-east-1\n"
                             "[profile work]\nregion = me-south-1\n");
        env_set(&fx->env, "AWS_PROFILE", "");
        assert_int_equal(creds_config_region(env_get, &fx->env, region, sizeof region, &e), 1);
        assert_string_equal(region, "sa-east-1");
        env_set(&fx->env, "AWS_PROFILE", "work");
        assert_int_equal(creds_config_region(env_get, &fx->env, region, sizeof region, &e), 1);
        assert_string_equal(region, "me-south-1");
        env_set(&fx->env, "AWS_PROFILE", "none");
        region[0] = '\0';
        assert_int_equal(creds_config_region(env_get, &fx->env, region, sizeof region, &e), 0);
        assert_string_equal(region, "");
        assert_int_equal(creds_config_region(env_get, &fx->env, region, 5, &e), 0);
        env_set(&fx->env, "AWS_PROFILE", "work");
        assert_int_equal(creds_config_region(env_get, &fx->env, region, 5, &e), -1);
        write_file(fx->conf, "region = eu-west-1\n");
        assert_int_equal(creds_config_region(env_get, &fx->env, region, sizeof region, &e), -1);
        assert_non_null(strstr(e.msg, "/.aws/config: line 1: setting before any [section]"));
        env_set(&fx->env, "AWS_PROFILE", "");
    }

    /* no HOME: no default files */
    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "");
    env_set(&fx->env, "HOME", "");
    expect_init_error(fx, "~/.aws/credentials (HOME is not set)");
    env_set(&fx->env, "AWS_CONFIG_FILE", "~/x");
    expect_init_error(fx, "AWS_CONFIG_FILE: starts with ~/ but HOME is not set");
    env_set(&fx->env, "AWS_CONFIG_FILE", "");
    env_set(&fx->env, "HOME", fx->home);
    fake_free(f);
}

/* ------------------------------------------------------------------ refresh ----------- */

static void web_identity_env(struct fixture *fx, const char *token)
{
    write_file(fx->token, token);
    env_set(&fx->env, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/jobs");
    env_set(&fx->env, "AWS_WEB_IDENTITY_TOKEN_FILE", fx->token);
}

static void test_refresh_timing(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct creds_provider p;
    struct creds_snapshot s;
    struct lerr e;
    int64_t t0 = f->now;

    web_identity_env(fx, "tok");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_int_equal(f->calls, 1);
    /* an hour's credentials: refreshed once 15 minutes (a quarter) remain */
    f->now = t0 + 2699;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 1);
    assert_string_equal(s.access_key_id, "ASIAFAKE1");
    f->now = t0 + 2700;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 2);
    assert_string_equal(s.access_key_id, "ASIAFAKE2");
    assert_int_equal(s.expiration, t0 + 2700 + 3600);
    /* and not again until the next one is due */
    f->now = t0 + 2700 + 2699;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 2);
    creds_free(&p);

    /* 10 minutes: refreshed when 5 remain (min(5 min, half) beats a quarter) */
    f->life = 600;
    f->now = t0;
    f->calls = 0;
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    f->now = t0 + 299;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 1);
    f->now = t0 + 300;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 2);
    creds_free(&p);

    /* 2 minutes: refreshed at half time */
    f->life = 120;
    f->now = t0;
    f->calls = 0;
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    f->now = t0 + 59;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 1);
    f->now = t0 + 60;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 2);
    creds_free(&p);

    /* credentials that are already (almost) expired are refused */
    f->life = CREDS_EXPIRY_SKEW_S;
    f->now = t0;
    expect_init_error_with(fx, f, "which is not in the future (is the clock right?)");
    creds_snapshot_wipe(&s);
    fake_free(f);
}

static void test_refresh_failures(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct creds_provider p;
    struct creds_snapshot s;
    struct lerr e;
    int64_t t0 = f->now;

    web_identity_env(fx, "tok");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    /* due, but STS fails: the old ones are still good, and STS is left alone for 30 s */
    f->fail = 1;
    f->now = t0 + 2700;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.access_key_id, "ASIAFAKE1");
    assert_int_equal(f->calls, 2);
    f->now = t0 + 2700 + CREDS_RETRY_S - 1;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 2);
    f->now = t0 + 2700 + CREDS_RETRY_S;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 3);
    /* close to expiry the retries come faster */
    f->now = t0 + 3600 - 100;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 4);
    f->now = t0 + 3600 - 100 + CREDS_RETRY_SOON_S;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 5);
    /* expired: an error naming the expiry and STS's words */
    f->now = t0 + 3600 - CREDS_EXPIRY_SKEW_S;
    assert_int_equal(creds_get(&p, &s, &e), -1);
    assert_int_equal(f->calls, 6);
    assert_non_null(strstr(e.msg, "AWS credentials expired at "));
    assert_non_null(strstr(e.msg, "and could not be refreshed: STS AssumeRoleWithWebIdentity "
                                  "failed: ExpiredTokenException: Token expired (HTTP 400)"));
    assert_int_equal(e.kind, LERR_HTTP);
    /* within the retry delay: the same error without asking STS */
    lerr_clear(&e);
    assert_int_equal(creds_get(&p, &s, &e), -1);
    assert_int_equal(f->calls, 6);
    assert_non_null(strstr(e.msg, "ExpiredTokenException"));
    /* STS is back */
    f->fail = 0;
    f->now += CREDS_RETRY_SOON_S;
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_int_equal(f->calls, 7);
    assert_string_equal(s.access_key_id, "ASIAFAKE7");
    creds_free(&p);
    creds_snapshot_wipe(&s);
    fake_free(f);
}

/* A token that a server echoed into its error never reaches the message. */
static void test_token_scrubbed(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct lerr e;
    struct creds_provider p;
    char jwt[512];

    make_jwt("{\"exp\":1900000000,\"sub\":\"acme:jobs:machine-1234567890\"}", jwt, 0);
    web_identity_env(fx, jwt);
    f->fail = 1;
    snprintf(f->fail_msg, sizeof f->fail_msg, "InvalidIdentityToken: bad token %s; payload "
             "%.30s (HTTP 400)", jwt, strchr(jwt, '.') + 1);
    assert_int_equal(init_with(fx, f, &p, &e), -1);
    assert_non_null(strstr(e.msg, "InvalidIdentityToken: bad token [redacted].[redacted]."));
    assert_null(strstr(e.msg, strchr(jwt, '.') + 1));
    {
        char seg[17];
        memcpy(seg, strchr(jwt, '.') + 1, 16);
        seg[16] = '\0';
        assert_null(strstr(e.msg, seg));
    }
    fake_free(f);
}

/* The file's JWT has expired and there is no Fly socket: said before STS is asked. */
static void test_expired_token_file(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct creds_provider p;
    struct lerr e;
    char jwt[512], payload[64];

    snprintf(payload, sizeof payload, "{\"exp\":%lld}", (long long)(f->now - 10));
    make_jwt(payload, jwt, 0);
    web_identity_env(fx, jwt);
    assert_int_equal(init_with(fx, f, &p, &e), -1);
    assert_non_null(strstr(e.msg, "holds a token that expired at 2027-01-15T07:59:50Z, and "
                                  "there is no Fly API socket at /nonexistent/lambdo-test/api"));
    assert_int_equal(f->calls, 0);
    /* one still valid for a while is used */
    snprintf(payload, sizeof payload, "{\"exp\":%lld}", (long long)(f->now + 600));
    make_jwt(payload, jwt, 0);
    web_identity_env(fx, jwt);
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    assert_string_equal(f->token, jwt);
    creds_free(&p);
    fake_free(f);
}

/* Many threads at refresh time: one exchange; the others keep the old credentials. */
struct racer {
    pthread_t th;
    struct creds_provider *p;
    struct creds_snapshot s;
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct lerr e;

    r->rc = creds_get(r->p, &r->s, &e);
    return NULL;
}

static void test_refresh_threads(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fake_new(3600);
    struct creds_provider p;
    static struct racer r[8];
    struct lerr e;
    int fresh = 0;

    web_identity_env(fx, "tok");
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    f->sleep_ms = 50;
    f->now += 3000;
    for (int i = 0; i < 8; i++) {
        r[i].p = &p;
        assert_int_equal(pthread_create(&r[i].th, NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(r[i].th, NULL);
        assert_int_equal(r[i].rc, 0);
        fresh += strcmp(r[i].s.access_key_id, "ASIAFAKE2") == 0;
        if (strcmp(r[i].s.access_key_id, "ASIAFAKE2") != 0)
            assert_string_equal(r[i].s.access_key_id, "ASIAFAKE1");
        creds_snapshot_wipe(&r[i].s);
    }
    assert_int_equal(f->calls, 2);
    assert_true(fresh >= 1);
    creds_free(&p);

    /* expired: the others wait for the refresher instead of failing */
    f->now = 1800000000;
    f->calls = 0;
    assert_int_equal(init_with(fx, f, &p, &e), 0);
    f->now += 3600;
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&r[i].th, NULL, race, &r[i]), 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(r[i].th, NULL);
        assert_int_equal(r[i].rc, 0);
        assert_string_equal(r[i].s.access_key_id, "ASIAFAKE2");
        creds_snapshot_wipe(&r[i].s);
    }
    assert_int_equal(f->calls, 2);
    creds_free(&p);
    fake_free(f);
}

/* What test_static asked of creds_init_static (gone: only this test used it), asked of
 * the environment source, which lambdo uses for fixed keys. */
static void test_static(void **state)
{
    char file_region[64];
    struct fixture *fx = *state;
    struct creds_provider p;
    struct creds_snapshot s;
    struct lerr e;

    env_set(&fx->env, "AWS_ACCESS_KEY_ID", "AKID");
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "secret");
    assert_int_equal(creds_init(&p, env_get, &fx->env, NULL, NULL, &e), 0);
    assert_string_equal(p.source_name, "environment");
    assert_int_equal(creds_config_region(env_get, &fx->env, file_region, 64, &e), 0);
    assert_int_equal(creds_get(&p, &s, &e), 0);
    assert_string_equal(s.secret_access_key, "secret");
    assert_string_equal(s.session_token, "");
    creds_free(&p);
    env_set(&fx->env, "AWS_SECRET_ACCESS_KEY", "s\x01");
    assert_int_equal(creds_init(&p, env_get, &fx->env, NULL, NULL, &e), -1);
    assert_string_equal(e.msg, "AWS_SECRET_ACCESS_KEY: contains spaces, control or non-ASCII "
                               "characters");
    creds_free(&p);  /* harmless after a failed init */
    creds_snapshot_wipe(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sts_parse_table),
        cmocka_unit_test(test_sts_parse_truncated),
        cmocka_unit_test(test_sts_parse_too_large),
        cmocka_unit_test(test_sts_parse_long_names),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_jwt_exp),
        cmocka_unit_test(test_ini_table),
        cmocka_unit_test(test_profile_credentials_file),
        cmocka_unit_test(test_profile_config_file),
        cmocka_unit_test(test_profile_bad_values),
        cmocka_unit_test_setup_teardown(test_order, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_half_pairs, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_files, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_timing, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_failures, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_token_scrubbed, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expired_token_file, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_threads, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_static, fixture_setup, fixture_teardown),
    };

    log_setup(LOG_LEVEL_ERROR, 0);  /* the refresh warnings are expected here */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
