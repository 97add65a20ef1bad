/*
 * An independent fixed-latency engine for checking `kvbench calibrate`, compiled.
 *
 * It shares no code with kvbench-sim (C, one thread, epoll, HTTP/1.1 by hand). It answers
 * OpenAI-style streaming /v1/chat/completions and /v1/completions: the first token
 * --ttft-ms after the request arrived, then one token every --itl-ms, keep-alive. A
 * request's arrival is the kernel's receive timestamp of its first bytes (SO_TIMESTAMPNS),
 * so a busy mock cannot stamp it late; the first token's `kvbench_server_ttft_us` is that
 * arrival to the instant just before its bytes are handed to the socket. kvbench's
 * overhead against it is the client's TTFT minus that stamp. /health and /v1/models answer
 * as an engine's do.
 *
 *   gcc -O2 -o target/stamping_mock scripts/stamping_mock.c
 *   taskset -c 1 target/stamping_mock --port 18502 --ttft-ms 50 --itl-ms 20 &
 *   ./target/release/kvbench calibrate --engine http://127.0.0.1:18502 --concurrency 256 --itl-ms 20
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 65536
#define MAX_REQUEST (4 << 20)

enum state { READING, STREAMING };

struct conn {
    int fd;
    enum state st;
    char *in;
    size_t in_len, in_cap;
    int64_t arrived_ns; /* kernel receive time of the request's first bytes; 0: none yet */
    char *out;
    size_t out_len, out_cap;
    int chat, tokens, sent;
    int64_t due_ns;        /* next token */
    int64_t stream_arrived_ns; /* the streaming request's arrival */
    int slot;       /* index in `streaming`, -1 when not streaming */
};

static struct conn *conns[MAX_CONNS];
/* The connections with a stream in progress, in no order. */
static struct conn *streaming[MAX_CONNS];
static int n_streaming;

static void start_streaming(struct conn *c) {
    c->slot = n_streaming;
    streaming[n_streaming++] = c;
}

static void stop_streaming(struct conn *c) {
    if (c->slot < 0) return;
    struct conn *moved = streaming[--n_streaming];
    streaming[c->slot] = moved;
    moved->slot = c->slot;
    c->slot = -1;
}
static double ttft_ms = 50.0, itl_ms = 20.0;
/* --arrival user: stamp arrival when the mock reads the request (to see what the kernel's
 * stamp saves), instead of the kernel's receive time. */
static int user_arrival;
static int epfd, tfd;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void out_add(struct conn *c, const char *data, size_t n) {
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) die("realloc");
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

/* One chunk of the chunked transfer encoding. */
static void out_chunk(struct conn *c, const char *data, size_t n) {
    char head[32];
    int h = snprintf(head, sizeof head, "%zx\r\n", n);
    out_add(c, head, (size_t)h);
    out_add(c, data, n);
    out_add(c, "\r\n", 2);
}

static void close_conn(struct conn *c) {
    stop_streaming(c);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->in);
    free(c->out);
    free(c);
}

/* Writes what is pending; 0 when all of it went, 1 when the socket is full, -1 on error. */
static int flush_out(struct conn *c) {
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    struct epoll_event ev = {.events = EPOLLIN | (c->out_len ? EPOLLOUT : 0), .data.fd = c->fd};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return c->out_len ? 1 : 0;
}

static void plain(struct conn *c, const char *status, const char *body) {
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n\r\n%s",
                     status, strlen(body), body);
    out_add(c, buf, (size_t)n);
}

static int json_int(const char *body, const char *key, int fallback) {
    const char *k = strstr(body, key);
    if (!k) return fallback;
    const char *colon = strchr(k + strlen(key), ':');
    if (!colon) return fallback;
    int v = atoi(colon + 1);
    return v > 0 ? v : fallback;
}

/* The next token's event; the first one carries the stamp, taken just before it is written. */
static void send_token(struct conn *c) {
    char ev[512];
    int last = c->sent + 1 == c->tokens;
    const char *text = c->sent == 0 ? "tok" : " tok";
    const char *finish = last ? "\"length\"" : "null";
    char stamp[64] = "";
    if (c->sent == 0)
        snprintf(stamp, sizeof stamp, ",\"kvbench_server_ttft_us\":%lld",
                 (long long)((now_ns() - c->stream_arrived_ns) / 1000));
    int n = c->chat
                ? snprintf(ev, sizeof ev,
                           "data: {\"id\":\"mock-1\",\"object\":\"chat.completion.chunk\",\"model\":\"mock\","
                           "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},\"finish_reason\":%s}]%s}\n\n",
                           text, finish, stamp)
                : snprintf(ev, sizeof ev,
                           "data: {\"id\":\"mock-1\",\"object\":\"text_completion\",\"model\":\"mock\","
                           "\"choices\":[{\"index\":0,\"text\":\"%s\",\"finish_reason\":%s}]%s}\n\n",
                           text, finish, stamp);
    out_chunk(c, ev, (size_t)n);
    c->sent++;
    c->due_ns += (int64_t)(itl_ms * 1e6);
    if (last) {
        n = snprintf(ev, sizeof ev,
                     "data: {\"id\":\"mock-1\",\"object\":\"%s\",\"model\":\"mock\",\"choices\":[],"
                     "\"usage\":{\"prompt_tokens\":16,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                     c->chat ? "chat.completion.chunk" : "text_completion", c->tokens, 16 + c->tokens);
        out_chunk(c, ev, (size_t)n);
        out_chunk(c, "data: [DONE]\n\n", 14);
        out_add(c, "0\r\n\r\n", 5);
        c->st = READING;
        stop_streaming(c);
    }
}

/* A whole request is in `in`: answer it, keep what follows it. */
static void handle_request(struct conn *c, size_t head_len, size_t total) {
    char path[256] = "";
    sscanf(c->in, "%*s %255s", path);
    char after = c->in[total]; /* the next request's first byte, if any */
    c->in[total] = '\0';
    const char *body = c->in + head_len;
    if (!strncmp(path, "/v1/chat/completions", 20) || !strncmp(path, "/v1/completions", 15)) {
        c->chat = !strncmp(path, "/v1/chat", 8);
        c->tokens = json_int(body, "\"max_tokens\"", json_int(body, "\"max_completion_tokens\"", 16));
        c->sent = 0;
        c->st = STREAMING;
        start_streaming(c);
        c->stream_arrived_ns = c->arrived_ns;
        c->due_ns = c->arrived_ns + (int64_t)(ttft_ms * 1e6);
        const char *head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        out_add(c, head, strlen(head));
        if (c->chat) {
            const char *first =
                "data: {\"id\":\"mock-1\",\"object\":\"chat.completion.chunk\",\"model\":\"mock\","
                "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
            out_chunk(c, first, strlen(first));
        }
    } else if (!strcmp(path, "/health")) {
        plain(c, "200 OK", "");
    } else if (!strcmp(path, "/v1/models")) {
        plain(c, "200 OK", "{\"object\":\"list\",\"data\":[{\"id\":\"mock\",\"object\":\"model\"}]}");
    } else {
        plain(c, "404 Not Found", "{}");
    }
    c->in[total] = after;
    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;
    c->arrived_ns = 0;
}

/* Reads what arrived, stamping a request's arrival with the kernel's receive time. */
static void on_readable(struct conn *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            if (c->in_cap >= MAX_REQUEST) { close_conn(c); return; }
            c->in_cap = c->in_cap ? c->in_cap * 2 : 16384;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in) die("realloc");
        }
        char cbuf[CMSG_SPACE(sizeof(struct timespec))];
        struct iovec iov = {.iov_base = c->in + c->in_len, .iov_len = c->in_cap - c->in_len - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        ssize_t r = recvmsg(c->fd, &msg, 0);
        if (r == 0) { close_conn(c); return; }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            close_conn(c);
            return;
        }
        if (c->in_len == 0 && c->arrived_ns == 0) {
            c->arrived_ns = now_ns();
            for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m)) {
                if (!user_arrival && m->cmsg_level == SOL_SOCKET && m->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec t;
                    memcpy(&t, CMSG_DATA(m), sizeof t);
                    c->arrived_ns = (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
                }
            }
        }
        c->in_len += (size_t)r;
    }
    while (c->st == READING && c->in_len > 0) {
        c->in[c->in_len] = '\0';
        char *end = strstr(c->in, "\r\n\r\n");
        if (!end) return;
        size_t head_len = (size_t)(end - c->in) + 4;
        size_t body_len = 0;
        for (char *h = c->in; h && h < end; h = strstr(h, "\r\n") ? strstr(h, "\r\n") + 2 : NULL) {
            if (!strncasecmp(h, "content-length:", 15)) body_len = (size_t)atol(h + 15);
        }
        if (c->in_len < head_len + body_len) return;
        if (c->arrived_ns == 0) c->arrived_ns = now_ns();
        handle_request(c, head_len, head_len + body_len);
        if (flush_out(c) < 0) { close_conn(c); return; }
    }
}

/* Sends every token that is due; arms the timer for the next one. */
static void tick(void) {
    int64_t now = now_ns(), next = 0;
    for (int i = 0; i < n_streaming;) {
        struct conn *c = streaming[i];
        while (c->st == STREAMING && c->due_ns <= now) send_token(c);
        if (flush_out(c) < 0) {
            close_conn(c); /* moves another connection into slot i */
            continue;
        }
        if (c->st == STREAMING) {
            if (next == 0 || c->due_ns < next) next = c->due_ns;
            i++;
        } else if (c->in_len > 0) {
            on_readable(c); /* a request that came while this one streamed */
        }
        /* A finished stream left slot i to another connection: look at i again. */
    }
    struct itimerspec its = {0};
    if (next) {
        its.it_value.tv_sec = next / 1000000000LL;
        its.it_value.tv_nsec = next % 1000000000LL;
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

int main(int argc, char **argv) {
    int port = 18502;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ttft-ms")) ttft_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--itl-ms")) itl_ms = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--arrival")) user_arrival = !strcmp(argv[i + 1], "user");
        else {
            fprintf(stderr, "usage: %s [--port P] [--ttft-ms MS] [--itl-ms MS] [--arrival kernel|user]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    epfd = epoll_create1(0);
    tfd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
    printf("stamping mock listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (cfd >= MAX_CONNS) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    setsockopt(cfd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c) die("calloc");
                    c->fd = cfd;
                    c->slot = -1;
                    conns[cfd] = c;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev);
                }
            } else if (fd == tfd) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("read timerfd");
            } else if (conns[fd]) {
                struct conn *c = conns[fd];
                if (evs[i].events & EPOLLOUT && flush_out(c) < 0) { close_conn(c); continue; }
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
            }
        }
        tick();
    }
}
