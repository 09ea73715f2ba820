/* A slower disk for benchmarks (benches/kv-cpu, SLOW_DISK_US): loaded with
 * LD_PRELOAD, fdatasync and fsync sleep SLOW_FSYNC_US microseconds before
 * the real call, as a network volume or a busy disk would take. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void pause_for_disk(void) {
	const char *us = getenv("SLOW_FSYNC_US");
	if (us) {
		long n = atol(us);
		struct timespec ts = { n / 1000000, (n % 1000000) * 1000 };
		nanosleep(&ts, NULL);
	}
}

int fdatasync(int fd) {
	static int (*real)(int);
	if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	pause_for_disk();
	return real(fd);
}

int fsync(int fd) {
	static int (*real)(int);
	if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	pause_for_disk();
	return real(fd);
}
