/* The direct path's pump in C (fuzz/rpc/direct.py's wire format, fuzz/rpc/native_pump.py).
 *
 * Copies both ways between a TLS connection that Python's ssl module set up (its
 * OpenSSL SSL object, handshake done, peer verified) and a plain socket, until both
 * directions have ended: plain -> TLS as chunks [4-byte big-endian length][bytes], each one
 * SSL_write; TLS -> plain the chunks' bodies, an empty chunk ending the direction (the
 * plain socket is then shut for writing). One thread, non-blocking descriptors, poll,
 * one buffer per direction. Called through ctypes, which lets go of the GIL for the whole
 * call: a round trip's wake-ups run no Python at all. Read-ahead is turned on, so OpenSSL
 * reads a record's header and body (and whatever follows) in one read(2). After a wake-up
 * that moved a few bytes only, the pump busy-polls for a short, adaptive while before it
 * sleeps (SPIN_MAX_NS below), while the machine has a CPU to spare.
 *
 * fuzz_pump returns 0 once both directions ended, else one of the FUZZ_PUMP_* codes below
 * with a sentence in `error` (and errno's value in errors[0] for a socket's failure).
 * spin_when_busy: spin even while the machine has no CPU to spare (tests). Its
 * counts[6]: the bytes moved plain -> TLS and TLS -> plain, the waits, those that followed
 * a wake-up of a few bytes (interactive), the spins that caught the next event, and the ns
 * spent spinning (fuzz/rpc/native_pump.py's PumpCounts).
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define HEADER_BYTES 4
#define FUZZ_PUMP_OSERROR 1      /* a socket failed: errors[0] is errno */
#define FUZZ_PUMP_TLS_ERROR 2    /* OpenSSL failed */
#define FUZZ_PUMP_NO_END_MARK 3  /* the TLS side ended without its empty chunk */
#define FUZZ_PUMP_NO_MEMORY 4

/* Busy-polling: after a wake-up that moved a few bytes only (a round trip's message, not a
 * transfer's), the pump polls without sleeping, for up to its budget, before it sleeps in
 * poll. A sleeping thread's wake-up on another CPU costs more than the copy (on a VM: the
 * idle vCPU's halt exit and an IPI, about 10 µs a wake-up here), and on an interactive
 * connection the answer often comes within tens of µs. The budget adapts: SPIN_MAX_NS
 * after a spin that caught the next message, half of it after one that did not (down to
 * SPIN_MIN_NS), so an idle or slow connection spends at most SPIN_MIN_NS per message it
 * moved, and a transfer (wake-ups that move more than INTERACTIVE_BYTES) none. A spin only
 * takes a CPU nobody else wants: it does not start while the machine has more runnable
 * threads than CPUs (/proc/loadavg's count, which includes this one and the peer it just
 * woke; on a busy machine the spinner would delay the very process it waits for), and
 * yields between its polls. */
#define SPIN_MAX_NS 100000
#define SPIN_MIN_NS 10000
#define INTERACTIVE_BYTES 4096 /* a wake-up that moved more is a transfer's: no spinning */

struct wait {
    int fd; /* -1: not waiting */
    short events;
};

struct direction {
    unsigned char *buffer;
    size_t size, start, end;
    int ended;   /* the source is at its end */
    int done;    /* ... and everything went on, and the sink knows */
    int drained; /* the last read took all there was: poll before the next */
    uint64_t moved;
    struct wait wait;
};

struct pump {
    SSL *ssl;
    int tls_fd, plain_fd;
    struct direction out, in; /* plain -> TLS, TLS -> plain */
    unsigned char header[HEADER_BYTES];
    size_t header_got, chunk_left;
    char *error;
    size_t error_size;
    int *errors;
    int loadavg_fd;             /* /proc/loadavg, or -1: spin without looking (spin_when_busy) */
    long cpus;
    uint64_t moved_before_wait; /* both directions' bytes when the last wait began */
    uint64_t spin_ns;           /* the budget: how long the next interactive wait spins */
    uint64_t waits, interactive_waits, spin_hits, spun_ns; /* for the caller's counts */
};

static const short READABLE = POLLIN | POLLPRI | POLLHUP | POLLERR;
static const short WRITABLE = POLLOUT | POLLHUP | POLLERR;

static int fail_errno(struct pump *p, const char *what) {
    p->errors[0] = errno;
    snprintf(p->error, p->error_size, "%s: %s", what, strerror(errno));
    return FUZZ_PUMP_OSERROR;
}

/* After SSL_read/SSL_write returned `result` <= 0: 0 with `wait` set when it would block,
 * else the error code. */
static int tls_blocked(struct pump *p, int result, struct wait *wait) {
    int reason = SSL_get_error(p->ssl, result);
    unsigned long queued;
    switch (reason) {
    case SSL_ERROR_WANT_READ:
        wait->fd = p->tls_fd;
        wait->events = READABLE;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        wait->fd = p->tls_fd;
        wait->events = WRITABLE;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        snprintf(p->error, p->error_size, "the far side ended without closing its stream");
        return FUZZ_PUMP_NO_END_MARK;
    case SSL_ERROR_SYSCALL:
        if (errno != 0 && ERR_peek_error() == 0) {
            int code = fail_errno(p, "TLS socket");
            ERR_clear_error();
            return code;
        }
        break;
    default:
        break;
    }
    queued = ERR_get_error();
    ERR_clear_error();
    if (queued == 0) { /* EOF without close_notify */
        snprintf(p->error, p->error_size, "the far side ended without closing its stream");
        return FUZZ_PUMP_NO_END_MARK;
    }
    snprintf(p->error, p->error_size, "TLS: ");
    ERR_error_string_n(queued, p->error + 5, p->error_size - 5);
    return FUZZ_PUMP_TLS_ERROR;
}

/* plain -> TLS: write what is pending, read more, until blocked or done. */
static int step_out(struct pump *p) {
    struct direction *d = &p->out;
    for (;;) {
        if (d->start < d->end) {
            int written;
            ERR_clear_error();
            errno = 0;
            written = SSL_write(p->ssl, d->buffer + d->start, (int)(d->end - d->start));
            if (written <= 0)
                return tls_blocked(p, written, &d->wait);
            d->start += (size_t)written;
            continue;
        }
        d->start = d->end = 0;
        if (d->ended) {
            d->done = 1;
            d->wait.fd = -1;
            return 0;
        }
        if (d->drained) { /* a read now would only say so: let poll tell when */
            d->drained = 0;
            d->wait.fd = p->plain_fd;
            d->wait.events = READABLE;
            return 0;
        }
        ssize_t count = recv(p->plain_fd, d->buffer + HEADER_BYTES, d->size - HEADER_BYTES, 0);
        if (count < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                d->wait.fd = p->plain_fd;
                d->wait.events = READABLE;
                return 0;
            }
            return fail_errno(p, "local socket");
        }
        d->buffer[0] = (unsigned char)((uint64_t)count >> 24);
        d->buffer[1] = (unsigned char)((uint64_t)count >> 16);
        d->buffer[2] = (unsigned char)((uint64_t)count >> 8);
        d->buffer[3] = (unsigned char)count;
        d->end = HEADER_BYTES + (size_t)count;
        d->moved += (uint64_t)count;
        d->ended = count == 0;
        d->drained = (size_t)count < d->size - HEADER_BYTES; /* a short read emptied it */
    }
}

/* Decrypt chunk bodies into the buffer until it is full, nothing more is there, or the end
 * mark: 0 (d->end > 0, d->ended, or d->wait set), or an error code. */
static int fill_in(struct pump *p) {
    struct direction *d = &p->in;
    while (d->end < d->size) {
        int reading_header = p->chunk_left == 0;
        unsigned char *into;
        size_t room;
        int count;
        if (reading_header) {
            into = p->header + p->header_got;
            room = HEADER_BYTES - p->header_got;
        } else {
            into = d->buffer + d->end;
            room = d->size - d->end < p->chunk_left ? d->size - d->end : p->chunk_left;
        }
        ERR_clear_error();
        errno = 0;
        count = SSL_read(p->ssl, into, (int)room);
        if (count <= 0) {
            struct wait wait;
            int code = tls_blocked(p, count, &wait);
            if (code != 0)
                return code;
            if (d->end > 0) { /* what came goes on first, then poll for the rest */
                d->drained = wait.events == READABLE;
                return 0;
            }
            d->wait = wait;
            return 0;
        }
        if (!reading_header) {
            d->end += (size_t)count;
            p->chunk_left -= (size_t)count;
            d->moved += (uint64_t)count;
            if (p->chunk_left == 0 && !SSL_has_pending(p->ssl)) {
                d->drained = 1; /* nothing read is left: write, then poll */
                return 0;
            }
            continue;
        }
        p->header_got += (size_t)count;
        if (p->header_got == HEADER_BYTES) {
            p->header_got = 0;
            p->chunk_left = ((size_t)p->header[0] << 24) | ((size_t)p->header[1] << 16) |
                            ((size_t)p->header[2] << 8) | (size_t)p->header[3];
            if (p->chunk_left == 0) {
                d->ended = 1;
                return 0;
            }
        }
    }
    return 0;
}

/* TLS -> plain: write what is pending, read more, until blocked or done. */
static int step_in(struct pump *p) {
    struct direction *d = &p->in;
    for (;;) {
        if (d->start < d->end) {
            ssize_t sent = send(p->plain_fd, d->buffer + d->start, d->end - d->start,
                                MSG_NOSIGNAL);
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    d->wait.fd = p->plain_fd;
                    d->wait.events = WRITABLE;
                    return 0;
                }
                return fail_errno(p, "local socket");
            }
            d->start += (size_t)sent;
            continue;
        }
        d->start = d->end = 0;
        if (d->ended) {
            shutdown(p->plain_fd, SHUT_WR); /* a peer already gone needs no telling */
            d->done = 1;
            d->wait.fd = -1;
            return 0;
        }
        if (d->drained) {
            d->drained = 0;
            d->wait.fd = p->tls_fd;
            d->wait.events = READABLE;
            return 0;
        }
        d->wait.fd = -1;
        int code = fill_in(p);
        if (code != 0)
            return code;
        if (d->wait.fd >= 0)
            return 0;
    }
}

static int ready(const struct wait *wait, const struct pollfd *fds, int count) {
    if (wait->fd < 0)
        return 1;
    for (int i = 0; i < count; i++)
        if (fds[i].fd == wait->fd)
            return (fds[i].revents & wait->events) != 0;
    return 0;
}

static int add_wait(struct pollfd *fds, int count, const struct wait *wait) {
    if (wait->fd < 0)
        return count;
    for (int i = 0; i < count; i++)
        if (fds[i].fd == wait->fd) {
            fds[i].events |= wait->events;
            return count;
        }
    fds[count].fd = wait->fd;
    fds[count].events = wait->events;
    fds[count].revents = 0;
    return count + 1;
}

static uint64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* Whether a spin would take an idle CPU: no more runnable threads than CPUs. */
static int cpu_to_spare(const struct pump *p) {
    char text[128];
    ssize_t size;
    const char *field = text;
    if (p->loadavg_fd < 0)
        return 1;
    size = pread(p->loadavg_fd, text, sizeof text - 1, 0);
    if (size <= 0)
        return 1;
    text[size] = 0;
    for (int spaces = 0; spaces < 3 && field; spaces++) /* "0.93 1.12 1.11 2/345 678" */
        if ((field = strchr(field, ' ')) != NULL)
            field++;
    return field == NULL || strtol(field, NULL, 10) <= p->cpus;
}

/* Poll until one of `fds` is ready: busy first (see SPIN_MAX_NS) when the wake-up that
 * ends here moved at most INTERACTIVE_BYTES, then asleep. */
static int wait_ready(struct pump *p, struct pollfd *fds, int count) {
    uint64_t moved = p->out.moved + p->in.moved;
    int interactive = moved > p->moved_before_wait &&
                      moved - p->moved_before_wait <= INTERACTIVE_BYTES;
    int result;
    p->moved_before_wait = moved;
    p->waits++;
    p->interactive_waits += (uint64_t)interactive;
    if (interactive && cpu_to_spare(p)) {
        uint64_t started = now_ns(), spun;
        for (;;) {
            result = poll(fds, (nfds_t)count, 0);
            spun = now_ns() - started;
            if (result > 0 || (result < 0 && errno != EINTR) || spun >= p->spin_ns)
                break;
            sched_yield(); /* a thread woken onto this CPU runs first */
        }
        p->spun_ns += spun;
        if (result > 0) { /* caught: the next wait spins as long as it may */
            p->spin_hits++;
            p->spin_ns = SPIN_MAX_NS;
            return result;
        }
        if (result < 0 && errno != EINTR)
            return result;
        p->spin_ns = p->spin_ns / 2 < SPIN_MIN_NS ? SPIN_MIN_NS : p->spin_ns / 2;
    }
    while ((result = poll(fds, (nfds_t)count, -1)) < 0)
        if (errno != EINTR)
            return result;
    return result;
}

static int run(struct pump *p) {
    struct pollfd fds[2];
    int count = 0;
    while (!(p->out.done && p->in.done)) {
        int code;
        if (!p->out.done && ready(&p->out.wait, fds, count) && (code = step_out(p)) != 0)
            return code;
        if (!p->in.done && ready(&p->in.wait, fds, count) && (code = step_in(p)) != 0)
            return code;
        count = 0;
        if (!p->out.done)
            count = add_wait(fds, count, &p->out.wait);
        if (!p->in.done)
            count = add_wait(fds, count, &p->in.wait);
        if (count == 0)
            continue;
        if (wait_ready(p, fds, count) < 0)
            return fail_errno(p, "poll");
        for (int i = 0; i < count; i++)
            if (fds[i].revents & POLLNVAL) { /* closed under us: fail rather than spin */
                errno = EBADF;
                return fail_errno(p, "poll");
            }
    }
    return 0;
}

/* The OpenSSL version this library was built against, for its caller to compare with the
 * one that made `ssl` (a different library's SSL object must never reach fuzz_pump). */
unsigned long fuzz_pump_openssl_version(void) { return OpenSSL_version_num(); }

int fuzz_pump(SSL *ssl, int tls_fd, int plain_fd, size_t buffer_bytes, int spin_when_busy,
              uint64_t counts[6],
              int errors[1], char *error, size_t error_size) {
    struct pump p;
    int code;
    memset(&p, 0, sizeof p);
    p.ssl = ssl;
    p.tls_fd = tls_fd;
    p.plain_fd = plain_fd;
    p.error = error;
    p.error_size = error_size;
    p.errors = errors;
    p.out.size = p.in.size = buffer_bytes;
    p.out.wait.fd = p.in.wait.fd = -1;
    p.spin_ns = SPIN_MAX_NS;
    p.loadavg_fd = spin_when_busy ? -1 : open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    p.cpus = sysconf(_SC_NPROCESSORS_ONLN);
    p.out.buffer = malloc(buffer_bytes);
    p.in.buffer = malloc(buffer_bytes);
    if (buffer_bytes <= HEADER_BYTES || !p.out.buffer || !p.in.buffer) {
        free(p.out.buffer);
        free(p.in.buffer);
        snprintf(error, error_size, "no memory for the pump's buffers");
        return FUZZ_PUMP_NO_MEMORY;
    }
    SSL_set_read_ahead(ssl, 1);
    if (SSL_pending(ssl) == 0 && !SSL_has_pending(ssl)) {
        /* nothing read and not yet taken: the read buffer is made anew as large as ours,
         * so that one read(2) takes up to that many bytes of records */
        SSL_set_default_read_buffer_len(ssl, buffer_bytes);
        SSL_free_buffers(ssl);
    }
    code = run(&p);
    counts[0] = p.out.moved;
    counts[1] = p.in.moved;
    counts[2] = p.waits;
    counts[3] = p.interactive_waits;
    counts[4] = p.spin_hits;
    counts[5] = p.spun_ns;
    free(p.out.buffer);
    free(p.in.buffer);
    if (p.loadavg_fd >= 0)
        close(p.loadavg_fd);
    return code;
}
