/*
 * fuzz-launch: the remote start of a multinode job's launcher, without SSH.
 *
 * Bind-mounted into every container of a multinode job (at /.fuzz-launch/fuzz-launch),
 * it is what Open MPI's plm_rsh_agent / PRRTE's plm_ssh_agent and MPICH Hydra's
 * -launcher-exec call instead of ssh:
 *
 *     fuzz-launch [ssh options] HOST COMMAND [ARGS...]
 *
 * runs COMMAND ARGS (joined with spaces and run by /bin/sh -c, as ssh does) in the
 * job's container whose address (or rank host name) is HOST, streaming stdin,
 * stdout and stderr, and exits with the command's exit status (255 and one line on
 * stderr when it could not be run, as ssh does). It asks the node's agent through
 * the unix socket next to it (/.fuzz-launch/launch.sock), which only this job's
 * containers have; the agent adds the job's credential and relays to the orchestrator.
 *
 *     fuzz-launch --wait
 *
 * is what the job's other ranks run: it waits (as the container's init) to be
 * entered by the launcher's remote starts, and exits 0 on SIGTERM.
 *
 * Hand-written in C, statically linked: it runs inside the job's image, whose libc
 * (if any) and tools are unknown, so it cannot be a script or a Python program, and
 * no packaged static ssh-like client speaks to fuzz's agent.
 *
 * Frames on the socket: one type byte, a 4-byte big-endian length, the payload.
 *   to the agent:   'S' start (HOST\0ARG\0ARG\0...), 'I' stdin bytes (empty: end of stdin)
 *   from the agent: 'O' stdout bytes, 'E' stderr bytes, 'X' exit status (4 bytes,
 *                   big-endian), 'F' why it could not run (text)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_NAME "launch.sock"
#define CHUNK 65536
#define FAILED 255

static int write_all(int fd, const void *data, size_t size) {
    const char *at = data;
    while (size > 0) {
        ssize_t n = write(fd, at, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        at += n;
        size -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *data, size_t size) {
    char *at = data;
    while (size > 0) {
        ssize_t n = read(fd, at, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        at += n;
        size -= (size_t)n;
    }
    return 0;
}

static int send_frame(int fd, char type, const void *payload, uint32_t size) {
    unsigned char head[5] = {(unsigned char)type, (unsigned char)(size >> 24),
                             (unsigned char)(size >> 16), (unsigned char)(size >> 8),
                             (unsigned char)size};
    if (write_all(fd, head, sizeof head) < 0) return -1;
    return size ? write_all(fd, payload, size) : 0;
}

static void fail(const char *why) {
    fprintf(stderr, "fuzz-launch: %s\n", why);
    exit(FAILED);
}

static void on_term(int signal_number) {
    (void)signal_number;
    _exit(0);
}

__attribute__((noreturn)) static void wait_forever(void) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    for (;;) pause();
}

/* The socket beside this program (argv[0]'s directory), or FUZZ_LAUNCH_SOCKET. */
static int connect_agent(const char *self) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    const char *given = getenv("FUZZ_LAUNCH_SOCKET");
    if (given && *given) {
        if (strlen(given) >= sizeof address.sun_path) fail("FUZZ_LAUNCH_SOCKET is too long");
        strcpy(address.sun_path, given);
    } else {
        const char *slash = strrchr(self, '/');
        size_t dir = slash ? (size_t)(slash - self) + 1 : 0;
        if (dir + sizeof SOCKET_NAME > sizeof address.sun_path) fail("its path is too long");
        memcpy(address.sun_path, self, dir);
        memcpy(address.sun_path + dir, SOCKET_NAME, sizeof SOCKET_NAME);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0)
        fail("cannot reach the node's agent (not inside a multinode job's container?)");
    return fd;
}

/* ssh's options that take a value; the others (-x, -q, -T, -n, ...) stand alone. */
static int takes_value(const char *option) {
    return option[1] && !option[2] && strchr("bcDEeFIiJLlmOopQRSWw", option[1]) != NULL;
}

static int relay(int agent) {
    char *buffer = malloc(CHUNK + 1);
    if (!buffer) fail("out of memory");
    int stdin_open = 1;
    for (;;) {
        struct pollfd fds[2] = {{.fd = agent, .events = POLLIN},
                                {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            fail("poll failed");
        }
        if (fds[1].revents) {
            ssize_t n = read(0, buffer, CHUNK);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) stdin_open = 0;
            if (send_frame(agent, 'I', buffer, n > 0 ? (uint32_t)n : 0) < 0)
                fail("the node's agent went away");
        }
        if (!fds[0].revents) continue;
        unsigned char head[5];
        if (read_all(agent, head, sizeof head) < 0) fail("the node's agent went away");
        uint32_t size = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 |
                        (uint32_t)head[3] << 8 | head[4];
        char *payload = size > CHUNK ? malloc(size + 1) : buffer;
        if (!payload || read_all(agent, payload, size) < 0) fail("the node's agent went away");
        switch (head[0]) {
        case 'O':
            write_all(1, payload, size);
            break;
        case 'E':
            write_all(2, payload, size);
            break;
        case 'X':
            if (size != 4) fail("a malformed exit status");
            return (int)((uint32_t)(unsigned char)payload[0] << 24 |
                         (uint32_t)(unsigned char)payload[1] << 16 |
                         (uint32_t)(unsigned char)payload[2] << 8 | (unsigned char)payload[3]);
        case 'F':
            payload[size] = '\0';
            fail(payload);
            break;
        default:
            fail("an unknown frame from the node's agent");
        }
        if (payload != buffer) free(payload);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--wait") == 0) wait_forever();
    int at = 1;
    while (at < argc && argv[at][0] == '-') at += takes_value(argv[at]) ? 2 : 1;
    if (argc - at < 2) fail("usage: fuzz-launch [ssh options] HOST COMMAND [ARGS...]");
    size_t size = 0;
    for (int i = at; i < argc; i++) size += strlen(argv[i]) + 1;
    char *start = malloc(size), *end = start;
    if (!start) fail("out of memory");
    for (int i = at; i < argc; i++) {
        size_t length = strlen(argv[i]) + 1;
        memcpy(end, argv[i], length);
        end += length;
    }
    signal(SIGPIPE, SIG_IGN);
    int agent = connect_agent(argv[0]);
    if (send_frame(agent, 'S', start, (uint32_t)size) < 0) fail("the node's agent went away");
    return relay(agent);
}
