/* fuzz_data: libFuzzer target over the data set loaders of the fixed
 * formats (runtime/data.c): IDX (plain or gzip), CIFAR-10, STL-10, the
 * digits CSV and downsampled ImageNet's npz batches (a zip parser and an
 * .npy header parser of its own).
 *
 * An input is a format byte, then the files that format reads, each a
 * 3-byte big-endian length and its bytes (the last one takes what is left
 * when its length runs past the end), written under the format's names
 * into a directory of this process. rt_data_load must return 0, or -1 with
 * a message; a crash, a leak or a -1 without a message is a bug. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static const struct {
  rt_data_format fmt;
  const char *files[7]; /* NULL-terminated; for the CSV, the file is the path */
} formats[] = {
    {RT_DATA_IDX, {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                   "t10k-labels-idx1-ubyte"}},
    {RT_DATA_CIFAR10, {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                       "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"}},
    {RT_DATA_STL10, {"train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"}},
    {RT_DATA_DIGITS_CSV, {"digits.csv"}},
    {RT_DATA_DOWNSAMPLED, {"train_data_batch_1.npz", "val_data.npz"}},
};
enum { NFMT = sizeof formats / sizeof formats[0] };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  static char dir[256];
  if (!dir[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ilnas-fuzz-data-XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(dir)) abort();
  }
  char path[512];
  for (int f = 0; f < NFMT; f++) /* the last input's files */
    for (int k = 0; formats[f].files[k]; k++) {
      snprintf(path, sizeof path, "%s/%s", dir, formats[f].files[k]);
      unlink(path);
    }
  if (n < 1) return 0;
  int f = data[0] % NFMT;
  size_t at = 1;
  for (int k = 0; formats[f].files[k] && at <= n; k++) {
    size_t len = 0;
    if (at + 3 <= n) len = (size_t)data[at] << 16 | (size_t)data[at + 1] << 8 | data[at + 2];
    at = at + 3 <= n ? at + 3 : n;
    if (len > n - at) len = n - at;
    snprintf(path, sizeof path, "%s/%s", dir, formats[f].files[k]);
    FILE *o = fopen(path, "wb");
    if (!o) abort();
    if (len) fwrite(data + at, 1, len, o);
    fclose(o);
    at += len;
  }
  const char *where = dir;
  if (formats[f].fmt == RT_DATA_DIGITS_CSV) {
    snprintf(path, sizeof path, "%s/%s", dir, formats[f].files[0]);
    where = path;
  }
  rt_dataset train, test;
  char err[512];
  err[0] = 0;
  if (rt_data_load_classes(formats[f].fmt, where, 0.25, 0, &train, &test, err, sizeof err)) {
    if (!err[0]) abort();
    return 0;
  }
  rt_dataset_free(&train);
  rt_dataset_free(&test);
  return 0;
}
