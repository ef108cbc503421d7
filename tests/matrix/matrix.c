/* One program of the compatibility matrix (tests/mapped_matrix.rs), built
 * six ways by build.sh: glibc PIE, non-PIE, static, static-pie, the
 * distribution's default, and musl static. ROW names the build.
 *
 * It prints "matrix: row=ROW pid=PID argv=[ARGV...]", then runs its
 * arguments as commands, left to right:
 *   threads     four threads each start from the initial value of a __thread
 *               variable (the PT_TLS image) and add to it; prints the sum
 *   maps        prints "text: ADDR" (main's address), "exe: /proc/self/exe",
 *               every line of /proc/self/maps as "maps: LINE", and
 *               "status: RssShmem: N kB"
 *   exit N      exits with status N
 *   wait        handles SIGTERM (prints "got TERM", exits 0), prints "ready"
 *               and waits
 *   wait-raw    prints "ready" and waits: SIGTERM kills it (default action)
 *   signals     prints "signals: ignored=HEX caught=HEX", its SigIgn and
 *               SigCgt from /proc/self/status (what it was started with)
 * Any other word is only part of argv.
 * Every line is flushed at once: the test reads them from a pipe. */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef ROW
#error "build with -DROW='\"name\"'"
#endif

#define THREADS 4
#define TLS_START 42

static __thread long tls = TLS_START;

int main(int argc, char **argv);

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

static void *work(void *arg) {
  long i = (long)arg;
  if (tls != TLS_START) return (void *)-1L; /* the TLS image was not copied */
  for (long k = 1; k <= 1000; k++) tls += i * k;
  return (void *)tls;
}

static void threads(void) {
  pthread_t t[THREADS];
  long sum = 0;
  for (long i = 0; i < THREADS; i++) {
    if (pthread_create(&t[i], NULL, work, (void *)(i + 1)) != 0) {
      say("threads: pthread_create failed\n");
      exit(3);
    }
  }
  for (int i = 0; i < THREADS; i++) {
    void *r;
    pthread_join(t[i], &r);
    sum += (long)r;
  }
  say("threads: n=%d sum=%ld main_tls=%ld\n", THREADS, sum, tls);
}

static void maps(void) {
  char line[PATH_MAX + 256];
  say("text: %p\n", (void *)main);
  ssize_t n = readlink("/proc/self/exe", line, sizeof line - 1);
  line[n < 0 ? 0 : n] = '\0';
  say("exe: %s\n", line);
  FILE *f = fopen("/proc/self/maps", "r");
  while (f && fgets(line, sizeof line, f)) say("maps: %s", line);
  if (f) fclose(f);
  f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "RssShmem:", 9) == 0) {
      long kb = strtol(line + 9, NULL, 10);
      say("status: RssShmem: %ld kB\n", kb);
    }
  }
  if (f) fclose(f);
}

static void on_term(int sig) {
  (void)sig;
  static const char msg[] = "got TERM\n";
  (void)!write(1, msg, sizeof msg - 1);
  _exit(0);
}

static void signals(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256], ign[64] = "?", cgt[64] = "?";
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "SigIgn:\t", 8) == 0) sscanf(line + 8, "%63s", ign);
    if (strncmp(line, "SigCgt:\t", 8) == 0) sscanf(line + 8, "%63s", cgt);
  }
  if (f) fclose(f);
  say("signals: ignored=%s caught=%s\n", ign, cgt);
}

int main(int argc, char **argv) {
  printf("matrix: row=%s pid=%d argv=[", ROW, (int)getpid());
  for (int i = 0; i < argc; i++) printf("%s%s", i ? " " : "", argv[i]);
  say("]\n");
  for (int i = 1; i < argc; i++) {
    const char *cmd = argv[i];
    if (strcmp(cmd, "threads") == 0) {
      threads();
    } else if (strcmp(cmd, "maps") == 0) {
      maps();
    } else if (strcmp(cmd, "signals") == 0) {
      signals();
    } else if (strcmp(cmd, "exit") == 0 && i + 1 < argc) {
      exit(atoi(argv[++i]));
    } else if (strcmp(cmd, "wait") == 0 || strcmp(cmd, "wait-raw") == 0) {
      if (strcmp(cmd, "wait") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigaction(SIGTERM, &sa, NULL);
      }
      say("ready\n");
      for (;;) pause();
    }
  }
  return 0;
}
