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
 *     fuzz-launch --rank PROGRAM [ARGS...]
 *
 * is Open MPI's orte_fork_agent when the job's nodes share one machine and mpirun
 * runs every rank itself, as ranks of one node (so that they talk through vader's
 * shared memory): mpirun forks it in front of each rank. FUZZ_LAUNCH_RANK_HOSTS names
 * the ranks' nodes (HOST:SLOTS,...: mpirun fills the slots in order; rank 0's first,
 * this container's): a rank of this node is PROGRAM
 * itself (exec); another node's rank is started in that node's container, as a remote
 * start is, by
 *
 *     fuzz-launch --rank-here ADDRESS PORT CWD COUNT ENV... PROGRAM [ARGS...]
 *
 * which runs PROGRAM with the rank's environment (COUNT entries, as mpirun gave it;
 * this container's own FUZZ_RANK and MULTINODE_NODE_IP) in CWD, and carries the rank's connections to the PMIx server of mpirun (which
 * listens on rank 0's loopback only, and which ORTE gives no way to open wider) to
 * ADDRESS:PORT, where the --rank side listens on rank 0's job address and carries
 * them on to that loopback port. The rank's PMIX_SERVER_URI* point at the --rank-here
 * side's own loopback port. (No PMIX_SERVER_URI* in the rank's environment: PORT 0,
 * nothing carried.)
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
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define SOCKET_NAME "launch.sock"
#define CHUNK 65536
#define FAILED 255
#define MAX_PAIRS 64            /* a rank's PMIx connections carried at once */
#define MAX_WORD 120000         /* under Linux's 128 KiB for one argument (sh -c's) */
#define PMIX_URI "PMIX_SERVER_URI"

extern char **environ;

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

/* TCP connections accepted on `listener`, each carried to `upstream` and back. */
struct forward {
    int listener; /* -1: none */
    struct sockaddr_in upstream;
    int ends[MAX_PAIRS][2];
    int count;
};

static char forward_buffer[CHUNK];

/* A listening TCP socket on `address` (IPv4), on a port the kernel picks (`port`). */
static int listen_on(const char *address, uint16_t *port) {
    struct sockaddr_in where = {.sin_family = AF_INET};
    socklen_t size = sizeof where;
    if (inet_pton(AF_INET, address, &where.sin_addr) != 1) fail("not an IPv4 address");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&where, sizeof where) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&where, &size) < 0)
        fail("cannot listen for the rank's PMIx connections");
    *port = ntohs(where.sin_port);
    return fd;
}

/* The forward's sockets into `fds` (the listener, then both ends of each pair). */
static int forward_fds(const struct forward *forward, struct pollfd *fds) {
    int n = 0;
    if (forward->listener < 0) return 0;
    fds[n++] = (struct pollfd){.fd = forward->listener, .events = POLLIN};
    for (int i = 0; i < forward->count; i++)
        for (int side = 0; side < 2; side++)
            fds[n++] = (struct pollfd){.fd = forward->ends[i][side], .events = POLLIN};
    return n;
}

static void forward_close(struct forward *forward, int pair) {
    close(forward->ends[pair][0]);
    close(forward->ends[pair][1]);
    forward->ends[pair][0] = forward->ends[pair][1] = -1;
}

/* What poll found on `fds` (as forward_fds filled them): bytes carried, connections
 * accepted (and their upstream opened), ended ones closed on both sides. */
static void forward_serve(struct forward *forward, const struct pollfd *fds) {
    if (forward->listener < 0) return;
    for (int i = 0; i < forward->count; i++)
        for (int side = 0; side < 2 && forward->ends[i][0] >= 0; side++) {
            if (!fds[1 + 2 * i + side].revents) continue;
            ssize_t n = read(forward->ends[i][side], forward_buffer, sizeof forward_buffer);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0 || write_all(forward->ends[i][!side], forward_buffer, (size_t)n) < 0)
                forward_close(forward, i);
        }
    int kept = 0;
    for (int i = 0; i < forward->count; i++)
        if (forward->ends[i][0] >= 0) {
            forward->ends[kept][0] = forward->ends[i][0];
            forward->ends[kept++][1] = forward->ends[i][1];
        }
    forward->count = kept;
    if (!fds[0].revents) return;
    int accepted = accept4(forward->listener, NULL, NULL, SOCK_CLOEXEC);
    if (accepted < 0) return;
    int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (forward->count == MAX_PAIRS || upstream < 0 ||
        connect(upstream, (struct sockaddr *)&forward->upstream, sizeof forward->upstream) < 0) {
        close(accepted);
        if (upstream >= 0) close(upstream);
        return;
    }
    forward->ends[forward->count][0] = accepted;
    forward->ends[forward->count++][1] = upstream;
}

static int relay(int agent, struct forward *forward) {
    char *buffer = malloc(CHUNK + 1);
    if (!buffer) fail("out of memory");
    int stdin_open = 1;
    for (;;) {
        struct pollfd fds[3 + 2 * MAX_PAIRS] = {{.fd = agent, .events = POLLIN},
                                                {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
        int count = 2 + forward_fds(forward, fds + 2);
        if (poll(fds, (nfds_t)count, -1) < 0) {
            if (errno == EINTR) continue;
            fail("poll failed");
        }
        forward_serve(forward, fds + 2);
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

/* The host of rank `rank` in FUZZ_LAUNCH_RANK_HOSTS (HOST:SLOTS,...: the first SLOTS
 * ranks on the first HOST, and so on), into `out`. */
static void rank_host(const char *table, long rank, char *out, size_t size) {
    for (;;) {
        size_t length = strcspn(table, ":,");
        if (table[length] != ':') fail("FUZZ_LAUNCH_RANK_HOSTS: not HOST:SLOTS,...");
        long slots = strtol(table + length + 1, NULL, 10);
        if (rank < slots) {
            if (length == 0 || length >= size) fail("FUZZ_LAUNCH_RANK_HOSTS: a host too long");
            memcpy(out, table, length);
            out[length] = '\0';
            return;
        }
        rank -= slots;
        table = strchr(table, ',');
        if (!table++) fail("FUZZ_LAUNCH_RANK_HOSTS names fewer slots than the job has ranks");
    }
}

/* `word` in single quotes for /bin/sh, and a space after it; returns the end. */
static char *append_quoted(char *at, const char *word) {
    *at++ = '\'';
    for (; *word; word++) {
        if (*word == '\'') {
            memcpy(at, "'\\''", 4);
            at += 4;
        } else {
            *at++ = *word;
        }
    }
    *at++ = '\'';
    *at++ = ' ';
    return at;
}

static size_t quoted_size(const char *word) {
    size_t size = 3;
    for (; *word; word++) size += *word == '\'' ? 4 : 1;
    return size;
}

/* Whether a rank started elsewhere gets `entry`: not HOSTNAME (its container has its
 * own), nor the rank table (only this side reads it; a large job's is long). */
static int carried(const char *entry) {
    return strncmp(entry, "HOSTNAME=", 9) != 0 && strncmp(entry, "FUZZ_LAUNCH_RANK_HOSTS=", 23);
}

/* The variables fuzz gives each rank's container its own value of. */
static const char *const PER_RANK[] = {"FUZZ_RANK=", "MULTINODE_NODE_IP=", NULL};

/* This container's own entry for `entry`'s variable if it is a per-rank one, else `entry`. */
static char *own_value(char *entry) {
    for (const char *const *name = PER_RANK; *name; name++) {
        size_t length = strlen(*name);
        if (strncmp(entry, *name, length) != 0) continue;
        for (char **own = environ; *own; own++)
            if (strncmp(*own, *name, length) == 0) return *own;
    }
    return entry;
}

/* --rank: mpirun's fork agent in front of each rank (see the top of this file). */
static int start_rank(const char *self, char **command) {
    const char *table = getenv("FUZZ_LAUNCH_RANK_HOSTS");
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!table || !rank) fail("--rank is Open MPI's fork agent in a multinode job of fuzz");
    char own[64], target[64];
    rank_host(table, 0, own, sizeof own);
    rank_host(table, strtol(rank, NULL, 10), target, sizeof target);
    if (strcmp(own, target) == 0) {
        execvp(command[0], command);
        fprintf(stderr, "fuzz-launch: %s: %s\n", command[0], strerror(errno));
        return 127;
    }
    const char *uri = NULL;
    for (char **entry = environ; *entry && !uri; entry++)
        if (strncmp(*entry, PMIX_URI, strlen(PMIX_URI)) == 0) uri = strrchr(*entry, ':');
    struct forward forward = {.listener = -1};
    uint16_t port = 0; /* 0: no PMIx server to carry connections to */
    if (uri) {
        forward.upstream = (struct sockaddr_in){.sin_family = AF_INET,
                                                .sin_port = htons((uint16_t)atoi(uri + 1)),
                                                .sin_addr = {htonl(INADDR_LOOPBACK)}};
        forward.listener = listen_on(own, &port);
    }
    char port_text[8], cwd[4096], count_text[16];
    snprintf(port_text, sizeof port_text, "%u", port);
    if (!getcwd(cwd, sizeof cwd)) fail("cannot tell the rank's working directory");
    int count = 0;
    for (char **entry = environ; *entry; entry++) count += carried(*entry);
    snprintf(count_text, sizeof count_text, "%d", count);
    const char *head[] = {self, "--rank-here", own, port_text, cwd, count_text};
    size_t size = strlen(target) + 1;
    for (size_t i = 0; i < sizeof head / sizeof *head; i++) size += quoted_size(head[i]);
    for (char **entry = environ; *entry; entry++)
        if (carried(*entry)) size += quoted_size(*entry);
    for (char **word = command; *word; word++) size += quoted_size(*word);
    if (size > MAX_WORD) fail("the rank's environment and arguments are too long to carry");
    char *start = malloc(size), *at = start;
    if (!start) fail("out of memory");
    memcpy(at, target, strlen(target) + 1);
    at += strlen(target) + 1;
    for (size_t i = 0; i < sizeof head / sizeof *head; i++) at = append_quoted(at, head[i]);
    for (char **entry = environ; *entry; entry++)
        if (carried(*entry)) at = append_quoted(at, *entry);
    for (char **word = command; *word; word++) at = append_quoted(at, *word);
    at[-1] = '\0';
    signal(SIGPIPE, SIG_IGN);
    int agent = connect_agent(self);
    if (send_frame(agent, 'S', start, (uint32_t)(at - start)) < 0)
        fail("the node's agent went away");
    return relay(agent, &forward);
}

/* --rank-here: the rank, in its own node's container (see the top of this file). */
static int run_rank_here(int argc, char **argv) {
    if (argc < 5) fail("usage: fuzz-launch --rank-here ADDRESS PORT CWD COUNT ENV... PROGRAM");
    int count = atoi(argv[3]);
    if (count < 0 || argc < 5 + count) fail("--rank-here: fewer words than COUNT says");
    struct forward forward = {.listener = -1,
                              .upstream = {.sin_family = AF_INET,
                                           .sin_port = htons((uint16_t)atoi(argv[1]))}};
    if (inet_pton(AF_INET, argv[0], &forward.upstream.sin_addr) != 1)
        fail("--rank-here: not an IPv4 address");
    uint16_t port = 0;
    if (forward.upstream.sin_port) forward.listener = listen_on("127.0.0.1", &port);
    char **environment = calloc((size_t)count + 1, sizeof *environment);
    if (!environment) fail("out of memory");
    for (int i = 0; i < count; i++) {
        char *entry = own_value(argv[4 + i]), *colon = strrchr(entry, ':');
        environment[i] = entry;
        if (!port || strncmp(entry, PMIX_URI, strlen(PMIX_URI)) != 0 || !colon) continue;
        size_t kept = (size_t)(colon - entry) + 1;
        environment[i] = malloc(kept + 8);
        if (!environment[i]) fail("out of memory");
        memcpy(environment[i], entry, kept);
        snprintf(environment[i] + kept, 8, "%u", port);
    }
    sigset_t child_ended;
    sigemptyset(&child_ended);
    sigaddset(&child_ended, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child_ended, NULL);
    int ended = signalfd(-1, &child_ended, SFD_CLOEXEC);
    pid_t parent = getpid(), child = ended < 0 ? -1 : fork();
    if (child < 0) fail("cannot start the rank");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* this side gone (the start cancelled): so is the rank */
        if (getppid() != parent) _exit(FAILED);
        sigprocmask(SIG_UNBLOCK, &child_ended, NULL);
        if (chdir(argv[2]) < 0) fprintf(stderr, "fuzz-launch: %s: %s\n", argv[2], strerror(errno));
        environ = environment;
        execvp(argv[4 + count], argv + 4 + count);
        fprintf(stderr, "fuzz-launch: %s: %s\n", argv[4 + count], strerror(errno));
        _exit(127);
    }
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        struct pollfd fds[2 + 2 * MAX_PAIRS] = {{.fd = ended, .events = POLLIN}};
        int polled = 1 + forward_fds(&forward, fds + 1);
        if (poll(fds, (nfds_t)polled, -1) < 0) {
            if (errno == EINTR) continue;
            fail("poll failed");
        }
        forward_serve(&forward, fds + 1);
        if (!fds[0].revents) continue;
        struct signalfd_siginfo info;
        if (read(ended, &info, sizeof info) < 0 && errno != EAGAIN) fail("signalfd failed");
        int status;
        if (waitpid(child, &status, WNOHANG) != child) continue;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--wait") == 0) wait_forever();
    if (argc >= 3 && strcmp(argv[1], "--rank") == 0) return start_rank(argv[0], argv + 2);
    if (argc >= 2 && strcmp(argv[1], "--rank-here") == 0)
        return run_rank_here(argc - 2, argv + 2);
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
    struct forward none = {.listener = -1};
    return relay(agent, &none);
}
