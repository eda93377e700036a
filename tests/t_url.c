/* url_parse: a table of URLs that must parse (with every field checked) and a table of
 * URLs that must be refused (with a word the message must contain). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "url.h"

struct good_case {
    const char *in;
    int tls;
    const char *host;
    unsigned port;
    const char *authority;
    const char *path;
};

static const struct good_case good[] = {
    { "http://example.com", 0, "example.com", 80, "example.com", "/" },
    { "https://example.com", 1, "example.com", 443, "example.com", "/" },
    { "https://example.com/", 1, "example.com", 443, "example.com", "/" },
    { "HTTPS://Sqs.EU-West-1.AmazonAWS.com/123/q", 1, "sqs.eu-west-1.amazonaws.com", 443,
      "sqs.eu-west-1.amazonaws.com", "/123/q" },
    { "http://localhost:8080/a/b?x=1&y=%20", 0, "localhost", 8080, "localhost:8080",
      "/a/b?x=1&y=%20" },
    { "https://localhost:443/x", 1, "localhost", 443, "localhost", "/x" },
    { "http://localhost:443/x", 0, "localhost", 443, "localhost:443", "/x" },
    { "https://h:80/", 1, "h", 80, "h:80", "/" },
    { "http://h?q=1", 0, "h", 80, "h", "/?q=1" },
    { "http://h/p#frag", 0, "h", 80, "h", "/p" },
    { "http://h#frag", 0, "h", 80, "h", "/" },
    { "http://h/p?q#frag?x", 0, "h", 80, "h", "/p?q" },
    { "http://127.0.0.1:1/", 0, "127.0.0.1", 1, "127.0.0.1:1", "/" },
    { "http://h:65535", 0, "h", 65535, "h:65535", "/" },
    { "http://h:00080/", 0, "h", 80, "h", "/" },
    { "http://[::1]/", 0, "::1", 80, "[::1]", "/" },
    { "http://[::1]:8080/v1/apps", 0, "::1", 8080, "[::1]:8080", "/v1/apps" },
    { "https://[2001:DB8::A]:8443", 1, "2001:db8::a", 8443, "[2001:db8::a]:8443", "/" },
    { "https://[::ffff:127.0.0.1]", 1, "::ffff:127.0.0.1", 443, "[::ffff:127.0.0.1]", "/" },
    { "http://under_score.example/", 0, "under_score.example", 80, "under_score.example", "/" },
};

struct bad_case {
    const char *in;
    const char *why;  /* a substring of the message */
};

static const struct bad_case bad[] = {
    { "", "http:// or https://" },
    { "ftp://example.com/", "http:// or https://" },
    { "example.com/path", "http:// or https://" },
    { "http:/example.com", "http:// or https://" },
    { "http://", "no host" },
    { "http:///path", "no host" },
    { "http://:80/", "no host" },
    { "http://user:pw@example.com/", "credentials" },
    { "http://user@example.com/", "credentials" },
    { "http://h:/", "empty port" },
    { "http://h:0/", "out of range" },
    { "http://h:65536/", "out of range" },
    { "http://h:99999999999999999999/", "out of range" },
    { "http://h:8x/", "not a number" },
    { "http://h:-1/", "not a number" },
    { "http://h:80:81/", "not a number" },
    { "http://exa mple.com/", "invalid character" },
    { "http://h\r\nX: y/", "invalid character" },
    { "http://h%41/", "invalid character" },
    { "http://h/a b", "space" },
    { "http://h/a\r\nX-Injected: 1", "control" },
    { "http://h/\x7f", "control" },
    { "http://h/caf\xc3\xa9", "non-ASCII" },
    { "http://[::1/", "closing" },
    { "http://[]/", "invalid IPv6" },
    { "http://[1.2.3.4]/", "invalid IPv6" },
    { "http://[::1%25lo]/", "invalid IPv6" },
    { "http://[::g]/", "invalid IPv6" },
    { "http://[::1]x/", "after the IPv6" },
    { "http://[::1]:/", "empty port" },
    { "http://[::1]:70000/", "out of range" },
};

/* Names the case being checked, with control bytes escaped so the log stays readable. */
static void show(const char *kind, const char *in)
{
    char out[256];
    size_t n = 0;

    for (; *in && n + 5 < sizeof out; in++)
        n += (size_t)snprintf(out + n, sizeof out - n,
                              (unsigned char)*in < 0x20 || (unsigned char)*in >= 0x7f ? "\\x%02x" : "%c",
                              (unsigned char)*in);
    out[n] = '\0';
    print_message("%s: %s\n", kind, out);
}

static void test_good(void **state)
{
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const struct good_case *c = &good[i];
        struct url u;
        struct lerr e = { 0 };

        show("good", c->in);
        assert_int_equal(url_parse(c->in, &u, &e), 0);
        assert_int_equal(u.tls, c->tls);
        assert_string_equal(u.host, c->host);
        assert_int_equal(u.port, c->port);
        assert_string_equal(u.authority, c->authority);
        assert_string_equal(u.path, c->path);
    }
}

static void test_bad(void **state)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const struct bad_case *c = &bad[i];
        struct url u;
        struct lerr e = { 0 };

        show("bad", c->in);
        assert_int_equal(url_parse(c->in, &u, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        if (!strstr(e.msg, c->why))
            fail_msg("message \"%s\" lacks \"%s\"", e.msg, c->why);
    }
}

static void test_null(void **state)
{
    struct url u;
    struct lerr e = { 0 };

    assert_int_equal(url_parse(NULL, &u, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
}

/* The longest host and path that fit are accepted; one byte more is refused. */
static void test_limits(void **state)
{
    static char in[8192], host[300];
    struct url u;
    struct lerr e = { 0 };

    memset(host, 'a', 255);
    host[255] = '\0';
    snprintf(in, sizeof in, "http://%s/", host);
    assert_int_equal(url_parse(in, &u, &e), 0);
    assert_string_equal(u.host, host);
    assert_int_equal(strlen(u.authority), 255);

    host[255] = 'a';
    host[256] = '\0';
    snprintf(in, sizeof in, "http://%s/", host);
    assert_int_equal(url_parse(in, &u, &e), -1);
    assert_non_null(strstr(e.msg, "host is longer"));

    /* a 255-byte name with a non-default port still has room in authority */
    host[255] = '\0';
    snprintf(in, sizeof in, "https://%s:65535/", host);
    assert_int_equal(url_parse(in, &u, &e), 0);
    assert_int_equal(strlen(u.authority), 255 + 6);

    strcpy(in, "http://h");
    memset(in + 8, 'p', 4095);
    in[8] = '/';
    in[8 + 4095] = '\0';
    assert_int_equal(url_parse(in, &u, &e), 0);
    assert_int_equal(strlen(u.path), 4095);
    strcat(in, "p");
    assert_int_equal(url_parse(in, &u, &e), -1);
    assert_non_null(strstr(e.msg, "path is longer"));
    /* a query alone gets a '/' in front, which counts towards the limit */
    strcpy(in, "http://h");
    memset(in + 8, 'q', 4095);
    in[8] = '?';
    in[8 + 4095] = '\0';
    assert_int_equal(url_parse(in, &u, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_null),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
