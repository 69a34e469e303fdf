/* plot.c: training curves of one or more runs as one SVG: training loss,
 * test accuracy and active parameters against epochs, a line per run (per
 * task of a multi-task run), so ILNAS, random and fixed can be compared at
 * a glance. */
#include "app/plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_EPOCHS = 4096 };

enum { MAX_TASKS = 8 };

typedef struct series {
  char name[4200];
  int n;
  double epoch[MAX_EPOCHS], loss[MAX_EPOCHS], acc[MAX_EPOCHS], params[MAX_EPOCHS];
} series;

/* The number after "key": on a JSON line, or NAN. */
static double field(const char *line, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(line, pat);
  if (!p) return NAN;
  char *end;
  double v = strtod(p + strlen(pat), &end);
  return end == p + strlen(pat) ? NAN : v;
}

/* A multi-task metrics line's object of task `task` ("tasks": {"NAME": {...}}):
 * its text copied into out (NUL-terminated), 0; -1 when it has none. */
static int task_object(const char *line, const char *task, char *out, size_t len) {
  const char *p = strstr(line, "\"tasks\": {");
  char pat[80];
  snprintf(pat, sizeof pat, "\"%.64s\": {", task);
  p = p ? strstr(p, pat) : NULL;
  const char *end = p ? strchr(p, '}') : NULL;
  if (!end || (size_t)(end - p) >= len) return -1;
  memcpy(out, p, (size_t)(end - p)), out[end - p] = 0;
  return 0;
}

/* The task names of a multi-task metrics line, in order; their count. */
static int task_names(const char *line, char names[][64]) {
  const char *p = strstr(line, "\"tasks\": {");
  int n = 0;
  if (!p) return 0;
  p += strlen("\"tasks\": {");
  while (n < MAX_TASKS && *p == '"') {
    const char *q = strchr(p + 1, '"');
    if (!q || q - p - 1 >= 64) break;
    memcpy(names[n], p + 1, (size_t)(q - p - 1)), names[n][q - p - 1] = 0;
    n++;
    const char *end = strchr(q, '}');
    if (!end) break;
    p = end + 1;
    if (strncmp(p, ", ", 2) != 0) break;
    p += 2;
  }
  return n;
}

/* Run dir's curves, or (task non-NULL) one task's of a multi-task run. */
static int load(const char *dir, const char *task, series *s, char *err, size_t errlen) {
  char path[4096], line[4096];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
    return -1;
  }
  snprintf(s->name, sizeof s->name, "%s%s%s", dir, task ? ": " : "", task ? task : "");
  s->n = 0;
  int lineno = 0;
  while (fgets(line, sizeof line, f) && s->n < MAX_EPOCHS) {
    lineno++;
    if (strstr(line, "\"event\"")) continue; /* expansions: not a point */
    double e = field(line, "epoch");
    if (isnan(e)) {
      fclose(f);
      snprintf(err, errlen, "%s:%d: not a metrics line (no \"epoch\")", path, lineno);
      return -1;
    }
    char obj[1024];
    const char *at = line;
    if (task && task_object(line, task, obj, sizeof obj) == 0) at = obj;
    else if (task) {
      fclose(f);
      snprintf(err, errlen, "%s:%d: no task '%s' in the line", path, lineno, task);
      return -1;
    }
    s->epoch[s->n] = e;
    s->loss[s->n] = field(at, "train_loss");
    s->acc[s->n] = field(at, "test_acc");
    s->params[s->n] = field(at, "active_params");
    s->n++;
  }
  fclose(f);
  if (s->n == 0) {
    snprintf(err, errlen, "%s: no epochs recorded yet", path);
    return -1;
  }
  return 0;
}

static const char *colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"};

static void panel(FILE *o, const series *s, int ns, int which, double x0,
                  const char *title, double max_epoch) {
  const double W = 300, H = 220, top = 40, left = x0 + 50;
  double lo = INFINITY, hi = -INFINITY;
  for (int k = 0; k < ns; k++)
    for (int i = 0; i < s[k].n; i++) {
      double v = which == 0 ? s[k].loss[i] : which == 1 ? s[k].acc[i] : s[k].params[i];
      if (!isfinite(v)) continue;
      lo = fmin(lo, v), hi = fmax(hi, v);
    }
  if (!isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) hi = lo + 1;
  fprintf(o, "<text x='%.0f' y='%.0f' font-size='14' text-anchor='middle'>%s</text>\n",
          left + W / 2, top - 12, title);
  fprintf(o, "<rect x='%.0f' y='%.0f' width='%.0f' height='%.0f' fill='none' stroke='#444'/>\n",
          left, top, W, H);
  for (int t = 0; t <= 4; t++) {
    double v = lo + (hi - lo) * t / 4, y = top + H - H * t / 4;
    fprintf(o, "<text x='%.0f' y='%.0f' font-size='10' text-anchor='end'>%.*f</text>\n",
            left - 4, y + 3, which == 2 ? 0 : 3, which == 1 ? v : v);
    fprintf(o, "<line x1='%.0f' x2='%.0f' y1='%.0f' y2='%.0f' stroke='#ddd'/>\n", left,
            left + W, y, y);
  }
  fprintf(o, "<text x='%.0f' y='%.0f' font-size='11' text-anchor='middle'>epoch (max %.0f)</text>\n",
          left + W / 2, top + H + 18, max_epoch);
  for (int k = 0; k < ns; k++) {
    fprintf(o, "<polyline fill='none' stroke-width='2' stroke='%s' points='",
            colours[k % 8]);
    for (int i = 0; i < s[k].n; i++) {
      double v = which == 0 ? s[k].loss[i] : which == 1 ? s[k].acc[i] : s[k].params[i];
      if (!isfinite(v)) continue;
      fprintf(o, "%.1f,%.1f ", left + W * s[k].epoch[i] / max_epoch,
              top + H - H * (v - lo) / (hi - lo));
    }
    fprintf(o, "'/>\n");
  }
}

int app_plot(const char *const *dirs, int ndirs, const char *out_path, char *err,
            size_t errlen) {
  series *s = calloc((size_t)ndirs * MAX_TASKS, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  double max_epoch = 1;
  int ns = 0;
  for (int k = 0; k < ndirs; k++) {
    /* a multi-task run: a line per task */
    char path[4096], line[4096] = "", names[MAX_TASKS][64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dirs[k]);
    FILE *f = fopen(path, "r");
    if (f && !fgets(line, sizeof line, f)) line[0] = 0;
    if (f) fclose(f);
    int nt = task_names(line, names);
    for (int t = 0; t < (nt ? nt : 1); t++, ns++) {
      if (load(dirs[k], nt ? names[t] : NULL, &s[ns], err, errlen)) {
        free(s);
        return -1;
      }
      max_epoch = fmax(max_epoch, s[ns].epoch[s[ns].n - 1]);
    }
  }
  ndirs = ns;
  /* written beside the destination, renamed into place when complete */
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out_path, (long)getpid());
  FILE *o = fopen(tmp, "w");
  if (!o) {
    snprintf(err, errlen, "cannot write '%s': %s", out_path, strerror(errno));
    free(s);
    return -1;
  }
  double height = 320 + 18 * ndirs;
  fprintf(o, "<svg xmlns='http://www.w3.org/2000/svg' width='1100' height='%.0f' "
          "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
          height);
  panel(o, s, ndirs, 0, 0, "training loss", max_epoch);
  panel(o, s, ndirs, 1, 365, "test accuracy", max_epoch);
  panel(o, s, ndirs, 2, 730, "active parameters", max_epoch);
  for (int k = 0; k < ndirs; k++) {
    double y = 300 + 18 * k;
    fprintf(o, "<line x1='60' x2='90' y1='%.0f' y2='%.0f' stroke='%s' stroke-width='3'/>\n",
            y, y, colours[k % 8]);
    fprintf(o, "<text x='98' y='%.0f' font-size='12'>", y + 4);
    for (const char *p = s[k].name; *p; p++) /* escape for XML */
      fputs(*p == '<' ? "&lt;" : *p == '&' ? "&amp;" : *p == '\'' ? "&apos;" : (char[2]){*p, 0}, o);
    fprintf(o, " (final test acc %.2f%%, %.0f params)</text>\n",
            100 * s[k].acc[s[k].n - 1], s[k].params[s[k].n - 1]);
  }
  fprintf(o, "</svg>\n");
  int bad = ferror(o) | (fclose(o) != 0);
  free(s);
  if (bad || rename(tmp, out_path) != 0) {
    snprintf(err, errlen, "cannot write '%s': %s", out_path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}
