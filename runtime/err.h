/* err.h: the runtime's error messages. A failing call writes why into
 * the caller's buffer and returns -1:
 *
 *   if (!f) return rt_fail(err, errlen, "%s: %s", path, strerror(errno));
 */
#ifndef ILNAS_RT_ERR_H
#define ILNAS_RT_ERR_H

#include <stddef.h>

/* Formats the message into err (unless err is NULL or errlen 0); -1. */
int rt_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
