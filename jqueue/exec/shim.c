/*
 * jq-shim: the supervisor of one command attempt of jqueue (jqueue/exec/).
 *
 * The executor starts one shim per attempt and the shim outlives the daemon that started
 * it: it runs the command, contains it, enforces its timeout, signals it on request and
 * records its true outcome in the attempt directory, whether or not anybody is watching.
 *
 *   jq-shim --attempt-dir A --dir D --timeout T --grace G --rt-base R
 *           [--output O] [--cgroup C] [--user NAME UID GID --groups G,...] [--nofile N]
 *           [--oom-score-adj N] [--memory-max BYTES]
 *           [--prolog SCRIPT] [--epilog SCRIPT] [--hook-timeout T] -- ARGV...
 *
 * Start. The shim's environment is empty (a job's LD_PRELOAD must not run as the
 * daemon's user): it reads the command's environment from stdin, NUL-terminated
 * "KEY=VALUE" entries and one empty entry as the end mark, until end of file. The executor
 * sends it only after recording the shim in spec.json; a stdin that ends without the mark
 * means the daemon died while starting the attempt: the command is never started.
 *
 * The shim is its own session (setsid), the subreaper of everything the command starts
 * (orphans, even ones that call setsid and double-fork, become its children), ignores
 * SIGHUP, SIGINT and SIGPIPE and takes every other event through sigtimedwait: one loop,
 * no handlers, no busy waiting.
 *
 * The command child is born in the attempt's cgroup (clone3 with CLONE_INTO_CGROUP, Linux
 * 5.7; else fork and write its pid to cgroup.procs, which costs an RCU grace period), then:
 * setsid (its own group, pgid = pid), /proc/self/oom_score_adj set to N if given (a daemon
 * the OOM killer spares must not pass that on to its commands), stdout and stderr to O (default A/output; O_APPEND,
 * created if needed), stdin from /dev/null, user switch (setgroups to the --groups the
 * daemon looked up, setgid, setuid), chdir, default signal dispositions and an empty mask,
 * the soft RLIMIT_NOFILE the daemon had, execvp.
 * A failure before execvp is reported on a close-on-exec pipe: the command never ran and
 * the result says why ("error"). A failed execvp itself is the command's failure, as in
 * sh: a message in the output, exit status 127 (not found) or 126. Prepared, the child
 * says so (a NUL byte on that pipe) and waits for the shim's go on a second pipe, which
 * the shim gives only once A/pid holds "PID STARTTIME": whoever finds the shim dead
 * (kill -9) finds the command's group in A/pid, or a child that never execs (the go pipe
 * ends without the go: it exits).
 *
 * Control: SIGTERM = terminate (SIGTERM and SIGCONT to every process of the job, SIGKILL
 * after the grace); SIGUSR1 = SIGKILL now; signal R+k-1 = send signal k (1..31) to every
 * process of the job. The timeout (seconds from the exec, 0 = none) terminates the same
 * way and sets timed_out. "Every process of the job" is the command's process group (until
 * it is empty: a group id is never reused while in use, an empty one may be), every
 * process of the cgroup (cgroup.kill for SIGKILL where the kernel has it) and every
 * descendant of the shim with its process group.
 *
 * Memory: with --memory-max, every MEMORY_POLL seconds (MEMORY_POLL_NEAR once the job holds
 * half its limit) the shim adds up the resident sets (/proc/PID/statm) of every process of
 * the job (the cgroup's members, else its own descendants) and, over the limit, kills the
 * job at once (SIGKILL, as the kernel's OOM killer would) and sets memory_exceeded. A peak
 * between two samples goes unseen.
 *
 * Hooks: the node's --prolog runs (/bin/sh -c SCRIPT) before the command and its --epilog
 * after it, each as the command does (same user, directory, environment, cgroup and output,
 * its own session) and each bounded by --hook-timeout (seconds; 0 = none; TERM, the grace,
 * KILL). A hook ends when none of its processes remains; while one runs its group is in
 * A/hook-pid ("PID STARTTIME"), and A/pid is the command's only. A prolog that fails
 * (status not 0, a signal, its timeout) or that a stop request (SIGTERM, SIGUSR1) ends
 * means the command never runs: the result's error says why and prolog_failed is true
 * (a prolog that cannot be started at all, e.g. for a missing directory, fails the
 * attempt as the command would have: error only). Forwarded signals are the command's:
 * not sent to a prolog. The epilog runs after every attempt in which the prolog or the
 * command ran (after a timeout or a kill too), with JQ_EXIT_STATUS and JQ_SIGNAL (the
 * command's, empty if none) added to the environment; control signals do not reach it,
 * and its failure is only reported (epilog_error) and changes nothing of the outcome.
 * The memory limit and the command's timeout are the command's only; cpu_time counts
 * the command's processes only, max_rss the largest of any process so far (a prolog's
 * too).
 *
 * The shim's own stdout and stderr are /dev/null; it notes its problems in A/shim.log.
 *
 * End. When the command's main process has exited, anything of the job still alive is
 * terminated the same way (TERM, grace, KILL). The attempt ends when the shim has no child
 * left (waitpid: ECHILD) and the cgroup says "populated 0"; the shim removes the cgroup,
 * writes A/result (JSON; temp file and rename) and exits 0. The result carries the job's
 * use of the machine, from the kernel's accounts of the processes the shim and theirs
 * waited for (getrusage RUSAGE_CHILDREN): cpu_time (user and system seconds) and max_rss
 * (bytes: the largest peak of any one process, or of the sampled sums if larger). Output goes only to the file:
 * nothing ever blocks on a reader.
 *
 * Any C library builds it. jqueue.exec.shims links it statically with musl where musl-gcc
 * is installed: glibc's start-up probes the processor's caches with dozens of cpuid
 * instructions, each a trap to the hypervisor in a virtual machine (790 us a start against
 * 85 us on the machines jqueue is measured on). Hence no libc lookup here (the daemon
 * resolves the user's groups through NSS, which musl lacks) and real-time signals set in
 * the mask directly (musl's sigaddset refuses 32-34, which it reserves; the daemon's
 * RT_BASE is glibc's SIGRTMIN, 34).
 */

#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_CHILD_SUBREAPER
#define PR_SET_CHILD_SUBREAPER 36
#endif
#ifndef SYS_clone3
#define SYS_clone3 435  /* the same number on every architecture */
#endif
#define JQ_CLONE_INTO_CGROUP 0x200000000ULL  /* Linux 5.7 */

/* The kernel's struct clone_args (linux/sched.h may be older than the kernel). */
struct jq_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};

#define EXIT_NOT_STARTED 3  /* the daemon died before sending the environment */
#define FORWARDABLE 31      /* signals 1..31 can be forwarded */
#define POLL_MIN 0.01       /* seconds between checks while waiting for the job to end */
#define POLL_MAX 0.5
#define MAX_WAIT 1e6        /* longest single wait (s); longer timeouts take several */
#define KERNEL_SIGRTMIN 32  /* the kernel's first real-time signal (C libraries reserve some) */
#define MEMORY_POLL 0.25    /* seconds between samples of the job's memory (--memory-max) */
#define MEMORY_POLL_NEAR 0.05  /* the same once it holds half its limit or more */

enum phase { COMMAND, PROLOG, EPILOG };

extern char **environ;

struct options {
    const char *attempt_dir, *dir, *cgroup, *user, *output;
    const char *prolog, *epilog;  /* the node's hooks (shell scripts), NULL for none */
    double hook_timeout;
    uid_t uid;
    gid_t gid;
    gid_t *groups;  /* the user's supplementary groups (--groups) */
    size_t ngroups;
    double timeout, grace;
    long nofile;  /* -1: leave the limit as it is */
    long oom_score_adj;  /* -1001: leave it as it is */
    unsigned long long memory_max;  /* bytes; 0: no limit */
    int rt_base;
    char **argv;
};

/* What the shim knows of the process it runs now (the command, or a hook). */
struct state {
    enum phase phase;
    pid_t self, main_pid;
    int main_done, status, pgid_alive, timed_out, memory_exceeded;
    unsigned long long max_rss;  /* the largest sum of resident sets sampled (bytes) */
    double next_sample;          /* monotonic seconds; 0 = no sampling */
    int terminating, killing;
    double deadline, grace_end, poll;  /* monotonic seconds; 0 = none */
    char error[1024];
    char exec_error[512];  /* why the exec failed, as the child reported it */
};

static struct options opt;
static struct state st;
static int stop_requested;  /* a stop request came during the prolog */
/* cgroup.kill was written: Linux (6.18 at least) then SIGKILLs any child cloned into the
 * cgroup from outside it (CLONE_INTO_CGROUP), so an epilog after a kill joins it instead. */
static int cgroup_killed;
static sigset_t events;

/* ---- small helpers ---- */

/* Add sig to set, whichever signal it is (musl's sigaddset refuses 32-34: see above). */
static void add_signal(sigset_t *set, int sig) {
    unsigned long *bits = (unsigned long *)set;
    unsigned long width = 8 * sizeof *bits;
    bits[(sig - 1) / width] |= 1UL << ((sig - 1) % width);
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double real_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Note a problem in A/shim.log (created only then; the shim's stderr is /dev/null). */
static void complain(const char *fmt, ...) {
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    strcat(msg, "\n");
    fprintf(stderr, "jq-shim: %s", msg);
    if (opt.attempt_dir) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/shim.log", opt.attempt_dir);
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd >= 0) {
            dprintf(fd, "jq-shim: %s", msg);
            close(fd);
        }
    }
}

static void usage(const char *why) {
    complain("%s", why);
    exit(2);
}

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Replace A/name by data: a temp file in the same directory, then rename. */
static int write_atomic(const char *name, const char *data, size_t len) {
    char path[PATH_MAX], tmp[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", opt.attempt_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", opt.attempt_dir, name);
    /* written over, not emptied first: the executor keeps room for the result there */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    int failed = write_all(fd, data, len) || ftruncate(fd, (off_t)len) < 0;
    if (close(fd) < 0 || failed) {
        unlink(tmp);
        return -1;
    }
    return rename(tmp, path);
}

/* Read a small file whole into buf (NUL-terminated); -1 if it cannot be read. */
static ssize_t read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot. */
static unsigned long long start_time(pid_t pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof buf) <= 0)
        return 0;
    char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* ---- arguments and environment ---- */

static double parse_seconds(const char *text, const char *what) {
    char *end;
    double value = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !(value >= 0))
        usage(what);
    return value;
}

static long parse_long(const char *text, const char *what) {
    char *end;
    long value = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 0)
        usage(what);
    return value;
}

/* "G,G,...": group ids, separated by commas; empty for none. */
static void parse_groups(const char *text) {
    size_t count = *text != '\0';
    for (const char *p = text; *p; p++)
        count += *p == ',';
    opt.groups = calloc(count ? count : 1, sizeof *opt.groups);
    if (!opt.groups)
        usage("out of memory");
    char *copy = strdup(text), *save = NULL;
    if (!copy)
        usage("out of memory");
    for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save))
        opt.groups[opt.ngroups++] = (gid_t)parse_long(g, "bad --groups");
    if (opt.ngroups != count)
        usage("bad --groups");
    free(copy);
}

static void parse_args(int argc, char **argv) {
    opt.nofile = -1;
    opt.oom_score_adj = -1001;
    opt.rt_base = -1;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *name = argv[i];
        if (i + 1 >= argc)
            usage("option without a value");
        if (!strcmp(name, "--attempt-dir"))
            opt.attempt_dir = argv[++i];
        else if (!strcmp(name, "--dir"))
            opt.dir = argv[++i];
        else if (!strcmp(name, "--output"))
            opt.output = argv[++i];
        else if (!strcmp(name, "--timeout"))
            opt.timeout = parse_seconds(argv[++i], "bad --timeout");
        else if (!strcmp(name, "--grace"))
            opt.grace = parse_seconds(argv[++i], "bad --grace");
        else if (!strcmp(name, "--rt-base"))
            opt.rt_base = (int)parse_long(argv[++i], "bad --rt-base");
        else if (!strcmp(name, "--cgroup"))
            opt.cgroup = argv[++i];
        else if (!strcmp(name, "--nofile"))
            opt.nofile = parse_long(argv[++i], "bad --nofile");
        else if (!strcmp(name, "--prolog"))
            opt.prolog = argv[++i];
        else if (!strcmp(name, "--epilog"))
            opt.epilog = argv[++i];
        else if (!strcmp(name, "--hook-timeout"))
            opt.hook_timeout = parse_seconds(argv[++i], "bad --hook-timeout");
        else if (!strcmp(name, "--memory-max"))
            opt.memory_max = (unsigned long long)parse_long(argv[++i], "bad --memory-max");
        else if (!strcmp(name, "--oom-score-adj")) {
            opt.oom_score_adj = parse_long(argv[++i], "bad --oom-score-adj");
            if (opt.oom_score_adj < -1000 || opt.oom_score_adj > 1000)
                usage("bad --oom-score-adj");
        }
        else if (!strcmp(name, "--user") && i + 3 < argc) {
            opt.user = argv[++i];
            opt.uid = (uid_t)parse_long(argv[++i], "bad uid");
            opt.gid = (gid_t)parse_long(argv[++i], "bad gid");
        } else if (!strcmp(name, "--groups"))
            parse_groups(argv[++i]);
        else
            usage("unknown option");
    }
    if (!opt.user != !opt.groups)
        usage("--user and --groups go together");
    if (i + 1 >= argc)
        usage("no command after --");
    if (!opt.attempt_dir || !opt.dir)
        usage("--attempt-dir and --dir are required");
    if (opt.rt_base < KERNEL_SIGRTMIN || opt.rt_base + FORWARDABLE - 1 > SIGRTMAX)
        usage("--rt-base out of the real-time signal range");
    opt.argv = argv + i + 1;
}

/* Read the environment from stdin; NULL if it did not end with the end mark. */
static char **read_env(void) {
    size_t size = 0, cap = 4096;
    char *data = malloc(cap);
    for (;;) {
        if (!data)
            return NULL;
        if (size == cap)
            data = realloc(data, cap *= 2);
        if (!data)
            return NULL;
        ssize_t n = read(0, data + size, cap - size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size += (size_t)n;
    }
    if (size == 0 || data[size - 1] != '\0' || (size > 1 && data[size - 2] != '\0'))
        return NULL;
    size_t count = 0;
    for (size_t k = 0; k + 1 < size; k++)
        count += data[k] == '\0';
    char **env = calloc(count + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t at = 0;
    for (size_t k = 0; k < count; k++) {
        env[k] = data + at;
        at += strlen(data + at) + 1;
    }
    return env;
}

/* ---- the command child ---- */

static int report_fd = -1;
static int go_fd = -1;

/* Tell the shim why the command cannot run, and exit: the command never ran. */
static void child_fail(const char *fmt, ...) {
    char msg[1024];
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 200, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof msg - 200)
        n = (int)(sizeof msg - 200);
    snprintf(msg + n, sizeof msg - n, ": %s", strerror(saved));
    write_all(report_fd, msg, strlen(msg));
    _exit(125);
}

static void join_cgroup(void) {
    char path[PATH_MAX], pid[32];
    snprintf(path, sizeof path, "%s/cgroup.procs", opt.cgroup);
    snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write_all(fd, pid, strlen(pid)) < 0)
        child_fail("cannot join cgroup %s", opt.cgroup);
    close(fd);
}

static void redirect_io(void) {
    char path[PATH_MAX];
    if (opt.output)
        snprintf(path, sizeof path, "%s", opt.output);
    else
        snprintf(path, sizeof path, "%s/output", opt.attempt_dir);
    int out = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (out < 0)
        child_fail("cannot open the output file %s", path);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0)
        child_fail("cannot open /dev/null");
    if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        child_fail("cannot redirect the output to %s", path);
}

static void switch_user(void) {
    if (setgroups(opt.ngroups, opt.groups) < 0)
        child_fail("cannot switch to user %s: setgroups", opt.user);
    if (setgid(opt.gid) < 0)
        child_fail("cannot switch to user %s: setgid %d", opt.user, (int)opt.gid);
    if (setuid(opt.uid) < 0)
        child_fail("cannot switch to user %s: setuid %d", opt.user, (int)opt.uid);
}

static void reset_signals(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);  /* fails harmlessly for KILL, STOP and glibc's own */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void set_oom_score_adj(void) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dprintf(fd, "%ld\n", opt.oom_score_adj) < 0)
        child_fail("cannot set the oom_score_adj to %ld", opt.oom_score_adj);
    close(fd);
}

static void run_command(char **argv, char **env, int in_cgroup) {
    setsid();
    if (opt.cgroup && !in_cgroup)
        join_cgroup();
    if (opt.oom_score_adj >= -1000)
        set_oom_score_adj();
    redirect_io();
    if (opt.user)
        switch_user();
    if (chdir(opt.dir) < 0)
        child_fail("cannot change to directory %s", opt.dir);
    if (opt.nofile >= 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)opt.nofile <= rl.rlim_max) {
            rl.rlim_cur = (rlim_t)opt.nofile;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    reset_signals();
    char go = '\0';
    ssize_t n;
    write_all(report_fd, &go, 1);
    while ((n = read(go_fd, &go, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1)
        _exit(125);  /* the shim died before recording this process: never run */
    environ = env;
    execvp(argv[0], argv);
    int saved = errno;
    char msg[400];
    int len = snprintf(msg, sizeof msg, "cannot execute %.300s: %s", argv[0],
                       strerror(saved));
    dprintf(2, "jq-shim: %s\n", msg);
    write_all(report_fd, msg, len < (int)sizeof msg ? (size_t)len : sizeof msg - 1);
    _exit(saved == ENOENT ? 127 : 126);
}

/* fork(), the child born in the cgroup where the kernel can (clone3 CLONE_INTO_CGROUP):
 * no migration, which costs an RCU grace period and blocks every fork meanwhile.
 * *in_cgroup says, in the child, whether it was. */
static pid_t fork_command(int *in_cgroup) {
    *in_cgroup = 0;
    if (opt.cgroup && !cgroup_killed) {
        int fd = open(opt.cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            struct jq_clone_args args;
            memset(&args, 0, sizeof args);
            args.flags = JQ_CLONE_INTO_CGROUP;
            args.exit_signal = SIGCHLD;
            args.cgroup = (uint64_t)fd;
            long pid = syscall(SYS_clone3, &args, sizeof args);
            if (pid == 0) {
                *in_cgroup = 1;
                return 0;
            }
            close(fd);
            if (pid > 0)
                return (pid_t)pid;
        }  /* no clone3 or no such cgroup: fork, and the child joins (or says why not) */
    }
    return fork();
}

/* A/pid for the command, A/hook-pid for a hook. */
static void write_pid_file(void) {
    char text[64];
    const char *name = st.phase == COMMAND ? "pid" : "hook-pid";
    int n = snprintf(text, sizeof text, "%d %llu\n", (int)st.main_pid,
                     start_time(st.main_pid));
    if (write_atomic(name, text, (size_t)n) < 0)
        complain("cannot write the %s file: %s", name, strerror(errno));
}

/* Fork argv (the command, or a hook); 0 once it exec'd (or failed to exec), -1 if it
 * never ran. */
static int start_process(char **argv, char **env) {
    int pipefd[2], gofd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0 || pipe2(gofd, O_CLOEXEC) < 0) {
        snprintf(st.error, sizeof st.error, "cannot start the command: pipe: %s",
                 strerror(errno));
        return -1;
    }
    int in_cgroup;
    pid_t pid = fork_command(&in_cgroup);
    if (pid < 0) {
        snprintf(st.error, sizeof st.error, "cannot start the command: fork: %s",
                 strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(pipefd[0]);
        close(gofd[1]);
        report_fd = pipefd[1];
        go_fd = gofd[0];
        run_command(argv, env, in_cgroup);
    }
    close(pipefd[1]);
    close(gofd[0]);
    st.main_pid = pid;
    /* The child sends one NUL byte once prepared (its own group, in its cgroup), or why
     * it cannot run; the go follows only the first. After the go, the pipe ends at the
     * exec (close-on-exec), or says why the exec failed: the command's failure (127 or
     * 126, as in sh), which the result names. */
    size_t got = 0, failed = 0;
    int went = 0;
    for (;;) {
        char chunk[512];
        ssize_t n = read(pipefd[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        char *from = chunk;
        if (!went && got == 0 && chunk[0] == '\0') {
            write_pid_file();
            write_all(gofd[1], "g", 1);
            went = 1;
            from++;
            n--;
        }
        char *to = went ? st.exec_error : st.error;
        size_t *len = went ? &failed : &got;
        size_t room = (went ? sizeof st.exec_error : sizeof st.error) - 1 - *len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(to + *len, from, take);
        *len += take;
    }
    close(pipefd[0]);
    close(gofd[1]);
    st.error[got] = '\0';
    st.exec_error[failed] = '\0';
    return got ? -1 : 0;
}


/* ---- every process of the job ---- */

static void cgroup_file(char *path, size_t size, const char *name) {
    snprintf(path, size, "%s/%s", opt.cgroup, name);
}

static int cgroup_populated(void) {
    char path[PATH_MAX], buf[512];
    if (!opt.cgroup)
        return 0;
    cgroup_file(path, sizeof path, "cgroup.events");
    if (read_small(path, buf, sizeof buf) < 0)
        return 0;
    return strstr(buf, "populated 1") != NULL;
}

/*
 * A signal reaches every process of the job once. With a cgroup its member list is the
 * whole job (KILL: cgroup.kill, then the groups and children again, whatever escaped).
 * Without one: the command's process group, then each descendant of ours (re-parented
 * orphans, and processes that left the group while their parent lives) through its own
 * process group unless that group was signalled already.
 */
#define MAX_GROUPS 256
static pid_t signalled[MAX_GROUPS];
static int n_signalled;

/* Whether group was signalled already in this round (and note it if not). */
static int group_done(pid_t group) {
    for (int i = 0; i < n_signalled; i++)
        if (signalled[i] == group)
            return 1;
    if (n_signalled < MAX_GROUPS)
        signalled[n_signalled++] = group;
    return 0;
}

static void signal_one(pid_t pid, int sig, int with_group) {
    pid_t group = with_group ? getpgid(pid) : -1;
    if (group > 0 && group != getpgrp()) {
        if (!group_done(group))
            killpg(group, sig);   /* pid is a member: this reaches it */
        return;
    }
    kill(pid, sig);
}

/* What to do with each process of a walk: visit(pid, ctx). */
typedef void (*visit_fn)(pid_t pid, void *ctx);

struct signal_ctx {
    int sig, with_group;
};

static void signal_visit(pid_t pid, void *ctx) {
    struct signal_ctx *how = ctx;
    signal_one(pid, how->sig, how->with_group);
}

/*
 * Visit each pid listed in a file (cgroup.procs, or a /proc children list); with a
 * stack, push each of them too (while there is room: stack[*top], at most max).
 */
static void visit_listed(const char *path, visit_fn visit, void *ctx, pid_t *stack, int *top,
                         int max) {
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    int pid;
    while (fscanf(f, "%d", &pid) == 1) {
        if (pid <= 0 || pid == st.self)
            continue;
        visit((pid_t)pid, ctx);
        if (stack && *top < max)
            stack[(*top)++] = (pid_t)pid;
    }
    fclose(f);
}

/* 1 if the cgroup took care of every process (its member list was read). */
static int signal_cgroup(int sig) {
    char path[PATH_MAX];
    if (!opt.cgroup)
        return 0;
    if (sig == SIGKILL) {
        cgroup_file(path, sizeof path, "cgroup.kill");
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            int ok = write_all(fd, "1", 1) == 0;
            close(fd);
            cgroup_killed |= ok;
            if (ok)
                return 0;  /* KILL again through groups and children: harmless */
        }
    }
    cgroup_file(path, sizeof path, "cgroup.procs");
    if (access(path, R_OK) != 0)
        return 0;
    struct signal_ctx how = {sig, 0};
    visit_listed(path, signal_visit, &how, NULL, NULL, 0);
    return sig != SIGKILL;
}

/* Without /proc/PID/task/PID/children: scan /proc for processes whose parent is us. */
static void signal_children_by_scan(int sig) {
    DIR *proc = opendir("/proc");
    struct dirent *entry;
    if (!proc)
        return;
    while ((entry = readdir(proc)) != NULL) {
        if (!isdigit((unsigned char)entry->d_name[0]))
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", entry->d_name);
        if (read_small(path, buf, sizeof buf) <= 0)
            continue;
        char *p = strrchr(buf, ')');
        int ppid = 0;
        if (p && sscanf(p + 1, " %*c %d", &ppid) == 1 && ppid == st.self)
            signal_one((pid_t)atoi(entry->d_name), sig, 1);
    }
    closedir(proc);
}

/*
 * Every descendant of ours, through the children lists of each process's threads: one
 * that left the command's group (setsid) while its parent lives is found below that
 * parent. At most MAX_WALK processes.
 */
#define MAX_WALK 4096
static pid_t walk[MAX_WALK];

static void visit_descendants(visit_fn visit, void *ctx) {
    int top = 0, visited = 0;
    walk[top++] = st.self;
    while (top > 0 && visited++ < MAX_WALK) {
        pid_t pid = walk[--top];
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
        DIR *tasks = opendir(dir);
        if (!tasks)
            continue;
        struct dirent *task;
        while ((task = readdir(tasks)) != NULL) {
            if (!isdigit((unsigned char)task->d_name[0]))
                continue;
            char path[352];
            snprintf(path, sizeof path, "%s/%s/children", dir, task->d_name);
            visit_listed(path, visit, ctx, walk, &top, MAX_WALK);
        }
        closedir(tasks);
    }
}

/* Each descendant is signalled through its own group (a group made by a descendant is
 * the job's: a process joins groups of its own session only). */
static void signal_descendants(int sig) {
    struct signal_ctx how = {sig, 1};
    visit_descendants(signal_visit, &how);
}

static void signal_children(int sig) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)st.self, (int)st.self);
    if (access(path, R_OK) == 0)
        signal_descendants(sig);
    else
        signal_children_by_scan(sig);
}

static void signal_job(int sig) {
    n_signalled = 0;
    if (signal_cgroup(sig))
        return;
    if (st.pgid_alive) {
        if (killpg(st.main_pid, sig) < 0 && errno == ESRCH)
            st.pgid_alive = 0;  /* empty now: the id may be reused by a stranger */
        else
            group_done(st.main_pid);
    }
    signal_children(sig);
}

/* ---- the job's memory ---- */

static void add_rss(pid_t pid, void *ctx) {
    char path[64], buf[256];
    unsigned long long size, resident;
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    if (read_small(path, buf, sizeof buf) > 0 && sscanf(buf, "%llu %llu", &size, &resident) == 2)
        *(unsigned long long *)ctx += resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* The sum of the resident sets of every process of the job (shared pages counted in
 * each process that maps them, as ps and top count them). */
static unsigned long long job_rss(void) {
    unsigned long long total = 0;
    char path[PATH_MAX];
    if (opt.cgroup) {
        cgroup_file(path, sizeof path, "cgroup.procs");
        if (access(path, R_OK) == 0) {
            visit_listed(path, add_rss, &total, NULL, NULL, 0);
            return total;
        }
    }
    visit_descendants(add_rss, &total);
    return total;
}

static void begin_kill(void);

static void sample_memory(double now) {
    unsigned long long rss = job_rss();
    if (rss > st.max_rss)
        st.max_rss = rss;
    st.next_sample = now + (rss >= opt.memory_max / 2 ? MEMORY_POLL_NEAR : MEMORY_POLL);
    if (rss > opt.memory_max) {
        st.memory_exceeded = 1;
        st.next_sample = 0;
        begin_kill();
    }
}

/* ---- the life of the attempt ---- */

static void begin_terminate(void) {
    if (st.terminating || st.killing)
        return;
    st.terminating = 1;
    st.grace_end = mono_now() + opt.grace;
    signal_job(SIGTERM);
    signal_job(SIGCONT);  /* a stopped process must see its SIGTERM */
    st.poll = POLL_MIN;
}

static void begin_kill(void) {
    st.terminating = 0;
    st.killing = 1;
    signal_job(SIGKILL);
    st.poll = POLL_MIN;
}

/* Reap every child that ended; 1 if no child is left (ECHILD). */
static int reap(void) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            if (pid == st.main_pid) {
                st.main_done = 1;
                st.status = status;
            }
            continue;
        }
        if (pid < 0 && errno == EINTR)
            continue;
        return pid < 0 && errno == ECHILD;
    }
}

static void on_signal(int sig) {
    if (st.phase == EPILOG)
        return;  /* the command is over: nothing of it is left to stop or signal */
    if (st.phase == PROLOG && (sig == SIGTERM || sig == SIGUSR1))
        stop_requested = 1;
    else if (st.phase == PROLOG)
        return;  /* a forwarded signal is the command's */
    if (sig == SIGTERM)
        begin_terminate();
    else if (sig == SIGUSR1)
        begin_kill();
    else if (sig >= opt.rt_base && sig < opt.rt_base + FORWARDABLE)
        signal_job(sig - opt.rt_base + 1);
}

/* The seconds until the next thing to do; -1: nothing but signals. */
static double next_wait(double now) {
    double wait = -1;
    if (!st.main_done && st.deadline > 0 && !st.timed_out)
        wait = st.deadline - now;
    if (st.terminating && (wait < 0 || st.grace_end - now < wait))
        wait = st.grace_end - now;
    if ((st.terminating || st.killing) && (wait < 0 || st.poll < wait))
        wait = st.poll;
    if (st.next_sample > 0 && !st.killing) {  /* (a sample overdue: at once, not "none") */
        double until = st.next_sample > now ? st.next_sample - now : 0;
        if (wait < 0 || until < wait)
            wait = until;
    }
    if (wait < 0)
        return -1;
    return wait < 0.001 ? 0.001 : (wait > MAX_WAIT ? MAX_WAIT : wait);
}

static void wait_event(double now) {
    double wait = next_wait(now);
    siginfo_t info;
    int sig;
    if (wait < 0) {
        sig = sigwaitinfo(&events, &info);
    } else {
        struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
        sig = sigtimedwait(&events, &info, &ts);
        if (st.terminating || st.killing)
            st.poll = st.poll * 2 > POLL_MAX ? POLL_MAX : st.poll * 2;
    }
    if (sig > 0)
        on_signal(sig);
}

static void supervise(void) {
    for (;;) {
        int no_child = reap();
        double now = mono_now();
        if (!st.main_done && st.deadline > 0 && now >= st.deadline && !st.timed_out) {
            st.timed_out = 1;
            begin_terminate();
        }
        if (st.next_sample > 0 && now >= st.next_sample && !st.killing)
            sample_memory(now);
        if (st.terminating && now >= st.grace_end)
            begin_kill();
        else if (st.killing)
            signal_job(SIGKILL);  /* again: new orphans, processes forked meanwhile */
        int populated = cgroup_populated();
        if (st.main_done) {
            if (no_child && !populated)
                return;
            begin_terminate();  /* the main process is gone: the rest of the job follows */
        }
        wait_event(now);
    }
}

/* ---- the result ---- */

static size_t json_string(char *out, size_t size, const char *text) {
    size_t n = 0;
    if (size < 8)
        return 0;
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)text; *p && n + 8 < size; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, size - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

/* The command's use of the machine, noted once its processes are gone (before an
 * epilog): the kernel's accounts of what the shim waited for, less the prolog's CPU. */
static char usage_text[128] = "\"max_rss\":null,\"cpu_time\":null";
static double cpu_before;

static double children_cpu(struct rusage *ru) {
    return ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 + ru->ru_stime.tv_sec +
           ru->ru_stime.tv_usec / 1e6;
}

static void note_usage(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) < 0)
        return;
    unsigned long long peak = (unsigned long long)ru.ru_maxrss * 1024;  /* KiB */
    double cpu = children_cpu(&ru) - cpu_before;
    snprintf(usage_text, sizeof usage_text, "\"max_rss\":%llu,\"cpu_time\":%.3f",
             peak > st.max_rss ? peak : st.max_rss, cpu > 0 ? cpu : 0.0);
}

static void write_result(const char *error, int prolog_failed, const char *epilog_error) {
    char text[8000], status[64] = "null", sig[64] = "null", err[2200] = "null",
         exec_err[1100] = "null", epilog_err[1500] = "null";
    if (!error && st.main_done && WIFEXITED(st.status))
        snprintf(status, sizeof status, "%d", WEXITSTATUS(st.status));
    if (!error && st.main_done && WIFSIGNALED(st.status))
        snprintf(sig, sizeof sig, "%d", WTERMSIG(st.status));
    if (error)
        json_string(err, sizeof err, error);
    if (!error && st.exec_error[0])
        json_string(exec_err, sizeof exec_err, st.exec_error);
    if (epilog_error)
        json_string(epilog_err, sizeof epilog_err, epilog_error);
    int n = snprintf(text, sizeof text,
                     "{\"exit_status\":%s,\"signal\":%s,\"timed_out\":%s,\"error\":%s,"
                     "\"ended\":%.6f,\"exec_error\":%s,%s,\"memory_exceeded\":%s,"
                     "\"prolog_failed\":%s,\"epilog_error\":%s}\n",
                     status, sig, st.timed_out ? "true" : "false", err, real_now(), exec_err,
                     error ? "\"max_rss\":null,\"cpu_time\":null" : usage_text,
                     st.memory_exceeded ? "true" : "false", prolog_failed ? "true" : "false",
                     epilog_err);
    if (write_atomic("result", text, (size_t)n) < 0) {
        complain("cannot write the result: %s", strerror(errno));
        exit(1);
    }
}

static void remove_cgroup(void) {
    if (opt.cgroup && rmdir(opt.cgroup) < 0 && errno != ENOENT)
        complain("cannot remove %s: %s", opt.cgroup, strerror(errno));
}

static void setup_self(void) {
    st.self = getpid();
    if (setsid() < 0 && getsid(0) != st.self)
        complain("setsid: %s", strerror(errno));
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        complain("cannot become a subreaper: %s", strerror(errno));
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&events);
    sigaddset(&events, SIGCHLD);
    sigaddset(&events, SIGTERM);
    sigaddset(&events, SIGUSR1);
    for (int k = 0; k < FORWARDABLE; k++)
        add_signal(&events, opt.rt_base + k);
    sigprocmask(SIG_BLOCK, &events, NULL);
}

/* ---- the phases: prolog, command, epilog ---- */

/* Forget the last process run: the next one starts from a clean state. */
static void begin_phase(enum phase phase) {
    pid_t self = st.self;
    memset(&st, 0, sizeof st);
    st.self = self;
    st.phase = phase;
    st.poll = POLL_MIN;
}

/* Start argv (the command, or a hook) and supervise it until none of its processes
 * remains, its end in st; whether it started (if not, st.error says why). timeout: seconds
 * from its exec (0: none); with sample, the memory limit is kept (the command's). */
static int run_process(char **argv, char **env, double timeout, int sample) {
    int started = start_process(argv, env) == 0;
    st.pgid_alive = started;
    if (started && timeout > 0)
        st.deadline = mono_now() + timeout;
    if (started && sample && opt.memory_max > 0)
        st.next_sample = mono_now() + MEMORY_POLL;
    if (st.main_pid > 0)
        supervise();
    return started;
}

/* Run a hook (/bin/sh -c script) until none of its processes remains: 0 if it succeeded,
 * 1 if not (why says how it ended), -1 if it could not be started (why says why). */
static int run_hook(enum phase phase, const char *script, char **env, char *why,
                    size_t size) {
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    begin_phase(phase);
    int started = run_process(argv, env, opt.hook_timeout, 0);
    if (!started)
        snprintf(why, size, "%s", st.error);
    else if (st.exec_error[0])
        snprintf(why, size, "%s", st.exec_error);
    else if (st.timed_out)
        snprintf(why, size, "timed out after %gs", opt.hook_timeout);
    else if (WIFSIGNALED(st.status))
        snprintf(why, size, "killed by signal %d", WTERMSIG(st.status));
    else if (WEXITSTATUS(st.status) != 0)
        snprintf(why, size, "exited with status %d", WEXITSTATUS(st.status));
    else
        return 0;
    return started ? 1 : -1;
}

/* The command's environment and how the command ended (st), for the epilog. */
static char **epilog_env(char **env) {
    static char status[40], sig[40];
    size_t n = 0, k = 0;
    while (env[n])
        n++;
    char **out = calloc(n + 3, sizeof *out);
    if (!out)
        return env;
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], "JQ_EXIT_STATUS=", 15) != 0 && strncmp(env[i], "JQ_SIGNAL=", 10) != 0)
            out[k++] = env[i];
    strcpy(status, "JQ_EXIT_STATUS=");
    strcpy(sig, "JQ_SIGNAL=");
    if (st.main_done && WIFEXITED(st.status))
        snprintf(status + 15, sizeof status - 15, "%d", WEXITSTATUS(st.status));
    if (st.main_done && WIFSIGNALED(st.status))
        snprintf(sig + 10, sizeof sig - 10, "%d", WTERMSIG(st.status));
    out[k++] = status;
    out[k++] = sig;
    return out;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    setup_self();
    char **env = read_env();
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0 && null != 0) {
        dup2(null, 0);
        close(null);
    }
    if (!env) {
        remove_cgroup();
        write_result("attempt lost: the daemon died while starting it", 0, NULL);
        return EXIT_NOT_STARTED;
    }
    static char error[1400], epilog_why[1200];
    int failed = 0, prolog_failed = 0, ran = 0;  /* ran: the prolog or the command did */
    if (opt.prolog) {
        char why[1200] = "";
        int hook = run_hook(PROLOG, opt.prolog, env, why, sizeof why);
        ran = hook >= 0;
        failed = hook != 0 || stop_requested;
        prolog_failed = ran && failed;
        if (hook < 0)
            snprintf(error, sizeof error, "%s", why);
        else if (stop_requested)
            snprintf(error, sizeof error, "stopped by request during the prolog: the "
                     "command never ran");
        else if (hook > 0)
            snprintf(error, sizeof error, "prolog %s: the command never ran", why);
    }
    begin_phase(COMMAND);
    if (!failed) {
        struct rusage ru;
        if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
            cpu_before = children_cpu(&ru);
        int started = run_process(opt.argv, env, opt.timeout, 1);
        ran |= started;
        failed = !started;
        if (started)
            note_usage();
        else
            snprintf(error, sizeof error, "%s", st.error);
    }
    if (opt.epilog && ran) {
        struct state command = st;
        if (run_hook(EPILOG, opt.epilog, epilog_env(env), epilog_why, sizeof epilog_why) == 0)
            epilog_why[0] = '\0';
        st = command;
    }
    remove_cgroup();
    write_result(failed ? error : NULL, prolog_failed, epilog_why[0] ? epilog_why : NULL);
    return 0;
}
