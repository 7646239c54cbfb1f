/* The C client of `tdxfs bench`: one access pattern in a timed loop, against any mount
 * that has the files of tdxfs (a tdxfs mount, or benchmarks/refserver.c's), so one client
 * times both servers. No Python, no allocation in the loop; each answer's REPORTDATA is
 * checked against the nonce sent (a wrong one is counted, not fatal).
 *
 *   floor        pread 1 byte of rtmr0 at 0, kept fd                  (1 READ)
 *   ioctl-floor  TCGETS on a kept tdx_guest fd, ENOTTY expected        (1 IOCTL)
 *   ioctl        GET_REPORT0 (1088 bytes in and out), kept fd          (1 IOCTL)
 *   ioctl-open   open tdx_guest, GET_REPORT0, close                    (OPEN, IOCTL, RELEASE)
 *   shell        open/write 64/close reportdata + open/read/close tdreport  (6 requests)
 *   kept-pair    pwrite reportdata + pread tdreport, kept fds          (WRITE, READ)
 *   transaction  pwrite 64 + pread 1024 on one O_RDWR tdreport fd      (WRITE, READ)
 *
 * latency MOUNT BATCH WARM METHOD[,METHOD...] [CPU]
 *     each method WARM times untimed, then BATCH times, each timed on its own
 *     (CLOCK_MONOTONIC); prints one line per method: "METHOD WRONG NS NS ..."
 * throughput MOUNT METHOD START_NS SECONDS [CPU]
 *     sets up, waits until CLOCK_MONOTONIC reaches START_NS, then runs the method for
 *     SECONDS; prints "OPS WRONG"
 * CPU (>= 0): run on that CPU only (sched_setaffinity). Exit status 1 and one line on
 * stderr when a method fails (an errno other than the one expected).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define REPORTDATA_LEN 64
#define REPORT_LEN 1024
#define REPORTDATA_AT 128
#define REQ_LEN (REPORTDATA_LEN + REPORT_LEN)
#define GET_REPORT0 _IOWR('T', 1, unsigned char[REQ_LEN]) /* 0xC4405401 */
#define SHELL_READ 131072                                 /* as tdxfs.client.files reads */

struct state {
    const char *mount;
    int method;
    int fd, fd2;
    uint64_t pid;
    char path_rd[4096], path_tr[4096], path_dev[4096];
    unsigned char nonce[REPORTDATA_LEN];
    unsigned char buf[SHELL_READ];
    struct termios tio;
};

static const char *names[] = {"floor", "ioctl-floor", "ioctl", "ioctl-open", "shell", "kept-pair", "transaction"};
enum { FLOOR, IOCTL_FLOOR, IOCTL, IOCTL_OPEN, SHELL, KEPT_PAIR, TRANSACTION, NMETHODS };

static void die(const char *what, const char *path) {
    fprintf(stderr, "client: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static int open_or_die(const char *path, int flags) {
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        die("open", path);
    return fd;
}

static int method_index(const char *name) {
    for (int i = 0; i < NMETHODS; i++)
        if (!strcmp(name, names[i]))
            return i;
    fprintf(stderr, "client: unknown method %s\n", name);
    exit(2);
}

static void setup(struct state *s, const char *mount, int method) {
    s->mount = mount;
    s->method = method;
    s->fd = s->fd2 = -1;
    s->pid = (uint64_t)getpid();
    snprintf(s->path_rd, sizeof(s->path_rd), "%s/reportdata", mount);
    snprintf(s->path_tr, sizeof(s->path_tr), "%s/tdreport", mount);
    snprintf(s->path_dev, sizeof(s->path_dev), "%s/tdx_guest", mount);
    switch (method) {
    case FLOOR: {
        char p[4096];
        snprintf(p, sizeof(p), "%s/rtmr0", mount);
        s->fd = open_or_die(p, O_RDONLY);
        break;
    }
    case IOCTL_FLOOR:
    case IOCTL:
        s->fd = open_or_die(s->path_dev, O_RDWR);
        break;
    case KEPT_PAIR:
        s->fd = open_or_die(s->path_rd, O_WRONLY);
        s->fd2 = open_or_die(s->path_tr, O_RDONLY);
        break;
    case TRANSACTION:
        s->fd = open_or_die(s->path_tr, O_RDWR);
        break;
    }
}

static void teardown(struct state *s) {
    if (s->fd >= 0)
        close(s->fd);
    if (s->fd2 >= 0)
        close(s->fd2);
}

/* A nonce unique to this process and operation, made without a syscall. */
static void next_nonce(struct state *s, uint64_t i) {
    memcpy(s->nonce, &s->pid, 8);
    memcpy(s->nonce + 8, &i, 8);
    for (int k = 16; k < REPORTDATA_LEN; k++)
        s->nonce[k] = (unsigned char)(i * 31 + k);
}

/* One operation; returns the report's REPORTDATA (or NULL where there is none). */
static const unsigned char *run(struct state *s) {
    ssize_t n;
    int fd;
    switch (s->method) {
    case FLOOR:
        if (pread(s->fd, s->buf, 1, 0) != 1)
            die("pread", "rtmr0");
        return NULL;
    case IOCTL_FLOOR:
        if (ioctl(s->fd, TCGETS, &s->tio) == 0 || errno != ENOTTY)
            die("ioctl TCGETS (ENOTTY expected)", s->path_dev);
        return NULL;
    case IOCTL:
        memcpy(s->buf, s->nonce, REPORTDATA_LEN);
        if (ioctl(s->fd, GET_REPORT0, s->buf) != 0)
            die("ioctl GET_REPORT0", s->path_dev);
        return s->buf + REPORTDATA_LEN + REPORTDATA_AT;
    case IOCTL_OPEN:
        fd = open_or_die(s->path_dev, O_RDWR);
        memcpy(s->buf, s->nonce, REPORTDATA_LEN);
        if (ioctl(fd, GET_REPORT0, s->buf) != 0)
            die("ioctl GET_REPORT0", s->path_dev);
        close(fd);
        return s->buf + REPORTDATA_LEN + REPORTDATA_AT;
    case SHELL:
        fd = open_or_die(s->path_rd, O_WRONLY);
        if (write(fd, s->nonce, REPORTDATA_LEN) != REPORTDATA_LEN)
            die("write", s->path_rd);
        close(fd);
        fd = open_or_die(s->path_tr, O_RDONLY);
        n = pread(fd, s->buf, SHELL_READ, 0);
        if (n != REPORT_LEN)
            die("pread", s->path_tr);
        close(fd);
        return s->buf + REPORTDATA_AT;
    case KEPT_PAIR:
        if (pwrite(s->fd, s->nonce, REPORTDATA_LEN, 0) != REPORTDATA_LEN)
            die("pwrite", s->path_rd);
        if (pread(s->fd2, s->buf, REPORT_LEN, 0) != REPORT_LEN)
            die("pread", s->path_tr);
        return s->buf + REPORTDATA_AT;
    case TRANSACTION:
        if (pwrite(s->fd, s->nonce, REPORTDATA_LEN, 0) != REPORTDATA_LEN)
            die("pwrite", s->path_tr);
        if (pread(s->fd, s->buf, REPORT_LEN, 0) != REPORT_LEN)
            die("pread", s->path_tr);
        return s->buf + REPORTDATA_AT;
    }
    return NULL;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pin(const char *arg) {
    int cpu = arg ? atoi(arg) : -1;
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        die("sched_setaffinity", arg);
}

static int latency(char **argv, int argc) {
    const char *mount = argv[2];
    long batch = atol(argv[3]), warm = atol(argv[4]);
    char *list = strdup(argv[5]);
    pin(argc > 6 ? argv[6] : NULL);
    int64_t *samples = calloc(batch > 0 ? batch : 1, sizeof(*samples));
    uint64_t op = 0;
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        struct state *s = calloc(1, sizeof(*s));
        long wrong = 0;
        setup(s, mount, method_index(name));
        for (long i = 0; i < warm; i++, op++) {
            next_nonce(s, op);
            run(s);
        }
        for (long i = 0; i < batch; i++, op++) {
            next_nonce(s, op);
            int64_t t0 = now_ns();
            const unsigned char *got = run(s);
            samples[i] = now_ns() - t0;
            if (got && memcmp(got, s->nonce, REPORTDATA_LEN))
                wrong++;
        }
        teardown(s);
        free(s);
        printf("%s %ld", name, wrong);
        for (long i = 0; i < batch; i++)
            printf(" %lld", (long long)samples[i]);
        printf("\n");
    }
    return 0;
}

static int throughput(char **argv, int argc) {
    struct state *s = calloc(1, sizeof(*s));
    int64_t start = atoll(argv[4]);
    int64_t end = start + (int64_t)(atof(argv[5]) * 1e9);
    long ops = 0, wrong = 0;
    pin(argc > 6 ? argv[6] : NULL);
    setup(s, argv[2], method_index(argv[3]));
    for (int i = 0; i < 8; i++) { /* warm: cold lookups, the first of each request */
        next_nonce(s, i);
        run(s);
    }
    struct timespec at = {start / 1000000000, start % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
        ;
    while (now_ns() < end) {
        next_nonce(s, (uint64_t)ops);
        const unsigned char *got = run(s);
        if (got && memcmp(got, s->nonce, REPORTDATA_LEN))
            wrong++;
        ops++;
    }
    teardown(s);
    printf("%ld %ld\n", ops, wrong);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[1], "latency"))
        return latency(argv, argc);
    if (argc >= 6 && !strcmp(argv[1], "throughput"))
        return throughput(argv, argc);
    fprintf(stderr, "usage: %s latency MOUNT BATCH WARM METHOD[,METHOD...] [CPU]\n"
                    "       %s throughput MOUNT METHOD START_NS SECONDS [CPU]\n", argv[0], argv[0]);
    return 2;
}
