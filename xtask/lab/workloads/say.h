/*
 * What the lab's device workloads print: progress lines on stdout and the one fatal error on
 * stderr (with errno's text), each after the program's `say_prefix` (its name, and what it is
 * doing), so that a failed case names the step. Included by one .c file each.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *say_prefix = "";

static void die(const char *fmt, ...)
{
	va_list ap;
	int err = errno;
	va_start(ap, fmt);
	fprintf(stderr, "%s: FAILED: ", say_prefix);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (err)
		fprintf(stderr, ": %s", strerror(err));
	fputc('\n', stderr);
	exit(1);
}

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s: ", say_prefix);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}
