/* plot.h: curves of training runs, drawn from their metrics.jsonl.
 *
 *   const char *runs[] = {"run-ilnas", "run-random", "run-fixed"};
 *   if (app_plot(runs, 3, "curves.svg", err, sizeof err)) ...
 */
#ifndef ILNAS_APP_PLOT_H
#define ILNAS_APP_PLOT_H

#include <stddef.h>

/* Writes an SVG (atomically) with training loss, test accuracy and active
 * parameters against epochs, one line per run directory. 0, or -1 with a
 * message naming the file at fault. */
int app_plot(const char *const *dirs, int ndirs, const char *out_path, char *err,
            size_t errlen);

#endif
