/* A test's clock step for one process: LD_PRELOAD this library and set
 * JQ_TEST_CLOCK_SHIFT to a file holding a number of seconds; the process's wall clock
 * (CLOCK_REALTIME, gettimeofday, time) reads that much ahead of the machine's (behind if
 * negative) from then on. The file is read again at most every 50 ms of the monotonic
 * clock, which is left alone: writing another number into it is an NTP step, as the
 * process sees it. (libfaketime does this, but its clock_nanosleep fails with EINVAL when
 * the monotonic clock is not faked.) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static long long shift_ns, checked_ns = -1;

static long long mono_ns(void)
{
    struct timespec ts;
    real_clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long shift(void)
{
    if (!real_clock_gettime)
        real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    long long now = mono_ns();
    if (checked_ns < 0 || now - checked_ns > 50000000LL) {
        const char *path = getenv("JQ_TEST_CLOCK_SHIFT");
        char buf[64];
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n > 0) {
                buf[n] = 0;
                shift_ns = (long long)(strtod(buf, NULL) * 1e9);
            }
        }
        checked_ns = now;
    }
    return shift_ns;
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    long long s = shift();
    int r = real_clock_gettime(clock, ts);
    if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        long long ns = ts->tv_sec * 1000000000LL + ts->tv_nsec + s;
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
    }
    return r;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
