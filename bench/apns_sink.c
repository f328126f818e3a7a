/*
 * apns_sink.c - a fast local APNs stand-in for bench/bench_push.py only.
 *
 * Not Apple's service, and not a test of Apple's behaviour: it is there so a
 * push benchmark measures passmill's sender and not tests/apns_standin.py's
 * Python (which spends 200-300 us of CPU per push).  It makes the same
 * protocol checks as apns_standin.py, with the same command line where one
 * applies:
 *
 *   apns_sink --cert PEM --key PEM --client-ca PEM --topic ID --port-file PATH
 *             [--count-file PATH]
 *
 *   - HTTP/2 (libnghttp2) over TLS 1.2+ (OpenSSL 3), ALPN "h2" only;
 *   - the client certificate required and verified against --client-ca, and
 *     its subject UID must equal the topic (the pass type ID certificate);
 *   - per request, in apns_standin.py's order: POST (else 405
 *     MethodNotAllowed), path /3/device/<token> (else 404 BadPath), the token
 *     hex digits (else 400 BadDeviceToken; apns_standin.py does not check
 *     this), apns-topic present (400 MissingTopic) and equal to --topic and
 *     the certificate's UID (400 TopicDisallowed), apns-push-type: background
 *     (400 InvalidPushType), apns-priority 5 when given (400 BadPriority), a
 *     body (400 PayloadEmpty) that is the empty JSON dictionary (400
 *     BadPayload);
 *   - a valid request is answered 200 with an apns-id header (the request's
 *     own apns-id when it sent one), any other with its status, an apns-id
 *     and the JSON body {"reason": "..."}.
 * Unlike apns_standin.py it has no answers by token prefix (a410..., a429...:
 * those are the tests' business), keeps no per-request log and runs in one
 * process.
 *
 * Bound to 127.0.0.1 on a port of the kernel's choice; once listening, the
 * port is written to --port-file (through a rename, as apns_standin.py does),
 * which is the readiness signal.  On SIGTERM or SIGINT it prints
 *   ok=<200 answers> rejected=<other answers> refused=<refused handshakes>
 * to stdout, or to --count-file when given (again through a rename), and
 * exits 0.  The first few rejections and refused handshakes are also printed
 * to stderr, as "violation ..." and "handshake ..." lines.
 *
 * One thread, one epoll loop, non-blocking sockets; the signals arrive
 * through a signalfd, so there is no global mutable state at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define PREFIX "/3/device/"
#define NOISY_MAX 10 /* rejections / refused handshakes printed to stderr */

typedef struct conn conn;

/* The whole server: one per process, passed around, never global. */
typedef struct sink {
    const char *topic;
    SSL_CTX *ctx;
    int epfd, listen_fd, sig_fd;
    conn *conns;                  /* open connections (a list, for the clean-up) */
    uint64_t ok, rejected, refused;
    uint64_t next_id;             /* for apns-id values the sink makes */
    unsigned char rbuf[1 << 16];  /* one read buffer: one thread */
} sink;

struct conn {
    sink *s;
    conn *prev, *next;
    int fd;
    SSL *ssl;
    nghttp2_session *h2;          /* NULL until the TLS handshake is done */
    char uid[256];                /* client certificate subject UID ("" = none) */
    uint32_t events;              /* what epoll waits for on fd now */
    bool read_wants_write;        /* SSL_read said WANT_WRITE: read again when writable */
    unsigned char *out;           /* bytes from nghttp2 not yet taken by SSL_write */
    size_t out_len, out_off, out_cap;
};

/* What one request's headers and body said, judged as they arrive. */
typedef struct stream {
    bool post;
    enum { PATH_BAD, PATH_NOT_HEX, PATH_OK } path;
    enum { TOPIC_MISSING, TOPIC_WRONG, TOPIC_OK } topic;
    bool push_type_ok, priority_ok;
    /* The body as a tiny state machine for JSON's "{}" with whitespace. */
    enum { BODY_EMPTY, BODY_BEFORE, BODY_INSIDE, BODY_AFTER, BODY_BAD } body;
    char id[64];                  /* apns-id of the request, "" = none */
    char resp[64];                /* the JSON answer, sent by read_body */
    size_t resp_len, resp_off;
} stream;

/* ---- the APNs checks ---- */

static bool is_json_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Feed body bytes: the only valid body is ws "{" ws "}" ws (json == {}). */
static void body_feed(stream *st, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && st->body != BODY_BAD; i++) {
        uint8_t c = p[i];
        if (st->body == BODY_EMPTY)
            st->body = BODY_BEFORE;
        if (is_json_ws(c))
            continue;
        if (st->body == BODY_BEFORE && c == '{')
            st->body = BODY_INSIDE;
        else if (st->body == BODY_INSIDE && c == '}')
            st->body = BODY_AFTER;
        else
            st->body = BODY_BAD;
    }
}

static bool equals(const uint8_t *v, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(v, s, n) == 0;
}

static void judge_path(stream *st, const uint8_t *v, size_t n)
{
    size_t plen = sizeof PREFIX - 1;
    if (n <= plen || memcmp(v, PREFIX, plen) != 0 || memchr(v + plen, '/', n - plen)) {
        st->path = PATH_BAD;
        return;
    }
    st->path = PATH_OK;
    for (size_t i = plen; i < n; i++) {
        uint8_t c = v[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            st->path = PATH_NOT_HEX;
    }
}

/* The status and, when not 200, Apple's reason for a finished request: the
 * first rule broken, in apns_standin.py's order. */
static int decide(const conn *c, const stream *st, const char **reason)
{
    const struct {
        bool broken;
        int status;
        const char *reason;
    } rules[] = {
        {!st->post, 405, "MethodNotAllowed"},
        {st->path == PATH_BAD, 404, "BadPath"},
        {st->path == PATH_NOT_HEX, 400, "BadDeviceToken"},
        {st->topic == TOPIC_MISSING, 400, "MissingTopic"},
        {st->topic == TOPIC_WRONG || strcmp(c->uid, c->s->topic) != 0, 400, "TopicDisallowed"},
        {!st->push_type_ok, 400, "InvalidPushType"},
        {!st->priority_ok, 400, "BadPriority"},
        {st->body == BODY_EMPTY, 400, "PayloadEmpty"},
        {st->body != BODY_AFTER, 400, "BadPayload"},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (rules[i].broken) {
            *reason = rules[i].reason;
            return rules[i].status;
        }
    *reason = NULL;
    return 200;
}

/* ---- nghttp2 callbacks (user_data is the conn) ---- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user_data)
{
    (void)user_data;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream *st = calloc(1, sizeof *st);
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->priority_ok = true; /* apns-priority is optional */
    nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *v, size_t vlen, uint8_t flags, void *user_data)
{
    (void)flags;
    conn *c = user_data;
    stream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0; /* trailers and the like: not APNs' */
    /* A repeated header: the last one counts (as in apns_standin.py's dict). */
    if (equals(name, nlen, ":method"))
        st->post = equals(v, vlen, "POST");
    else if (equals(name, nlen, ":path"))
        judge_path(st, v, vlen);
    else if (equals(name, nlen, "apns-topic"))
        st->topic = equals(v, vlen, c->s->topic) ? TOPIC_OK : TOPIC_WRONG;
    else if (equals(name, nlen, "apns-push-type"))
        st->push_type_ok = equals(v, vlen, "background");
    else if (equals(name, nlen, "apns-priority"))
        st->priority_ok = equals(v, vlen, "5");
    else if (equals(name, nlen, "apns-id") && vlen < sizeof st->id) {
        memcpy(st->id, v, vlen);
        st->id[vlen] = '\0';
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                         void *user_data)
{
    (void)flags, (void)user_data;
    stream *st = nghttp2_session_get_stream_user_data(h2, sid);
    if (st)
        body_feed(st, data, len);
    return 0;
}

static ssize_t read_body(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len, uint32_t *data_flags,
                         nghttp2_data_source *src, void *user_data)
{
    (void)h2, (void)sid, (void)user_data;
    stream *st = src->ptr;
    size_t n = st->resp_len - st->resp_off;
    if (n > len)
        n = len;
    memcpy(buf, st->resp + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == st->resp_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}

/* The request is complete: answer it. */
static int answer(conn *c, int32_t sid, stream *st)
{
    sink *s = c->s;
    const char *reason;
    int status = decide(c, st, &reason);
    if (!st->id[0]) {
        /* A UUID-shaped id, unique per sink run (apns_standin.py uses uuid4). */
        uint64_t n = ++s->next_id;
        snprintf(st->id, sizeof st->id, "%08X-0000-4000-8000-%012llX", (unsigned)getpid(),
                 (unsigned long long)n);
    }
    char code[4], clen[8];
    snprintf(code, sizeof code, "%d", status);
    if (status == 200) {
        s->ok++;
        nghttp2_nv hd[] = {NV(":status", code, 3), NV("apns-id", st->id, strlen(st->id))};
        return nghttp2_submit_response(c->h2, sid, hd, 2, NULL);
    }
    if (s->rejected++ < NOISY_MAX)
        fprintf(stderr, "apns_sink: violation: stream %d: %d %s\n", sid, status, reason);
    st->resp_len = (size_t)snprintf(st->resp, sizeof st->resp, "{\"reason\": \"%s\"}", reason);
    snprintf(clen, sizeof clen, "%zu", st->resp_len);
    nghttp2_nv hd[] = {NV(":status", code, 3), NV("apns-id", st->id, strlen(st->id)),
                       NV("content-type", "application/json", 16), NV("content-length", clen, strlen(clen))};
    nghttp2_data_provider body = {.source.ptr = st, .read_callback = read_body};
    return nghttp2_submit_response(c->h2, sid, hd, 4, &body);
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user_data)
{
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    stream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!st)
        return 0;
    return answer(user_data, f->hd.stream_id, st) == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_stream_close(nghttp2_session *h2, int32_t sid, uint32_t error_code, void *user_data)
{
    (void)error_code, (void)user_data;
    free(nghttp2_session_get_stream_user_data(h2, sid));
    return 0;
}

/* ---- connections ---- */

static int want_events(conn *c, uint32_t ev)
{
    if (ev == c->events)
        return 0;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    c->events = ev;
    return epoll_ctl(c->s->epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void conn_close(conn *c)
{
    sink *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->h2)
        nghttp2_session_del(c->h2); /* frees the open streams through on_stream_close */
    SSL_free(c->ssl);
    close(c->fd);
    free(c->out);
    free(c);
}

/* Hand nghttp2's pending frames to TLS until nothing is left or the socket is
 * full.  0 = fine, -1 = close the connection. */
static int conn_flush(conn *c)
{
    for (;;) {
        if (c->out_off == c->out_len) {
            /* Gather up to 64 KiB of frames: one SSL_write (a few records, one
             * send) for many answers. */
            c->out_off = c->out_len = 0;
            const uint8_t *p;
            ssize_t n;
            while (c->out_len < (1 << 16) && (n = nghttp2_session_mem_send(c->h2, &p)) != 0) {
                if (n < 0)
                    return -1;
                if (c->out_len + (size_t)n > c->out_cap) {
                    size_t cap = c->out_cap ? c->out_cap : 1 << 14;
                    while (cap < c->out_len + (size_t)n)
                        cap *= 2;
                    unsigned char *grown = realloc(c->out, cap);
                    if (!grown)
                        return -1;
                    c->out = grown;
                    c->out_cap = cap;
                }
                memcpy(c->out + c->out_len, p, (size_t)n);
                c->out_len += (size_t)n;
            }
            if (c->out_len == 0)
                break;
        }
        int w = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE)
            return want_events(c, EPOLLIN | EPOLLOUT);
        if (e == SSL_ERROR_WANT_READ)
            return want_events(c, EPOLLIN);
        return -1;
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        return -1; /* GOAWAY sent and received: done */
    return want_events(c, EPOLLIN);
}

static void print_tls_error(sink *s, const char *what)
{
    if (s->refused++ >= NOISY_MAX) {
        ERR_clear_error();
        return;
    }
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    fprintf(stderr, "apns_sink: handshake %s %s\n", what, buf);
    ERR_clear_error();
}

/* The handshake is done: check ALPN, read the certificate's UID, start HTTP/2. */
static int conn_start_h2(conn *c)
{
    const unsigned char *alpn;
    unsigned alen;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
        print_tls_error(c->s, "no ALPN h2");
        return -1;
    }
    X509 *peer = SSL_get0_peer_certificate(c->ssl); /* verified: SSL_VERIFY_FAIL_IF_NO_PEER_CERT */
    X509_NAME *subj = peer ? X509_get_subject_name(peer) : NULL;
    /* The last UID entry, as apns_standin.py's loop over the subject keeps it. */
    for (int i = -1; subj && (i = X509_NAME_get_index_by_NID(subj, NID_userId, i)) >= 0;) {
        unsigned char *u = NULL;
        int n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
        if (n >= 0 && (size_t)n < sizeof c->uid) {
            memcpy(c->uid, u, (size_t)n);
            c->uid[n] = '\0';
        }
        OPENSSL_free(u);
    }

    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    /* libcurl (7.88) ends every finished stream with RST_STREAM(STREAM_CLOSED);
     * nghttp2's rapid-reset guard (CVE-2023-44487: a burst of 1,000, then 33
     * a second) would answer that with GOAWAY(INTERNAL_ERROR) after about a
     * thousand pushes.  A sink for one local client has no use for it. */
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_option_set_stream_reset_rate_limit(opt, UINT64_MAX, UINT64_MAX);
    int rc = nghttp2_session_server_new2(&c->h2, cb, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    /* apns_standin.py's settings. */
    nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
                                    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    return nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, set, 2) == 0 ? 0 : -1;
}

/* Drive a connection after epoll said ev: handshake, read, write.
 * 0 = keep it, -1 = close it. */
static int conn_io(conn *c, uint32_t ev)
{
    sink *s = c->s;
    if (ev & (EPOLLERR | EPOLLHUP) && !(ev & EPOLLIN))
        return -1;
    if (!c->h2) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                return want_events(c, EPOLLIN);
            if (e == SSL_ERROR_WANT_WRITE)
                return want_events(c, EPOLLIN | EPOLLOUT);
            print_tls_error(s, "refused:");
            return -1;
        }
        if (conn_start_h2(c) != 0)
            return -1;
        ev |= EPOLLIN; /* the client may have sent its preface with its Finished */
    }
    if ((ev & EPOLLIN) || (c->read_wants_write && (ev & EPOLLOUT))) {
        c->read_wants_write = false;
        for (;;) {
            int r = SSL_read(c->ssl, s->rbuf, sizeof s->rbuf);
            if (r > 0) {
                if (nghttp2_session_mem_recv(c->h2, s->rbuf, (size_t)r) < 0)
                    return -1;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_WANT_WRITE) {
                c->read_wants_write = true;
                break;
            }
            ERR_clear_error();
            return -1; /* closed by the client, or broken */
        }
    }
    if (conn_flush(c) != 0)
        return -1;
    if (c->read_wants_write)
        return want_events(c, EPOLLIN | EPOLLOUT);
    return 0;
}

static void accept_all(sink *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a transient error: epoll says when to try again */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        SSL *ssl = c ? SSL_new(s->ctx) : NULL;
        if (!ssl || SSL_set_fd(ssl, fd) != 1) {
            SSL_free(ssl);
            free(c);
            close(fd);
            continue;
        }
        SSL_set_accept_state(ssl);
        *c = (conn){.s = s, .fd = fd, .ssl = ssl, .events = EPOLLIN, .next = s->conns};
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
            SSL_free(ssl);
            free(c);
            close(fd);
            continue;
        }
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
    }
}

/* ---- set-up ---- */

static int select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                     unsigned inlen, void *arg)
{
    (void)ssl, (void)arg;
    static const unsigned char h2[] = "\x02h2";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, h2, sizeof h2 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* APNs is HTTP/2 only */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(const char *cert, const char *key, const char *client_ca)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1 ||
        SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* A verifying server must name its sessions, or a client resuming one
     * (libcurl does, for its second connection) fails the handshake;
     * Python's ssl module sets one itself. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"apns_sink", 9);
    SSL_CTX_set_alpn_select_cb(ctx, select_h2, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    /* conn_flush retries a partial write from where it stopped. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

/* Write text to path through path.tmp and a rename: readers see all or nothing. */
static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static int listen_on_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        perror("apns_sink: listen");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void usage(void)
{
    fprintf(stderr, "usage: apns_sink --cert PEM --key PEM --client-ca PEM --topic ID --port-file PATH"
                    " [--count-file PATH]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL, *client_ca = NULL, *topic = NULL, *port_file = NULL,
               *count_file = NULL;
    static const struct option opts[] = {
        {"cert", required_argument, NULL, 'c'},      {"key", required_argument, NULL, 'k'},
        {"client-ca", required_argument, NULL, 'a'}, {"topic", required_argument, NULL, 't'},
        {"port-file", required_argument, NULL, 'p'}, {"count-file", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'a': client_ca = optarg; break;
        case 't': topic = optarg; break;
        case 'p': port_file = optarg; break;
        case 'n': count_file = optarg; break;
        default: usage();
        }
    }
    if (!cert || !key || !client_ca || !topic || !port_file || optind != argc)
        usage();

    sink *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    s->topic = topic;
    if (!(s->ctx = make_ctx(cert, key, client_ca)))
        return 1;
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an EPIPE, not a death */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    int port;
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) != 0 || (s->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC)) < 0 ||
        (s->listen_fd = listen_on_loopback(&port)) < 0 || (s->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        perror("apns_sink");
        return 1;
    }
    /* data.ptr: NULL = the listener, the sink = the signalfd, else a conn. */
    struct epoll_event el = {.events = EPOLLIN, .data.ptr = NULL}, es = {.events = EPOLLIN, .data.ptr = s};
    char text[64];
    snprintf(text, sizeof text, "%d\n", port);
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &el) != 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sig_fd, &es) != 0 || write_file(port_file, text) != 0) {
        perror("apns_sink: start");
        return 1;
    }

    for (bool stop = false; !stop;) {
        struct epoll_event ev[64];
        int n = epoll_wait(s->epfd, ev, 64, -1);
        if (n < 0 && errno != EINTR) {
            perror("apns_sink: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL)
                accept_all(s);
            else if (ev[i].data.ptr == s)
                stop = true; /* SIGTERM or SIGINT: finish this wake-up's events, then report */
            else if (conn_io(ev[i].data.ptr, ev[i].events) != 0)
                conn_close(ev[i].data.ptr);
        }
    }

    snprintf(text, sizeof text, "ok=%llu rejected=%llu refused=%llu\n", (unsigned long long)s->ok,
             (unsigned long long)s->rejected, (unsigned long long)s->refused);
    int rc = 0;
    if (count_file)
        rc = write_file(count_file, text) != 0;
    else if (fputs(text, stdout) < 0 || fflush(stdout) != 0)
        rc = 1;
    while (s->conns)
        conn_close(s->conns);
    close(s->epfd);
    close(s->listen_fd);
    close(s->sig_fd);
    SSL_CTX_free(s->ctx);
    free(s);
    return rc;
}
