/*
 * fuzz-tasks: the task server, PID 1 of a task sandbox (fuzz/substrate/monitor/sandbox.py).
 *
 * The node's monitor runs the tasks of one task array on one node as processes of one
 * long-lived container (its root, network, user, capabilities, seccomp and rlimits are
 * the tasks'), whose init is this program, bind-mounted read-only at /.fuzz-tasks:
 *
 *     /.fuzz-tasks FD
 *
 * FD is a SOCK_SEQPACKET socket to the monitor (passed in by `runc run --preserve-fds`).
 * Each datagram is one message; every integer is in the host's byte order.
 *
 *   from the monitor:
 *     START  u32 kind=1, u32 seq, u32 argc, u32 envc, then NUL-terminated strings
 *            CWD, ARGV[argc], ENV[envc]; with exactly two descriptors (SCM_RIGHTS):
 *            the task's stdout and stderr. The server forks a child that waits.
 *     GO     u32 kind=2, u32 seq, u32 0, u32 0: the waiting child of task seq execs
 *            (the monitor has moved it into the task's cgroup first).
 *   to the monitor (12 bytes each):
 *     FORKED u32 kind=1, u32 seq, i32 the child's pid (in the sandbox's pid namespace)
 *     EXITED u32 kind=2, u32 seq, i32 its wait status
 *     FAILED u32 kind=3, u32 seq, i32 errno (the task could not be forked)
 *
 * A child whose GO never comes (its go pipe closes: the server died) exits 127 without
 * running anything. When the monitor's end closes, the server exits, and with it (PID 1)
 * every process of the sandbox. As PID 1 it reaps orphans too.
 *
 * In C, statically linked, as fuzz-launch: it runs inside the job's image (unknown libc),
 * and a task's start should cost a fork, not an interpreter's start. The monitor trusts
 * nothing it says: it checks every message and the pids against the sandbox's cgroup.
 */
#define _GNU_SOURCE /* ppoll, MSG_CMSG_CLOEXEC, execvpe */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_MESSAGE (256 * 1024)
#define MAX_TASKS 4096
#define MAX_STRINGS 8192

enum { START = 1, GO = 2 };
enum { FORKED = 1, EXITED = 2, FAILED = 3 };

struct task {
    pid_t pid;     /* 0: a free slot */
    uint32_t seq;
    int go_fd;     /* the write end of the child's go pipe; -1 once said */
};

static struct task tasks[MAX_TASKS];
static char message[MAX_MESSAGE + 1];
static volatile sig_atomic_t child_exited;

static void on_child(int signum) {
    (void)signum;
    child_exited = 1;
}

static void report(int sock, uint32_t kind, uint32_t seq, int32_t value) {
    uint32_t answer[3] = {kind, seq, (uint32_t)value};
    while (send(sock, answer, sizeof answer, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

static struct task *find(uint32_t seq) {
    for (int i = 0; i < MAX_TASKS; i++)
        if (tasks[i].pid > 0 && tasks[i].seq == seq)
            return &tasks[i];
    return NULL;
}

/* The child: its stdio, then wait for GO, then exec. Never returns. */
static void run_child(int go_read, int out, int err, const char *cwd, char **argv, char **envp,
                      const sigset_t *mask) {
    char byte;
    ssize_t got;
    sigprocmask(SIG_SETMASK, mask, NULL);
    signal(SIGCHLD, SIG_DFL);
    if (dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(127);
    do {
        got = read(go_read, &byte, 1);
    } while (got < 0 && errno == EINTR);
    if (got != 1)
        _exit(127);
    if (chdir(cwd) != 0) {
        static const char text[] = "fuzz-tasks: cannot enter the task's working directory\n";
        (void)!write(2, text, sizeof text - 1);
        _exit(127);
    }
    execvpe(argv[0], argv, envp);
    static const char text[] = "fuzz-tasks: cannot run the task's command\n";
    (void)!write(2, text, sizeof text - 1);
    _exit(errno == ENOENT ? 127 : 126);
}

/* Split a START's strings; 0 on success. */
static int parse_start(size_t length, uint32_t argc, uint32_t envc, char **strings) {
    size_t count = 1 + (size_t)argc + envc, at = 16;
    if (argc == 0 || count > MAX_STRINGS - 2)
        return -1;
    for (size_t i = 0; i < count; i++) {
        char *end;
        if (at >= length)
            return -1;
        end = memchr(message + at, '\0', length - at);
        if (end == NULL)
            return -1;
        strings[i] = message + at;
        at = (size_t)(end - message) + 1;
    }
    return at == length ? 0 : -1;
}

static void start(int sock, size_t length, int out, int err, const sigset_t *mask) {
    static char *strings[MAX_STRINGS];
    uint32_t header[4];
    struct task *slot = NULL;
    int go[2];
    memcpy(header, message, sizeof header);
    for (int i = 0; i < MAX_TASKS && slot == NULL; i++)
        if (tasks[i].pid == 0)
            slot = &tasks[i];
    if (slot == NULL || find(header[1]) != NULL ||
        parse_start(length, header[2], header[3], strings) != 0) {
        report(sock, FAILED, header[1], EINVAL);
        return;
    }
    char **argv = strings + 1, **envp = strings + 1 + header[2] + 1;
    /* argv and envp each end with a NULL: the slot after argv holds env[0], so move env up */
    memmove(envp, envp - 1, header[3] * sizeof *envp);
    argv[header[2]] = NULL;
    envp[header[3]] = NULL;
    if (pipe2(go, O_CLOEXEC) != 0) {
        report(sock, FAILED, header[1], errno);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(go[1]);
        close(sock);
        run_child(go[0], out, err, strings[0], argv, envp, mask);
    }
    close(go[0]);
    if (pid < 0) {
        close(go[1]);
        report(sock, FAILED, header[1], errno);
        return;
    }
    slot->pid = pid;
    slot->seq = header[1];
    slot->go_fd = go[1];
    report(sock, FORKED, header[1], pid);
}

static void receive(int sock, const sigset_t *mask) {
    char control[CMSG_SPACE(4 * sizeof(int))];
    struct iovec vector = {message, MAX_MESSAGE + 1};
    struct msghdr header = {0};
    int fds[4], nfds = 0;
    header.msg_iov = &vector;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    ssize_t got = recvmsg(sock, &header, MSG_CMSG_CLOEXEC);
    if (got < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        _exit(1);
    }
    if (got == 0)
        _exit(0); /* the monitor is gone, or ends the sandbox */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&header); c != NULL; c = CMSG_NXTHDR(&header, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < n && nfds < 4; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    uint32_t words[4] = {0, 0, 0, 0};
    if ((size_t)got >= sizeof words && (size_t)got <= MAX_MESSAGE && !(header.msg_flags & MSG_TRUNC))
        memcpy(words, message, sizeof words);
    if (words[0] == START && nfds == 2) {
        start(sock, (size_t)got, fds[0], fds[1], mask);
    } else if (words[0] == GO) {
        struct task *task = find(words[1]);
        if (task != NULL && task->go_fd >= 0) {
            (void)!write(task->go_fd, "g", 1);
            close(task->go_fd);
            task->go_fd = -1;
        }
    } else if (words[0] == START) {
        report(sock, FAILED, words[1], EINVAL);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static void reap(int sock) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_TASKS; i++) {
            if (tasks[i].pid == pid) {
                report(sock, EXITED, tasks[i].seq, status);
                if (tasks[i].go_fd >= 0)
                    close(tasks[i].go_fd);
                tasks[i].pid = 0;
                tasks[i].go_fd = -1;
                break;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    int sock = atoi(argv[1]);
    sigset_t blocked, empty;
    struct sigaction action = {0};
    action.sa_handler = on_child;
    action.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, NULL);
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGCHLD);
    sigprocmask(SIG_BLOCK, &blocked, &empty);
    for (;;) {
        struct pollfd poll_fd = {sock, POLLIN, 0};
        int ready = ppoll(&poll_fd, 1, NULL, &empty);
        if (child_exited) {
            child_exited = 0;
            reap(sock);
        }
        if (ready > 0 && (poll_fd.revents & (POLLIN | POLLHUP | POLLERR)))
            receive(sock, &empty);
    }
}
