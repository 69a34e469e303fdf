/* data.h: data sets on disk -> images in memory, and batches out of them.
 *
 * Formats: IDX (MNIST, Fashion-MNIST; gzip or raw), CIFAR-10 binary,
 * STL-10 binary, and the 8x8 digits CSV (gzip or raw). Images are held as
 * floats in [0, 1], NCHW; labels as bytes. Every failure is returned as a
 * message naming the file and what was expected, never an exit().
 *
 *   rt_dataset train, test; char err[512];
 *   if (rt_data_load(RT_DATA_IDX, dir, 0.2, &train, &test, err, sizeof err))
 *     { fprintf(stderr, "%s\n", err); return 1; }
 *   rt_norm nm; rt_data_norm(&train, &nm);
 *   rt_data_batch(&train, idx, 128, &nm, crop, flip, &rng, xbuf, ybuf);
 *   rt_dataset_free(&train); rt_dataset_free(&test);
 */
#ifndef ILNAS_RT_DATA_H
#define ILNAS_RT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"

typedef enum {
  RT_DATA_IDX,        /* dir: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-... */
  RT_DATA_CIFAR10,    /* dir: data_batch_1..5.bin, test_batch.bin (or dir/cifar-10-batches-bin/) */
  RT_DATA_STL10,      /* dir: train_X.bin, train_y.bin, test_X.bin, test_y.bin (or dir/stl10_binary/) */
  RT_DATA_DIGITS_CSV  /* file: rows of 64 values 0..16 then the label; last `split` fraction is the test set */
} rt_data_format;

typedef struct rt_dataset {
  int n, c, h, w;   /* images and their shape */
  int classes;      /* 1 + largest label (10 for every format here) */
  float *x;         /* n*c*h*w, values in [0, 1] */
  uint8_t *y;       /* n labels */
} rt_dataset;

typedef struct rt_norm {
  int c;
  float mean[4], std[4]; /* per channel (c <= 4) */
} rt_norm;

/* Loads both splits. `split` only matters for formats without a test set.
 * Returns 0, or -1 with a message in err. On error nothing is allocated. */
int rt_data_load(rt_data_format fmt, const char *path, double split,
                 rt_dataset *train, rt_dataset *test, char *err, size_t errlen);
/* The same, for a model with `classes` outputs (0: any): a label it cannot
 * predict fails the load with the file that holds it and its record (or
 * line). IDX takes its class count from the labels; the other formats have
 * 10 classes, or `classes` when that is fewer. */
int rt_data_load_classes(rt_data_format fmt, const char *path, double split, int classes,
                         rt_dataset *train, rt_dataset *test, char *err, size_t errlen);
void rt_dataset_free(rt_dataset *d);

/* Keeps the first n images (n < d->n), for --train-limit. */
void rt_dataset_truncate(rt_dataset *d, int n);

/* Per-channel mean and standard deviation of a data set. */
void rt_data_norm(const rt_dataset *d, rt_norm *nm);

/* Gathers images idx[0..n) into out ([n][c][h][w], normalised) and labels
 * into labels. crop > 0: random crop with zero padding of `crop` pixels
 * (zero in the normalised space, as torchvision pads before normalising
 * — i.e. the pad value is (0 - mean) / std); flip: random horizontal flip
 * with probability 1/2. Random draws come from rng in a fixed order, one
 * image after another, so the result depends only on the rng state. */
void rt_data_batch(const rt_dataset *d, const int *idx, int n,
                   const rt_norm *nm, int crop, int flip, rt_rng *rng,
                   float *out, uint8_t *labels);

#endif
