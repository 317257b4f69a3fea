/*
 * vmckpt-memtest: guest-side workload for snapshot/restore tests.
 *
 *   vmckpt-memtest [--mib N | --percent P]
 *
 * Maps N MiB of anonymous memory (default: P = 60 percent of MemAvailable), fills every
 * 8-byte word with a pattern that depends on (page index, word index, generation of
 * that page), then prints "counter K" once per second forever (K = 1, 2, 3, ...) on a
 * CLOCK_MONOTONIC schedule. Between ticks it reads command lines from stdin (the serial
 * console):
 *
 *   dirty M      rewrite the first M MiB with the next generation of the pattern
 *   bandwidth S  a memory-bandwidth loop: rewrite the whole region over and over (the
 *                next generation of each page, page after page, wrapping around) for
 *                S seconds; prints the average write rate and the slowest and fastest
 *                second
 *   verify       check every word; prints "verify ok" or the first mismatch
 *   checksum     a 64-bit hash of the whole region
 *   help         list the commands
 *   corrupt [PAGE [WORD]]   (self-test) flip one bit of one word, so verify must fail
 *
 * A "page" here is always 4096 bytes (512 words), whatever the guest's page size.
 * Every line of output is written with a single write(), so lines never interleave.
 * Long commands keep printing the counter on schedule while they work.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define WORDS_PER_PAGE (PAGE_BYTES / 8u)
#define PAGES_PER_MIB ((1u << 20) / PAGE_BYTES)
#define MAX_MIB (UINT64_C(1) << 24) /* 16 TiB: keeps every size computation far from overflow */
#define LINE_MAX_BYTES 256u
#define TICK_NS INT64_C(1000000000)
#define TICK_CHECK_PAGES 256u /* look at the clock every 1 MiB of work */
#define DEFAULT_PERCENT 60u
#define MAX_BANDWIDTH_SECONDS 86400u

#define PATTERN_SEED UINT64_C(0x766d636b70742d31) /* "vmckpt-1" */
#define PATTERN_STEP UINT64_C(0x9e3779b97f4a7c15) /* odd: consecutive words all differ */
#define HASH_MUL UINT64_C(0xff51afd7ed558ccd)

static uint64_t *region;   /* npages * PAGE_BYTES bytes */
static size_t npages;
static uint32_t *gens;     /* generation of each page, starts at 1 */
static uint64_t counter;   /* last "counter K" printed */
static int64_t next_tick;  /* CLOCK_MONOTONIC ns of the next "counter" line */

static struct termios saved_tty;
static bool tty_changed;

/* --- output ------------------------------------------------------------------------ */

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report it */
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Prints one line (the newline is added) with a single write(). */
__attribute__((format(printf, 1, 2))) static void out(const char *fmt, ...)
{
    char buf[640];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = (int)(sizeof buf - 2);
    buf[n++] = '\n';
    write_all(STDOUT_FILENO, buf, (size_t)n);
}

/* --- time ---------------------------------------------------------------------------- */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * TICK_NS + ts.tv_nsec;
}

static long long ms_since(int64_t start)
{
    return (long long)((mono_ns() - start + 500000) / 1000000);
}

/* Prints "counter K" if its time has come. After a long stall (more than a whole
 * period behind) the schedule restarts from now instead of printing a burst. */
static void tick_if_due(void)
{
    int64_t now = mono_ns();
    if (now < next_tick)
        return;
    counter++;
    out("counter %" PRIu64, counter);
    next_tick += TICK_NS;
    if (next_tick <= now)
        next_tick = now + TICK_NS;
}

/* --- pattern ------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

/* Word w of page p at generation g is page_base(p, g) + w * PATTERN_STEP. */
static inline uint64_t page_base(uint64_t page, uint32_t gen)
{
    return mix64(PATTERN_SEED ^ (page << 32) ^ gen);
}

static inline uint64_t expected_word(uint64_t page, uint32_t gen, unsigned word)
{
    return page_base(page, gen) + (uint64_t)word * PATTERN_STEP;
}

static inline uint64_t *page_ptr(size_t page)
{
    return region + page * WORDS_PER_PAGE;
}

static void fill_page(size_t page)
{
    uint64_t *p = page_ptr(page);
    uint64_t v = page_base(page, gens[page]);
    for (unsigned w = 0; w < WORDS_PER_PAGE; w++) {
        p[w] = v;
        v += PATTERN_STEP;
    }
}

/* Returns the index of the first wrong word of the page, or -1. */
static int check_page(size_t page)
{
    const uint64_t *p = page_ptr(page);
    uint64_t v = page_base(page, gens[page]);
    uint64_t diff = 0;
    for (unsigned w = 0; w < WORDS_PER_PAGE; w++) {
        diff |= p[w] ^ v;
        v += PATTERN_STEP;
    }
    if (diff == 0)
        return -1;
    for (unsigned w = 0; w < WORDS_PER_PAGE; w++)
        if (p[w] != expected_word(page, gens[page], w))
            return (int)w;
    return -1; /* changed under us; cannot happen single-threaded */
}

/* --- commands ------------------------------------------------------------------------ */

static bool parse_u64(const char *s, uint64_t *v)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *v = x;
    return true;
}

static void cmd_dirty(uint64_t mib)
{
    uint64_t total_mib = npages / PAGES_PER_MIB;
    if (mib > total_mib)
        mib = total_mib;
    size_t pages = (size_t)mib * PAGES_PER_MIB;
    int64_t start = mono_ns();
    for (size_t pg = 0; pg < pages; pg++) {
        gens[pg]++;
        fill_page(pg);
        if (pg % TICK_CHECK_PAGES == TICK_CHECK_PAGES - 1)
            tick_if_due();
    }
    out("memtest: dirtied %" PRIu64 " MiB in %lld ms", mib, ms_since(start));
}

/* A memory-bandwidth loop for measuring what the host's RAM backing costs a guest that
 * writes memory all the time: rewrites page after page with its next generation, from
 * page 0 to the end and around again, until `seconds` have passed. Besides the average
 * it reports the slowest and fastest whole second, which shows stalls (e.g. the host
 * writing guest RAM back to disk). Resumes next time where it stopped, so repeated runs
 * cover the region evenly. */
static void cmd_bandwidth(uint64_t seconds)
{
    static size_t next_page;
    if (next_page >= npages)
        next_page = 0;
    int64_t start = mono_ns();
    int64_t end = start + (int64_t)seconds * TICK_NS;
    int64_t second_end = start + TICK_NS;
    uint64_t pages_done = 0, second_pages = 0;
    uint64_t slowest = UINT64_MAX, fastest = 0; /* pages in one whole second */
    int64_t now = start;
    while (now < end) {
        for (unsigned i = 0; i < TICK_CHECK_PAGES; i++) {
            gens[next_page]++;
            fill_page(next_page);
            if (++next_page == npages)
                next_page = 0;
        }
        pages_done += TICK_CHECK_PAGES;
        second_pages += TICK_CHECK_PAGES;
        tick_if_due();
        now = mono_ns();
        if (now >= second_end) {
            /* a second that ran long counts at its own rate */
            uint64_t per_s = (uint64_t)((double)second_pages * 1e9 / (double)(now - second_end + TICK_NS));
            if (per_s < slowest)
                slowest = per_s;
            if (per_s > fastest)
                fastest = per_s;
            second_pages = 0;
            second_end = now + TICK_NS;
        }
    }
    double secs = (double)(now - start) / 1e9;
    uint64_t mib = pages_done / PAGES_PER_MIB;
    if (slowest == UINT64_MAX)
        slowest = fastest = (uint64_t)((double)pages_done / secs);
    out("memtest: bandwidth %.0f MiB/s over %" PRIu64 " s (%" PRIu64 " MiB written in %lld ms, "
        "slowest second %" PRIu64 " MiB/s, fastest %" PRIu64 " MiB/s)",
        (double)mib / secs, seconds, mib, ms_since(start), slowest / PAGES_PER_MIB,
        fastest / PAGES_PER_MIB);
}

static void cmd_verify(void)
{
    int64_t start = mono_ns();
    size_t bad_pages = 0, first_page = 0;
    int first_word = -1;
    for (size_t pg = 0; pg < npages; pg++) {
        int w = check_page(pg);
        if (w >= 0) {
            if (bad_pages == 0) {
                first_page = pg;
                first_word = w;
            }
            bad_pages++;
        }
        if (pg % TICK_CHECK_PAGES == TICK_CHECK_PAGES - 1)
            tick_if_due();
    }
    long long ms = ms_since(start);
    if (bad_pages == 0) {
        out("memtest: verify ok %zu MiB in %lld ms", npages / PAGES_PER_MIB, ms);
        return;
    }
    out("memtest: verify FAILED page %zu word %d (expected 0x%016" PRIx64 " got 0x%016" PRIx64
        "), %zu bad pages of %zu, in %lld ms",
        first_page, first_word, expected_word(first_page, gens[first_page], (unsigned)first_word),
        page_ptr(first_page)[first_word], bad_pages, npages, ms);
}

/* Four multiply-rotate lanes (independent, so the multiplies overlap); each step is a
 * bijection of the lane's state, so changing any single word changes the result. */
static void cmd_checksum(void)
{
    int64_t start = mono_ns();
    uint64_t h0 = PATTERN_SEED, h1 = ~PATTERN_SEED, h2 = PATTERN_STEP, h3 = ~PATTERN_STEP;
    for (size_t pg = 0; pg < npages; pg++) {
        const uint64_t *p = page_ptr(pg);
        for (unsigned w = 0; w < WORDS_PER_PAGE; w += 4) {
            h0 = (h0 ^ p[w + 0]) * HASH_MUL;
            h1 = (h1 ^ p[w + 1]) * HASH_MUL;
            h2 = (h2 ^ p[w + 2]) * HASH_MUL;
            h3 = (h3 ^ p[w + 3]) * HASH_MUL;
            h0 = (h0 << 31) | (h0 >> 33);
            h1 = (h1 << 31) | (h1 >> 33);
            h2 = (h2 << 31) | (h2 >> 33);
            h3 = (h3 << 31) | (h3 >> 33);
        }
        if (pg % TICK_CHECK_PAGES == TICK_CHECK_PAGES - 1)
            tick_if_due();
    }
    uint64_t h = mix64(h0 ^ (uint64_t)npages);
    h = mix64(h ^ h1);
    h = mix64(h ^ h2);
    h = mix64(h ^ h3);
    out("memtest: checksum %016" PRIx64 " (%zu MiB in %lld ms)", h, npages / PAGES_PER_MIB,
        ms_since(start));
}

static void cmd_corrupt(uint64_t page, uint64_t word)
{
    if (page >= npages || word >= WORDS_PER_PAGE) {
        out("memtest: corrupt: page must be < %zu and word < %u", npages, WORDS_PER_PAGE);
        return;
    }
    page_ptr((size_t)page)[word] ^= 1;
    out("memtest: corrupted page %" PRIu64 " word %" PRIu64, page, word);
}

/* Copies s into a printable form for messages. */
static void printable(const char *s, char *dst, size_t cap)
{
    size_t i = 0;
    for (; s[i] != '\0' && i + 1 < cap; i++)
        dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    dst[i] = '\0';
}

static void handle_line(char *line)
{
    char shown[LINE_MAX_BYTES + 1];
    printable(line, shown, sizeof shown);

    char *save = NULL;
    char *cmd = strtok_r(line, " \t\r", &save);
    if (cmd == NULL)
        return; /* empty line */
    char *a1 = strtok_r(NULL, " \t\r", &save);
    char *a2 = strtok_r(NULL, " \t\r", &save);
    char *a3 = strtok_r(NULL, " \t\r", &save);
    uint64_t v1, v2;

    if (strcmp(cmd, "dirty") == 0) {
        if (a1 == NULL || a2 != NULL || !parse_u64(a1, &v1)) {
            out("memtest: usage: dirty MIB");
            return;
        }
        cmd_dirty(v1);
    } else if (strcmp(cmd, "bandwidth") == 0) {
        if (a1 == NULL || a2 != NULL || !parse_u64(a1, &v1) || v1 == 0 || v1 > MAX_BANDWIDTH_SECONDS) {
            out("memtest: usage: bandwidth SECONDS (1 to %u)", MAX_BANDWIDTH_SECONDS);
            return;
        }
        cmd_bandwidth(v1);
    } else if (strcmp(cmd, "verify") == 0 && a1 == NULL) {
        cmd_verify();
    } else if (strcmp(cmd, "checksum") == 0 && a1 == NULL) {
        cmd_checksum();
    } else if (strcmp(cmd, "help") == 0 && a1 == NULL) {
        out("memtest: commands: dirty MIB | bandwidth SECONDS | verify | checksum | help");
    } else if (strcmp(cmd, "corrupt") == 0 && a3 == NULL) {
        v1 = npages / 2;
        v2 = 0;
        if ((a1 != NULL && !parse_u64(a1, &v1)) || (a2 != NULL && !parse_u64(a2, &v2))) {
            out("memtest: usage: corrupt [PAGE [WORD]]");
            return;
        }
        cmd_corrupt(v1, v2);
    } else {
        out("memtest: unknown command '%s'", shown);
    }
}

/* --- stdin --------------------------------------------------------------------------- */

static char line_buf[LINE_MAX_BYTES + 1];
static size_t line_len;
static bool line_too_long;
static bool stdin_eof;

static void feed(const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        if (c == '\n') {
            if (line_too_long) {
                out("memtest: line longer than %u bytes discarded", LINE_MAX_BYTES);
            } else {
                line_buf[line_len] = '\0';
                handle_line(line_buf);
            }
            line_len = 0;
            line_too_long = false;
        } else if (line_too_long) {
            continue;
        } else if (line_len == LINE_MAX_BYTES) {
            line_too_long = true;
            line_len = 0;
        } else {
            line_buf[line_len++] = c;
        }
    }
}

static void read_stdin(void)
{
    char buf[1024];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n > 0) {
        feed(buf, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (line_len > 0 && !line_too_long)
        feed("\n", 1); /* a last line without newline */
    stdin_eof = true;
    out("memtest: stdin closed (%s); counting only", n == 0 ? "EOF" : strerror(errno));
}

static void restore_tty(void)
{
    if (tty_changed)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
}

static void on_signal(int sig)
{
    restore_tty();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Canonical (line) mode stays; echo goes, so commands do not show up in the log, and
 * the EOF character is disabled so that a stray ^D cannot end command input. */
static void setup_tty(void)
{
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) != 0)
        return;
    struct termios t = saved_tty;
    t.c_lflag |= ICANON;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
    t.c_cc[VEOF] = _POSIX_VDISABLE;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) != 0) {
        out("memtest: warning: cannot turn off echo on stdin: %s", strerror(errno));
        return;
    }
    tty_changed = true;
    atexit(restore_tty);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGHUP, on_signal);
}

/* --- setup --------------------------------------------------------------------------- */

static uint64_t mem_available_kib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f == NULL)
        return 0;
    char line[256];
    unsigned long long avail = 0, free_kib = 0, v;
    bool have_avail = false;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "MemAvailable: %llu kB", &v) == 1) {
            avail = v;
            have_avail = true;
        } else if (sscanf(line, "MemFree: %llu kB", &v) == 1) {
            free_kib = v;
        }
    }
    fclose(f);
    return have_avail ? avail : free_kib;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: vmckpt-memtest [--mib N | --percent P]\n"
                "  --mib N       use N MiB of memory\n"
                "  --percent P   use P percent of MemAvailable (default %u)\n"
                "Commands on stdin: dirty MIB | bandwidth SECONDS | verify | checksum | help\n",
            DEFAULT_PERCENT);
}

static void die_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "vmckpt-memtest: error: %s%s\n", msg, arg ? arg : "");
    usage(stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    uint64_t mib = 0, percent = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        uint64_t *dst = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--mib") == 0 || strcmp(a, "--percent") == 0) {
            if (i + 1 >= argc)
                die_usage("missing value after ", a);
            dst = a[2] == 'm' ? &mib : &percent;
            val = argv[++i];
        } else if (strncmp(a, "--mib=", 6) == 0) {
            dst = &mib;
            val = a + 6;
        } else if (strncmp(a, "--percent=", 10) == 0) {
            dst = &percent;
            val = a + 10;
        } else {
            die_usage("unknown argument ", a);
        }
        if (!parse_u64(val, dst) || *dst == 0)
            die_usage("expected a positive integer, got ", val);
    }
    if (mib != 0 && percent != 0)
        die_usage("--mib and --percent exclude each other", NULL);
    if (percent > 100)
        die_usage("--percent must be at most 100", NULL);

    if (mib == 0) {
        if (percent == 0)
            percent = DEFAULT_PERCENT;
        uint64_t avail = mem_available_kib();
        mib = avail / 1024 * percent / 100;
        if (mib == 0) {
            fprintf(stderr, "vmckpt-memtest: error: %" PRIu64 " percent of MemAvailable (%" PRIu64
                            " KiB) is less than 1 MiB\n", percent, avail);
            return 1;
        }
        out("memtest: using %" PRIu64 " MiB (%" PRIu64 "%% of MemAvailable %" PRIu64 " MiB)", mib,
            percent, avail / 1024);
    }
    if (mib > MAX_MIB) {
        fprintf(stderr, "vmckpt-memtest: error: %" PRIu64 " MiB is too much (at most %" PRIu64 ")\n",
                mib, MAX_MIB);
        return 1;
    }

    npages = (size_t)mib * PAGES_PER_MIB;
    gens = malloc(npages * sizeof *gens);
    if (gens == NULL) {
        fprintf(stderr, "vmckpt-memtest: error: no memory for the page table of %" PRIu64 " MiB\n",
                mib);
        return 1;
    }
    for (size_t pg = 0; pg < npages; pg++)
        gens[pg] = 1;

    int64_t start = mono_ns();
    void *m = mmap(NULL, npages * (size_t)PAGE_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "vmckpt-memtest: error: mmap of %" PRIu64 " MiB failed: %s\n", mib,
                strerror(errno));
        return 1;
    }
    region = m;
    out("memtest: mapped %" PRIu64 " MiB in %lld ms", mib, ms_since(start));

    start = mono_ns();
    for (size_t pg = 0; pg < npages; pg++)
        fill_page(pg);
    out("memtest: filled %" PRIu64 " MiB in %lld ms", mib, ms_since(start));

    setup_tty();

    next_tick = mono_ns(); /* "counter 1" right away, like the counter workload */
    for (;;) {
        tick_if_due();
        int64_t wait = next_tick - mono_ns();
        if (wait <= 0)
            continue;
        if (stdin_eof) {
            struct timespec until = {.tv_sec = next_tick / TICK_NS, .tv_nsec = next_tick % TICK_NS};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
            continue;
        }
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        struct timespec timeout = {.tv_sec = wait / TICK_NS, .tv_nsec = wait % TICK_NS};
        int r = ppoll(&pfd, 1, &timeout, NULL);
        if (r < 0) {
            if (errno != EINTR) {
                stdin_eof = true;
                out("memtest: poll on stdin failed (%s); counting only", strerror(errno));
            }
            continue;
        }
        if (r == 0)
            continue;
        if (pfd.revents & POLLNVAL) {
            stdin_eof = true;
            out("memtest: stdin is not open; counting only");
        } else if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            read_stdin(); /* after a hang-up, read() returns the rest, then EOF or an error */
        }
    }
}
