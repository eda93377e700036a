#include "http.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* One slot per origin. The socket comes and goes; the slot (and its TLS context, which
 * remembers the last session for resumption) stays until evicted or the client closes. */
struct http_conn {
    char host[256];
    unsigned short port;
    int fd;                   /* -1 while not connected */
    unsigned long last_used;  /* client's lru_clock at the last request */
    struct tls_client *tc;    /* https only, allocated with the slot */
    size_t in_pos, in_len;    /* TLS: in[in_pos..in_len) read but not yet given to BearSSL */
    unsigned char in[BR_SSL_BUFSIZE_INPUT];  /* a record of the largest size in one read */
};

/* What a wait is for, so that a timeout can say which phase ran out of time. */
struct io {
    struct http_client *c;
    struct http_conn *conn;
    long long deadline;       /* CLOCK_MONOTONIC ms for the whole request, 0: none */
    int request_timeout_ms;
    int wait_ms;              /* per-wait limit of the current phase */
    const char *phase;        /* "connecting to", "waiting for response from"... */
    int no_close_notify;      /* TLS: the socket ended without close_notify */
    int answer_pending;       /* the request just went out: its answer cannot be there yet */
    int sock_failed;          /* TLS: the socket failed under BearSSL, e says how */
    struct lerr *e;           /* where the socket callbacks of sio report */
    br_sslio_context sio;     /* TLS: BearSSL's engine driver over the two callbacks */
};

#define IO_CLOSED 0  /* rbuf_fill: the peer closed (EOF or TLS close_notify) */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sets e to fmt's message followed by where it happened: " <phase> <host>:<port>", as in
 * "timeout after 300 ms connecting to 10.0.0.1:443". */
__attribute__((format(printf, 4, 5)))
static int io_fail(const struct io *io, struct lerr *e, enum lerr_kind kind, const char *fmt, ...)
{
    char what[sizeof e->msg];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lerr_set(e, kind, "%s %s %s:%u", what, io->phase, io->conn->host, io->conn->port);
}

static void io_phase(struct io *io, const char *phase, int wait_ms)
{
    io->phase = phase;
    io->wait_ms = wait_ms;
}

/* Waits until fd is ready for events, the phase's wait limit or the request deadline
 * passes (LERR_TIMEOUT), or cancel_fd becomes readable (LERR_CANCELLED). */
static int io_wait(struct io *io, int fd, short events, struct lerr *e)
{
    for (;;) {
        struct pollfd p[2] = { { fd, events, 0 }, { io->c->cancel_fd, POLLIN, 0 } };
        long long left = io->deadline ? io->deadline - now_ms() : LLONG_MAX;
        int by_deadline = left <= io->wait_ms, n;
        int timeout = io->wait_ms;

        /* The request's deadline cuts the phase's wait short when it comes first. */
        if (by_deadline)
            timeout = left > 0 ? (int)left : 0;
        n = poll(p, io->c->cancel_fd >= 0 ? 2 : 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return lerr_set(e, LERR_IO, "poll: %s", strerror(errno));
        if (n > 0 && p[1].revents)
            return io_fail(io, e, LERR_CANCELLED, "cancelled while");
        if (n > 0)
            return 0;
        if (by_deadline)
            return io_fail(io, e, LERR_TIMEOUT, "request timeout after %d ms, while",
                           io->request_timeout_ms);
        return io_fail(io, e, LERR_TIMEOUT, "timeout after %d ms", io->wait_ms);
    }
}

/* ---- plain sockets ------------------------------------------------------------------------ */

/* Sends some of buf (dir POLLOUT) or receives into it (POLLIN), waiting for the socket.
 * Returns bytes moved (> 0), IO_CLOSED at EOF, or -1. */
static long sock_io(struct io *io, void *buf, size_t len, short dir, struct lerr *e)
{
    /* Waiting first saves the read that would only say EAGAIN. */
    if (dir == POLLIN && io->answer_pending) {
        io->answer_pending = 0;
        if (io_wait(io, io->conn->fd, POLLIN, e) < 0)
            return -1;
    }
    for (;;) {
        /* MSG_NOSIGNAL: a peer that has gone must be an error, not a SIGPIPE. */
        ssize_t n = dir == POLLOUT ? send(io->conn->fd, buf, len, MSG_NOSIGNAL)
                                   : recv(io->conn->fd, buf, len, 0);
        if (n >= 0)
            return (long)n;
        if (errno == EINTR)
            continue;
        /* A reset or broken pipe is the server dropping the connection: LERR_CLOSED, like
         * an EOF, so that a stale keep-alive connection is recognised however it died. */
        if (errno == ECONNRESET || errno == EPIPE)
            return io_fail(io, e, LERR_CLOSED, "connection reset (%s) while", strerror(errno));
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return io_fail(io, e, LERR_IO, "%s while", strerror(errno));
        if (io_wait(io, io->conn->fd, dir, e) < 0)
            return -1;
    }
}

/* Tries each address of the host in turn; a refused address moves on to the next, a
 * timeout ends the attempt (each address would cost the whole connect timeout). */
static int sock_connect(struct io *io, struct lerr *e)
{
    struct http_conn *conn = io->conn;
    struct addrinfo hints = { .ai_flags = AI_NUMERICSERV, .ai_socktype = SOCK_STREAM }, *res, *ai;
    char port[8];
    int rc, err = 0, one = 1;
    socklen_t len = sizeof err;

    snprintf(port, sizeof port, "%u", (unsigned)conn->port);
    /* getaddrinfo cannot be interrupted; the resolver's own timeouts apply. */
    rc = getaddrinfo(conn->host, port, &hints, &res);
    if (rc != 0)
        return lerr_set(e, LERR_DNS, "cannot resolve host %s: %s", conn->host,
                        rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    /* err -1: the wait failed (timeout, cancel), e says how, and no other address is tried */
    for (ai = res; ai && conn->fd < 0 && err != -1; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);

        if (fd < 0) {
            err = errno;
            continue;
        }
        /* Without TCP_NODELAY a TLS handshake flight or a small request body waits for the
         * peer's delayed ACK: about 40 ms per exchange. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        err = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
        if (err == EINPROGRESS && io_wait(io, fd, POLLOUT, e) < 0)
            err = -1;
        else if (err == EINPROGRESS && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0)
            conn->fd = fd;
        else
            close(fd);
    }
    freeaddrinfo(res);
    if (conn->fd >= 0)
        return 0;
    if (err == -1)
        return -1;
    if (err == ECONNREFUSED)
        return io_fail(io, e, LERR_REFUSED, "connection refused while");
    return io_fail(io, e, LERR_CONNECT, "%s while", strerror(err));
}

/* ---- TLS over the socket ---------------------------------------------------------------------
 *
 * BearSSL is a state machine without I/O; its br_sslio loop drives it here through two
 * callbacks over the non-blocking socket, which wait with io_wait so that every TLS wait
 * has the same timeouts and cancel. */

/* br_sslio's socket callbacks. Their -1 stops BearSSL; tls_failed then says why (the flags
 * are those of the last socket call: after a failed one, BearSSL makes no other).
 * BearSSL asks for a record's 5-byte header, then for its payload: two reads a record.
 * The socket is read in large reads into conn->in instead, and the engine fed from there. */
static int tls_low_read(void *ctx, unsigned char *buf, size_t len)
{
    struct io *io = ctx;
    struct http_conn *conn = io->conn;

    if (conn->in_pos == conn->in_len) {
        long n = sock_io(io, conn->in, sizeof conn->in, POLLIN, io->e);
        io->no_close_notify = n == IO_CLOSED;
        io->sock_failed = n < 0;
        if (n <= 0)
            return -1;
        conn->in_pos = 0;
        conn->in_len = (size_t)n;
    }
    if (len > conn->in_len - conn->in_pos)
        len = conn->in_len - conn->in_pos;
    memcpy(buf, conn->in + conn->in_pos, len);
    conn->in_pos += len;
    return (int)len;
}

static int tls_low_write(void *ctx, const unsigned char *buf, size_t len)
{
    struct io *io = ctx;
    long n = sock_io(io, (unsigned char *)buf, len, POLLOUT, io->e);

    io->sock_failed = n < 0;
    return n > 0 ? (int)n : -1;
}

/* Why a br_sslio call failed. A close by the peer (EOF, or close_notify) is IO_CLOSED while
 * the request or its answer is under way (the reader judges it), an error in the handshake.
 * Returns IO_CLOSED or -1. */
static int tls_failed(struct io *io, int handshake, struct lerr *e)
{
    br_ssl_engine_context *eng = &io->conn->tc->cc.eng;
    int err = br_ssl_engine_last_error(eng);

    if (io->sock_failed)
        return -1;
    if (!(br_ssl_engine_current_state(eng) & BR_SSL_CLOSED)) {
        /* Application data arrived while we are still sending: HTTP/1.1 allows an early
         * answer, but without a reader for it the engine would stall. */
        return io_fail(io, e, LERR_MALFORMED, "the server answered before the request was "
                       "sent, while");
    }
    if (!io->no_close_notify && err != BR_ERR_OK)
        return tls_error(e, err, io->conn->host);
    if (handshake)
        return io_fail(io, e, LERR_CLOSED, "connection closed while");
    return IO_CLOSED;
}

/* ---- connection: plain or TLS, same calls ------------------------------------------------- */

static int conn_write(struct io *io, char *buf, size_t len, struct lerr *e)
{
    struct http_conn *conn = io->conn;

    if (!conn->tc) {
        while (len > 0) {
            long n = sock_io(io, buf, len, POLLOUT, e);
            if (n < 0)
                return -1;
            buf += n;
            len -= (size_t)n;
        }
        return 0;
    }
    if (br_sslio_write_all(&io->sio, buf, len) == 0 && br_sslio_flush(&io->sio) == 0)
        return 0;
    /* A server that closes as the request goes out did not answer: the reader says so. */
    return tls_failed(io, 0, e) == IO_CLOSED ? 0 : -1;
}


static void conn_close(struct http_conn *conn)
{
    if (conn->fd >= 0)
        close(conn->fd);
    conn->fd = -1;
    conn->in_pos = 0;
    conn->in_len = 0;
}

/* One poll before a request answers two questions. A readable cancel_fd cancels it. An
 * idle keep-alive connection has nothing to say: if it is readable, the server has closed
 * it (EOF, reset or a TLS close_notify) or sent something unasked for. Either way it
 * cannot carry the request, and is closed. */
static int conn_check_idle(const struct http_client *c, struct http_conn *conn, struct lerr *e)
{
    struct pollfd p[2] = { { c->cancel_fd, POLLIN, 0 }, { conn->fd, POLLIN, 0 } };
    /* TLS: bytes already read or decrypted but not used are invisible to poll. */
    int unasked = conn->in_pos < conn->in_len ||
                  (conn->tc && (br_ssl_engine_current_state(&conn->tc->cc.eng) & BR_SSL_RECVAPP));

    if ((c->cancel_fd >= 0 || conn->fd >= 0) && poll(p, 2, 0) > 0 && p[0].revents)
        return lerr_set(e, LERR_CANCELLED, "cancelled before the request to %s", conn->host);
    if (conn->fd >= 0 && (unasked || p[1].revents)) {
        log_debug("http: %s:%u closed the idle connection; opening a new one", conn->host,
                  conn->port);
        conn_close(conn);
    }
    return 0;
}

static int conn_open(struct http_client *c, struct io *io, struct lerr *e)
{
    io_phase(io, "connecting to", c->connect_timeout_ms);
    if (sock_connect(io, e) < 0)
        return -1;
    c->connections_opened++;
    if (!io->conn->tc)
        return 0;
    io_phase(io, "in TLS handshake with", c->io_timeout_ms);
    tls_sessions_offer(c->sessions, io->conn->tc, io->conn->host, io->conn->port);
    /* The flush drives the handshake to its end: nothing is queued to send yet. */
    int rc = tls_client_reset(io->conn->tc, io->conn->host, e);
    if (rc == 0 && br_sslio_flush(&io->sio) < 0)
        rc = tls_failed(io, 1, e);
    tls_sessions_keep(c->sessions, io->conn->tc, io->conn->host, io->conn->port, rc == 0);
    return rc;
}

static void conn_free(struct http_conn *conn)
{
    if (!conn)
        return;
    conn_close(conn);
    free(conn->tc);
    free(conn);
}

/* Finds the slot for url's origin, or makes one, evicting the least recently used. */
static struct http_conn *conn_for(struct http_client *c, const struct url *url, struct lerr *e)
{
    struct http_conn *conn;
    int pick = 0;  /* the slot to use otherwise: an empty one, else the least recently used */

    for (int i = 0; i < HTTP_MAX_CONNS; i++) {
        conn = c->conns[i];
        if (conn && !conn->tc == !url->tls && conn->port == url->port &&
            strcmp(conn->host, url->host) == 0)
            return conn;
        if (c->conns[pick] && (!conn || conn->last_used < c->conns[pick]->last_used))
            pick = i;
    }
    conn_free(c->conns[pick]);
    c->conns[pick] = NULL;
    conn = calloc(1, sizeof *conn);
    if (!conn || (url->tls && !(conn->tc = malloc(sizeof *conn->tc)))) {
        free(conn);
        lerr_set(e, LERR_NOMEM, "out of memory for a connection to %s", url->host);
        return NULL;
    }
    conn->port = url->port;
    memcpy(conn->host, url->host, sizeof conn->host);
    conn->fd = -1;
    if (conn->tc)
        tls_client_init(conn->tc, c->anchors);
    c->conns[pick] = conn;
    return conn;
}

/* ---- buffers ------------------------------------------------------------------------------- */

/* Makes room for at least want more bytes (plus the final NUL). */
static int buf_reserve(struct http_buf *b, size_t want, unsigned long *allocated, struct lerr *e)
{
    size_t cap = b->cap ? b->cap : 16 * 1024;

    while (cap < b->len + want + 1)
        cap *= 2;
    if (cap == b->cap)
        return 0;
    char *p = realloc(b->p, cap);
    if (!p)
        return lerr_set(e, LERR_NOMEM, "out of memory for a buffer of %zu bytes", cap);
    b->p = p;
    b->cap = cap;
    (*allocated)++;  /* the client's buffers_allocated: each may have moved p */
    return 0;
}

/* ---- request -------------------------------------------------------------------------------- */

static int http_is_reserved(const char *name)
{
    return strcasecmp(name, "host") == 0 || strcasecmp(name, "content-length") == 0 ||
           strcasecmp(name, "connection") == 0 || strcasecmp(name, "transfer-encoding") == 0;
}

/* Checks req and builds the whole request (head and body) in c->req, so that it leaves in
 * as few segments or TLS records as possible. Header values are never logged: they carry
 * tokens and signatures. */
static int http_build(struct http_client *c, const struct http_request *req, struct lerr *e)
{
    const struct url *u = req->url;
    int has_ua = 0;
    size_t n = 0, cap;
    char *buf;

    if (!u || !req->method || !httpresp_is_token(req->method))
        return lerr_set(e, LERR_INVALID, "HTTP request needs a URL and a valid method");
    if (req->body_len && !req->body)
        return lerr_set(e, LERR_INVALID, "HTTP request has a body length but no body");
    if (u->tls && (!c->anchors || c->anchors->count == 0))
        return lerr_set(e, LERR_INVALID, "https to %s needs trust anchors (none loaded)", u->host);
    cap = strlen(req->method) + strlen(u->path) + strlen(u->authority) + 128 + req->body_len;

    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (!h->name || !h->value || !httpresp_is_token(h->name))
            return lerr_set(e, LERR_INVALID, "request header %zu has an invalid name", i);
        if (!httpresp_is_field_value(h->value))
            return lerr_set(e, LERR_INVALID, "request header %s has a control character in its "
                            "value", h->name);
        if (http_is_reserved(h->name))
            return lerr_set(e, LERR_INVALID, "request header %s is set by the HTTP client",
                            h->name);
        has_ua |= strcasecmp(h->name, "user-agent") == 0;
        cap += strlen(h->name) + strlen(h->value) + 4;
    }
    c->req.len = 0;
    if (buf_reserve(&c->req, cap, &c->buffers_allocated, e) < 0)
        return -1;
    buf = c->req.p;
    n += (size_t)snprintf(buf + n, cap - n, "%s %s HTTP/1.1\r\nHost: %s\r\n", req->method,
                          u->path, u->authority);
    if (!has_ua)
        n += (size_t)snprintf(buf + n, cap - n, "User-Agent: lambdo/%s\r\n", LAMBDO_VERSION);
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        size_t nl = strlen(h->name), vl = strlen(h->value);
        memcpy(buf + n, h->name, nl);
        memcpy(buf + n + nl, ": ", 2);
        memcpy(buf + n + nl + 2, h->value, vl);
        memcpy(buf + n + nl + 2 + vl, "\r\n", 2);
        n += nl + vl + 4;
    }
    /* Methods that carry a body always say how long it is, even when empty: some
     * servers answer 411 to a POST without Content-Length. */
    if (req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
        strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0)
        n += (size_t)snprintf(buf + n, cap - n, "Content-Length: %zu\r\n", req->body_len);
    memcpy(buf + n, "\r\n", 2);
    n += 2;
    if (req->body_len)
        memcpy(buf + n, req->body, req->body_len);
    n += req->body_len;
    c->req.len = n;
    return 0;
}

/* ---- response ------------------------------------------------------------------------------- */

/* Reads what is available into b, plain or TLS (waiting for at least one byte). Returns
 * bytes read, IO_CLOSED, or -1. */
static long rbuf_fill(struct io *io, struct http_buf *b, struct lerr *e)
{
    size_t room;
    long n;

    if (b->cap - b->len < 4096 + 1 && buf_reserve(b, 4096, &io->c->buffers_allocated, e) < 0)
        return -1;
    room = b->cap - b->len - 1;
    if (!io->conn->tc)
        n = sock_io(io, b->p + b->len, room, POLLIN, e);
    else if ((n = br_sslio_read(&io->sio, b->p + b->len, room)) < 0)
        n = tls_failed(io, 0, e);
    if (n > 0)
        b->len += (size_t)n;
    return n;
}

static int http_malformed(struct io *io, struct lerr *e)
{
    return lerr_wrap(e, "bad response from %s:%u", io->conn->host, io->conn->port);
}

/* Reads until a complete head is at the start of b; 1xx interim responses are dropped.
 * The parser runs when new bytes hold an LF (every line of the head, its end included,
 * ends in one), at the size limit and at EOF: not on every read, and at most once per
 * line. *started is set once any byte arrived. Returns the head length. */
static long http_read_head(struct io *io, struct http_buf *b, int is_head, struct httpresp_head *h,
                           int *started, struct lerr *e)
{
    int parse = 0, at_eof = 0;

    for (;;) {
        size_t old = b->len;
        long n;

        if (parse) {
            int rc = httpresp_parse_head(b->p, b->len, is_head, h, e);
            if (rc == HTTPRESP_ERROR)
                return http_malformed(io, e);
            /* Never at HTTPRESP_MAX_HEAD bytes, where the parser says LERR_TOO_LARGE. */
            if (rc == HTTPRESP_INCOMPLETE && at_eof)
                return io_fail(io, e, LERR_MALFORMED, "the server closed the connection in the "
                               "middle of the response head (%zu bytes), while", b->len);
            if (rc > 0 && h->status >= 200)
                return rc;
            if (rc > 0 && h->status == 101)
                return io_fail(io, e, LERR_MALFORMED, "the server switched protocols unasked, while");
            if (rc > 0) {
                /* 1xx: drop it and parse what follows as a new response. */
                memmove(b->p, b->p + rc, b->len - (size_t)rc);
                b->len -= (size_t)rc;
                parse = b->len > 0;
                continue;
            }
        }
        n = rbuf_fill(io, b, e);
        if (n < 0)
            return -1;
        if (n == IO_CLOSED && b->len == 0)
            return io_fail(io, e, LERR_CLOSED, "the server closed the connection without "
                           "answering, while");
        *started |= n > 0;
        at_eof = n == IO_CLOSED;
        parse = at_eof || b->len >= HTTPRESP_MAX_HEAD || memchr(b->p + old, '\n', (size_t)n);
    }
}

/* A body found too large as it arrives (http_read_body says so of an announced length). */
static int http_too_large(struct io *io, size_t max, struct lerr *e)
{
    return lerr_set(e, LERR_TOO_LARGE, "response body from %s:%u is over the limit of %zu bytes",
                    io->conn->host, io->conn->port, max);
}

/* The body follows the head in b, from b->p[at]: it is read in place, so the head and the
 * body share one allocation and the body is never moved. Each read's bytes are handled
 * once: counted for a length, decoded in place for chunked. Sets *reusable when the
 * connection ends cleanly after the body. */
static int http_read_body(struct io *io, struct http_buf *b, size_t at, const struct httpresp_head *h,
                          size_t max_body, int *reusable, struct lerr *e)
{
    struct httpresp_chunked ch = { 0 };
    size_t raw = at;  /* chunked: b->p[at..raw) is decoded body */
    unsigned long long want = h->content_length;  /* BODY_LENGTH; 0 for BODY_NONE */
    long n;

    *reusable = 0;
    /* An announced length says its size. The limit ends the message: callers append what
     * they do about it. */
    if (want > max_body)
        return lerr_set(e, LERR_TOO_LARGE, "response body from %s:%u is %llu bytes, "
                        "over the limit of %zu", io->conn->host, io->conn->port, want, max_body);
    /* A known length gets its room at once (and a read's worth more, for rbuf_fill). */
    if (buf_reserve(b, (size_t)want + 4096, &io->c->buffers_allocated, e) < 0)
        return -1;
    for (;;) {
        if (h->framing == HTTPRESP_BODY_CHUNKED) {
            size_t out;
            int rc = httpresp_chunked_decode(&ch, b->p + raw, b->len - raw, b->p + raw, &out,
                                             max_body, e);
            if (rc == HTTPRESP_ERROR && e && e->kind == LERR_TOO_LARGE)
                return http_too_large(io, max_body, e);
            if (rc == HTTPRESP_ERROR)
                return http_malformed(io, e);
            b->len = raw + out;
            raw = b->len;
            if (rc >= 0) {
                *reusable = rc == 0;
                return 0;
            }
        } else if (h->framing != HTTPRESP_BODY_UNTIL_CLOSE && b->len - at >= want) {
            *reusable = b->len - at == want;
            b->len = at + (size_t)want;
            return 0;
        } else if (b->len - at > max_body) {
            return http_too_large(io, max_body, e);
        }
        n = rbuf_fill(io, b, e);
        if (n < 0)
            return -1;
        if (n > 0)
            continue;
        if (h->framing == HTTPRESP_BODY_LENGTH)
            return io_fail(io, e, LERR_MALFORMED, "the server closed the connection after "
                           "%zu of %llu body bytes, while", b->len - at, want);
        if (h->framing == HTTPRESP_BODY_CHUNKED)
            return io_fail(io, e, LERR_MALFORMED, "the server closed the connection in the "
                           "middle of a chunked body (after %zu bytes), while", raw - at);
        /* Over TLS only close_notify ends a body delimited by the close: a bare EOF may be
         * an attacker or a middlebox cutting it short (RFC 5246 7.2.1). */
        if (io->no_close_notify)
            return io_fail(io, e, LERR_MALFORMED, "the server closed the connection without "
                           "TLS close_notify after %zu body bytes (the body may be "
                           "truncated), while", b->len - at);
        return 0;
    }
}

/* Keeps a response buffer for the client's next response, unless one is kept already or
 * it is over HTTP_KEEP_BUF. */
static void http_keep(struct http_client *c, char *buf, size_t cap)
{
    if (!c->spare.p && cap <= HTTP_KEEP_BUF)
        c->spare = (struct http_buf){ buf, 0, cap };
    else
        free(buf);
}

/* One exchange on a connected conn. *started tells the caller whether the server had
 * begun to answer (then the request must not be resent). */
static int http_exchange(struct http_client *c, struct io *io, int is_head,
                         struct http_response *resp, int *reusable, int *started, struct lerr *e)
{
    struct http_buf b = c->spare;
    struct httpresp_head *h = &resp->head;
    long head_len;
    unsigned long allocated;

    c->spare = (struct http_buf){ 0 };
    io_phase(io, "sending request to", c->io_timeout_ms);
    c->requests_sent++;
    if (conn_write(io, c->req.p, c->req.len, e) < 0)
        goto fail;
    io->answer_pending = 1;
    io_phase(io, "waiting for response from", c->io_timeout_ms);
    head_len = http_read_head(io, &b, is_head, h, started, e);
    if (head_len < 0)
        goto fail;
    io_phase(io, "reading response body from", c->io_timeout_ms);
    allocated = c->buffers_allocated;
    if (http_read_body(io, &b, (size_t)head_len, h, c->max_body, reusable, e) < 0)
        goto fail;
    *reusable = *reusable && h->keep_alive;
    /* A body that outgrew the buffer may have moved it: the head is parsed again where it
     * is now (the same bytes, so the same answer), rather than its pointers moved by hand. */
    if (c->buffers_allocated != allocated)
        httpresp_parse_head(b.p, (size_t)head_len, is_head, h, e);
    b.p[b.len] = '\0';
    resp->buf = b.p;
    resp->buf_cap = b.cap;
    resp->owner = c;
    resp->body = b.p + head_len;
    resp->body_len = b.len - (size_t)head_len;
    return 0;
fail:
    http_keep(c, b.p, b.cap);
    return -1;
}

/* ---- public ------------------------------------------------------------------------------- */

void http_client_init(struct http_client *c, const struct tls_anchors *anchors)
{
    *c = (struct http_client){ .anchors = anchors, .connect_timeout_ms = 10000,
                               .io_timeout_ms = 30000,
                               .request_timeout_ms = HTTP_DEFAULT_REQUEST_TIMEOUT_MS,
                               .max_body = HTTP_DEFAULT_MAX_BODY, .cancel_fd = -1 };
}

void http_client_close(struct http_client *c)
{
    for (int i = 0; i < HTTP_MAX_CONNS; i++) {
        conn_free(c->conns[i]);
        c->conns[i] = NULL;
    }
    free(c->req.p);
    free(c->spare.p);
    c->req = c->spare = (struct http_buf){ 0 };
}

int http_do(struct http_client *c, const struct http_request *req, struct http_response *resp,
            struct lerr *e)
{
    struct http_conn *conn;
    struct io io;
    int is_head, rc = -1;

    memset(resp, 0, sizeof *resp);
    if (http_build(c, req, e) < 0)
        return -1;
    conn = conn_for(c, req->url, e);
    if (!conn || conn_check_idle(c, conn, e) < 0)
        goto out;
    conn->last_used = ++c->lru_clock;
    is_head = strcmp(req->method, "HEAD") == 0;
    io = (struct io){ .c = c, .conn = conn, .e = e };
    if (conn->tc)
        br_sslio_init(&io.sio, &conn->tc->cc.eng, tls_low_read, &io, tls_low_write, &io);
    io.request_timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : c->request_timeout_ms;
    io.deadline = io.request_timeout_ms > 0 ? now_ms() + io.request_timeout_ms : 0;

    for (int attempt = 0;; attempt++) {
        int reused = conn->fd >= 0, reusable = 0, started = 0;

        io.no_close_notify = io.sock_failed = 0;
        if ((reused || conn_open(c, &io, e) == 0) &&
            http_exchange(c, &io, is_head, resp, &reusable, &started, e) == 0) {
            if (!reusable)
                conn_close(conn);
            rc = 0;
            goto out;
        }
        /* Whatever failed (connect, handshake, exchange), a half-used connection is closed. */
        conn_close(conn);
        /* The server dropped a reused connection before answering: it closed it as idle
         * just as we sent, so it cannot have processed the request. Once only, and never
         * on a fresh connection, where a close means the server chose not to answer. */
        if (!reused || started || attempt > 0 || !e || e->kind != LERR_CLOSED)
            goto out;
        log_debug("http: %s:%u dropped a reused connection (%s); resending once", conn->host,
                  conn->port, e->msg);
    }
out:
    if (c->req.cap > HTTP_KEEP_BUF) {
        free(c->req.p);
        c->req = (struct http_buf){ 0 };
    }
    return rc;
}

void http_response_free(struct http_response *resp)
{
    if (resp->owner)
        http_keep(resp->owner, resp->buf, resp->buf_cap);
    memset(resp, 0, sizeof *resp);
}
