/* The floor for a FUSE server: a minimal C server on libfuse3's low-level API, serving the
 * shapes of files `tdxfs bench` times, so that the same C client (benchmarks/client.c)
 * measures it and tdxfs side by side. No model behind it: a "report" is a fixed 1024-byte
 * block with the caller's 64 bytes copied in at offset 128, where a TDREPORT carries
 * REPORTDATA, so the client checks that each answer is its own.
 *
 *   rtmr0       0644  read: 96 hex zeros + newline (the READ floor reads 1 byte of it)
 *   tdx_guest   0600  restricted ioctl GET_REPORT0 (_IOWR('T', 1, 1088): REPORTDATA in,
 *                     REPORTDATA + report out); TCGETS and anything else: ENOTTY
 *   reportdata  0644  write: 64 bytes, the shared REPORTDATA
 *   tdreport    0644  read: the report for the shared REPORTDATA, or for the 64 bytes this
 *                     fd wrote (the one-fd transaction: pwrite 64, pread 1024)
 *
 * As tdxfs opens files: direct_io on (every read and write is a request), keep_cache off,
 * noflush on (close sends no FLUSH). FOPEN_PARALLEL_DIRECT_WRITES where the libfuse it is
 * built against has the bit in fuse_file_info (not 3.14); the ready line says which.
 * Attribute and entry timeouts 1 s, default_permissions, as tdxfs. Single-threaded:
 * fuse_session_loop.
 *
 * Usage: refserver MOUNTPOINT   (prints "ready parallel_direct_writes=0|1" once mounted;
 * SIGTERM/SIGINT/SIGHUP unmount and exit; so does the parent's death)
 * Build: gcc -O2 refserver.c $(pkg-config --cflags --libs fuse3)  (tdxfs bench does it)
 */
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPORTDATA_LEN 64
#define REPORT_LEN 1024
#define REPORTDATA_AT 128 /* in a TDREPORT */
#define REQ_LEN (REPORTDATA_LEN + REPORT_LEN)
#define GET_REPORT0 _IOWR('T', 1, unsigned char[REQ_LEN]) /* 0xC4405401 */

#if FUSE_MAJOR_VERSION > 3 || (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION >= 15)
#define HAVE_PARALLEL_DIRECT_WRITES 1
#else
#define HAVE_PARALLEL_DIRECT_WRITES 0
#endif

enum { ROOT = FUSE_ROOT_ID, RTMR0, TDX_GUEST, REPORTDATA, TDREPORT, NFILES };

static const struct {
    const char *name;
    mode_t mode;
    off_t size;
} files[NFILES] = {
    [ROOT] = {"", S_IFDIR | 0755, 0},
    [RTMR0] = {"rtmr0", S_IFREG | 0644, 97},
    [TDX_GUEST] = {"tdx_guest", S_IFREG | 0600, 0},
    [REPORTDATA] = {"reportdata", S_IFREG | 0644, 129},
    [TDREPORT] = {"tdreport", S_IFREG | 0644, REPORT_LEN},
};

struct handle {
    int own; /* this fd wrote its own REPORTDATA */
    unsigned char reportdata[REPORTDATA_LEN];
};

static unsigned char shared_reportdata[REPORTDATA_LEN];
static unsigned char report[REPORT_LEN]; /* the fixed block; REPORTDATA goes in per answer */
static char rtmr_text[97];

static void fill_attr(fuse_ino_t ino, struct stat *st) {
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = files[ino].mode;
    st->st_nlink = S_ISDIR(files[ino].mode) ? 2 : 1;
    st->st_size = files[ino].size;
    st->st_uid = getuid();
    st->st_gid = getgid();
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    if (parent == ROOT)
        for (fuse_ino_t ino = RTMR0; ino < NFILES; ino++)
            if (!strcmp(name, files[ino].name)) {
                struct fuse_entry_param e;
                memset(&e, 0, sizeof(e));
                e.ino = ino;
                e.attr_timeout = e.entry_timeout = 1.0;
                fill_attr(ino, &e.attr);
                fuse_reply_entry(req, &e);
                return;
            }
    fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)fi;
    struct stat st;
    if (ino >= NFILES) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fill_attr(ino, &st);
    fuse_reply_attr(req, &st, 1.0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (ino == ROOT || ino >= NFILES) {
        fuse_reply_err(req, ino == ROOT ? EISDIR : ENOENT);
        return;
    }
    struct handle *h = calloc(1, sizeof(*h));
    if (!h) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fi->fh = (uintptr_t)h;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    fi->noflush = 1;
#if HAVE_PARALLEL_DIRECT_WRITES
    fi->parallel_direct_writes = 1;
#endif
    fuse_reply_open(req, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)ino;
    free((struct handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void reply_slice(fuse_req_t req, const void *data, size_t len, size_t size, off_t off) {
    if ((size_t)off >= len)
        fuse_reply_buf(req, NULL, 0);
    else
        fuse_reply_buf(req, (const char *)data + off, len - off < size ? len - off : size);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    switch (ino) {
    case RTMR0:
        reply_slice(req, rtmr_text, sizeof(rtmr_text), size, off);
        return;
    case TDREPORT:
        memcpy(report + REPORTDATA_AT, h->own ? h->reportdata : shared_reportdata, REPORTDATA_LEN);
        reply_slice(req, report, sizeof(report), size, off);
        return;
    default:
        fuse_reply_err(req, EINVAL);
    }
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (off != 0 || size != REPORTDATA_LEN || (ino != REPORTDATA && ino != TDREPORT)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (ino == REPORTDATA) {
        memcpy(shared_reportdata, buf, REPORTDATA_LEN);
    } else {
        memcpy(h->reportdata, buf, REPORTDATA_LEN);
        h->own = 1;
    }
    fuse_reply_write(req, size);
}

static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
                     unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz) {
    (void)arg;
    (void)fi;
    static unsigned char out[REQ_LEN];
    if (ino != TDX_GUEST || (flags & FUSE_IOCTL_UNRESTRICTED) || cmd != (unsigned int)GET_REPORT0 ||
        in_bufsz != REQ_LEN || out_bufsz != REQ_LEN) {
        fuse_reply_err(req, ENOTTY);
        return;
    }
    memcpy(out, in_buf, REPORTDATA_LEN);
    memcpy(out + REPORTDATA_LEN, report, REPORT_LEN);
    memcpy(out + REPORTDATA_LEN + REPORTDATA_AT, in_buf, REPORTDATA_LEN);
    fuse_reply_ioctl(req, 0, out, REQ_LEN);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)fi;
    char buf[1024];
    size_t used = 0;
    if (ino != ROOT) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    for (off_t i = off; i < 2 + NFILES - RTMR0; i++) { /* ".", "..", then the files */
        struct stat st;
        fuse_ino_t of = i < 2 ? ROOT : (fuse_ino_t)(RTMR0 + i - 2);
        fill_attr(of, &st);
        const char *name = i == 0 ? "." : i == 1 ? ".." : files[of].name;
        size_t need = fuse_add_direntry(req, buf + used, sizeof(buf) - used, name, &st, i + 1);
        if (used + need > size || used + need > sizeof(buf))
            break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = op_lookup,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .release = op_release,
    .ioctl = op_ioctl,
    .readdir = op_readdir,
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* the bench that started us is gone: unmount */
    memset(rtmr_text, '0', sizeof(rtmr_text) - 1);
    rtmr_text[sizeof(rtmr_text) - 1] = '\n';
    for (size_t i = 0; i < sizeof(report); i++)
        report[i] = (unsigned char)(i * 131 + 7);

    char *fuse_argv[] = {argv[0], "-o", "default_permissions,fsname=tdxfs-ref,subtype=tdxfs-ref", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
    if (!se)
        return 1;
    int status = 1;
    if (fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, argv[1]) == 0) {
            printf("ready parallel_direct_writes=%d\n", HAVE_PARALLEL_DIRECT_WRITES);
            fflush(stdout);
            status = fuse_session_loop(se) < 0 ? 1 : 0;
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
    return status;
}
