/* What the access patterns cost when the kernel itself serves them (no FUSE, no Python):
 * the "in-kernel" column of docs/comparison.md. Syscall cost only; no TDCALL behind it.
 *
 *   ioctl-kept     KVM_GET_API_VERSION on a kept-open /dev/kvm (a misc char device, like
 *                  /dev/tdx_guest); where /dev/kvm is missing, TCGETS on /dev/null (ENOTTY)
 *   ioctl-open     open + that ioctl + close
 *   sysfs-pread    pread of a sysfs text attribute on a kept fd
 *   sysfs-orc      open + read + close of that attribute
 *   shell-tmpfs    open/write 64 B/close + open/read 1024 B/close on tmpfs (/dev/shm)
 *
 * Build and run: benchmarks/inkernel.sh (median of several runs of N iterations each).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define KVM_GET_API_VERSION 0xAE00

static const char *dev_path(void) { return access("/dev/kvm", R_OK | W_OK) == 0 ? "/dev/kvm" : "/dev/null"; }

static void dev_ioctl(int fd, int kvm, struct termios *t) {
    if (kvm)
        ioctl(fd, KVM_GET_API_VERSION, 0);
    else
        ioctl(fd, TCGETS, t);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "ioctl-kept";
    long n = argc > 2 ? atol(argv[2]) : 200000;
    const char *attr = "/sys/devices/system/cpu/online";
    char buf[4096];
    struct termios t;
    int fd = -1;
    double t0;
    const char *dev = dev_path();
    int kvm = !strcmp(dev, "/dev/kvm");

    if (!strcmp(which, "ioctl-kept")) {
        fd = open(dev, O_RDWR);
        t0 = now_us();
        for (long i = 0; i < n; i++) dev_ioctl(fd, kvm, &t);
    } else if (!strcmp(which, "ioctl-open")) {
        t0 = now_us();
        for (long i = 0; i < n; i++) {
            fd = open(dev, O_RDWR);
            dev_ioctl(fd, kvm, &t);
            close(fd);
        }
    } else if (!strcmp(which, "sysfs-pread")) {
        fd = open(attr, O_RDONLY);
        t0 = now_us();
        for (long i = 0; i < n; i++) pread(fd, buf, sizeof buf, 0);
    } else if (!strcmp(which, "sysfs-orc")) {
        t0 = now_us();
        for (long i = 0; i < n; i++) {
            fd = open(attr, O_RDONLY);
            read(fd, buf, sizeof buf);
            close(fd);
        }
    } else if (!strcmp(which, "shell-tmpfs")) {
        char a[64] = {0}, p1[64], p2[64];
        snprintf(p1, sizeof p1, "/dev/shm/tdxfs-bench-%d-a", getpid());
        snprintf(p2, sizeof p2, "/dev/shm/tdxfs-bench-%d-b", getpid());
        fd = open(p2, O_WRONLY | O_CREAT, 0600);
        write(fd, buf, 1024);
        close(fd);
        t0 = now_us();
        for (long i = 0; i < n; i++) {
            fd = open(p1, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            write(fd, a, sizeof a);
            close(fd);
            fd = open(p2, O_RDONLY);
            read(fd, buf, sizeof buf);
            close(fd);
        }
        unlink(p1);
        unlink(p2);
    } else {
        fprintf(stderr, "unknown pattern %s\n", which);
        return 2;
    }
    printf("%.3f %s\n", (now_us() - t0) / n, strncmp(which, "ioctl", 5) ? "" : dev);
    return 0;
}
