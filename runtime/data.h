/* data.h: data sets on disk -> images, and batches out of them.
 *
 * Formats: IDX (MNIST, Fashion-MNIST; gzip or raw), CIFAR-10 binary,
 * STL-10 binary, the 8x8 digits CSV (gzip or raw) and downsampled ImageNet
 * (npz batches) are read into memory: floats in [0, 1] NCHW, or bytes for
 * downsampled ImageNet; labels as bytes. An image folder (ImageNet's
 * layout: train/ and val/ or test/, one sub-folder per class, JPEG and
 * PNG) stays on disk: its files are checked when it is opened and decoded
 * on demand, resized to the model's input, by a stream (rt_stream) whose
 * threads work a few batches ahead. Every failure is returned as a message
 * naming the file and what was expected, never an exit().
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
#include <stdio.h>

#include "base/rng.h"
#include "ir/ir.h"
#include "runtime/comm.h"

typedef enum {
  RT_DATA_IDX,        /* dir: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-... */
  RT_DATA_CIFAR10,    /* dir: data_batch_1..5.bin, test_batch.bin (or dir/cifar-10-batches-bin/) */
  RT_DATA_STL10,      /* dir: train_X.bin, train_y.bin, test_X.bin, test_y.bin (or dir/stl10_binary/) */
  RT_DATA_DIGITS_CSV, /* file: rows of 64 values 0..16 then the label; last `split` fraction is the test set */
  RT_DATA_FOLDER,     /* dir: train/CLASS/NAME.{jpg,jpeg,png}, val/ or test/ likewise */
  RT_DATA_DOWNSAMPLED /* dir: train_data_batch_1..10.npz, val_data.npz (downsampled ImageNet) */
} rt_data_format;

typedef struct rt_dataset {
  int n, c, h, w;   /* images and their shape */
  int classes;      /* 1 + largest label (10 for the fixed formats) */
  float *x;         /* n*c*h*w, values in [0, 1]; NULL when px or src holds the images */
  uint8_t *px;      /* n*c*h*w bytes, value px*scale (the 8-bit formats, and sets too
                       large as floats) */
  float scale;      /* of px */
  ir_label *y;      /* n labels */
  struct rt_folder *src; /* an image folder: decoded on demand by a stream */
} rt_dataset;

/* Pixel k (of n*c*h*w) of a set in memory, from its floats or its bytes:
 * a byte's value is the same float a set of floats would hold. */
static inline float rt_data_pixel(const rt_dataset *d, size_t k) {
  return d->x ? d->x[k] : (float)d->px[k] * d->scale;
}

/* What rt_data_open needs beyond the format and path. */
typedef struct rt_data_opts {
  rt_data_format fmt;
  const char *path;
  double split;     /* formats without a test set: the test fraction */
  int classes;      /* the model's outputs (0: any) */
  int c, h, w;      /* the model's input: a folder's images are resized to it */
  int resize_h, resize_w; /* others: resampled to it (PIL's bilinear); 0: as stored */
  int channels;     /* others: 3 copies of gray, or RGB's mean as gray; 0: as stored */
  int train_limit;  /* keep this many training images (rt_dataset_truncate), before
                       the adapters run; 0: all */
  int skip_bad;     /* folder: leave out bad files, each reported to log */
  int threads;      /* folder: threads that check the files (0: 1) */
  FILE *log;        /* folder: skipped files; NULL: not reported */
} rt_data_opts;

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
/* Any format, with the options above. An image folder's training and test
 * splits must hold the same class folders; their sorted names are the
 * labels 0.. (as torchvision's ImageFolder numbers them), at most 256. */
int rt_data_open(const rt_data_opts *o, rt_dataset *train, rt_dataset *test, char *err,
                 size_t errlen);
void rt_dataset_free(rt_dataset *d);

/* Class k's name (a folder's class sub-folder), or NULL for formats
 * without names. */
const char *rt_data_class_name(const rt_dataset *d, int k);

/* Keeps n images (n < d->n), for --train-limit: the first n, or for a
 * folder n spread evenly over it (its files are in class order). */
void rt_dataset_truncate(rt_dataset *d, int n);

/* Per-channel mean and standard deviation of a data set; of a folder, over
 * up to 256 of its images spread evenly, as evaluation sees them. */
void rt_data_norm(const rt_dataset *d, rt_norm *nm);

/* One image of a batch as the draws of rt_data_batch chose it: its index
 * in the set, the crop's offsets into the image padded by `crop` (crop,
 * crop: no shift) and the flip. A backend that keeps the training set
 * (backend.h: set_dataset) makes the image itself from these. */
typedef struct rt_draw {
  int32_t idx;
  int16_t ox, oy;
  int32_t mirror;
} rt_draw;

/* The draws of rt_data_batch for idx[0..n), from rng in its order, into
 * out; rt_data_make then makes what rt_data_batch makes. */
void rt_data_draws(const int *idx, int n, int crop, int flip, rt_rng *rng, rt_draw *out);
void rt_data_make(const rt_dataset *d, const rt_draw *dr, int n, const rt_norm *nm, int crop,
                  float *out, ir_label *labels);
/* One image of rt_data_make: draw r's, normalised by nm, into dst
 * ([c][h][w]). */
void rt_data_image(const rt_dataset *d, rt_draw r, const rt_norm *nm, int crop, float *dst);
/* Whether a backend can keep d (backend.h: set_dataset) for an input
 * tensor t: a set in memory (not a folder), of t's shape, nm of its
 * channels, and a crop the draws can hold. */
int rt_data_keepable(const rt_dataset *d, const ir_tensor *t, const rt_norm *nm, int crop);
/* Asks the caches for the bytes draw r's image is made from, so that a
 * caller making several can have their misses in flight together. */
void rt_data_prefetch(const rt_dataset *d, rt_draw r);

/* Gathers images idx[0..n) into out ([n][c][h][w], normalised) and labels
 * into labels. crop > 0: random crop with zero padding of `crop` pixels
 * (zero in the normalised space, as torchvision pads before normalising
 * — i.e. the pad value is (0 - mean) / std); flip: random horizontal flip
 * with probability 1/2. Random draws come from rng in a fixed order, one
 * image after another, so the result depends only on the rng state. */
void rt_data_batch(const rt_dataset *d, const int *idx, int n,
                   const rt_norm *nm, int crop, int flip, rt_rng *rng,
                   float *out, ir_label *labels);

/* Batches of any data set, in a given order. For a folder, `threads`
 * workers decode, crop and resize up to `ahead` batches before they are
 * asked for, so memory stays at `ahead` batches whatever the set's size.
 * A folder's crop != 0 asks for the training crop, torchvision's
 * random-resized-crop (scale 0.08 to 1, aspect 3/4 to 4/3); crop 0 gives
 * the centre of the image resized to 8/7 of the input (256 for 224). An
 * image's draws depend only on the pass's seed and its place in the
 * order, so the batches do not depend on the thread count; threads 0
 * makes each batch on the caller's thread when asked for. Sets in memory
 * are made by rt_data_batch on the caller's thread, drawing from the
 * pass's rng as they go.
 *
 *   rt_stream *s = rt_stream_new(&train, &nm, 128, crop, flip, 2, 3, err, n);
 *   rt_stream_epoch(s, order, train.n, &rng);      // one draw from rng
 *   while ((rc = rt_stream_next(s, &x, &y, &b, err, n)) == 0) step(x, y, b);
 *   // rc 1: the epoch is over; -1: a bad file, named in err
 *   rt_stream_free(s);
 */
typedef struct rt_stream rt_stream;
rt_stream *rt_stream_new(const rt_dataset *d, const rt_norm *nm, int batch, int crop, int flip,
                         int threads, int ahead, char *err, size_t errlen);
/* Starts a pass over order[0..n) (NULL: 0..n-1 in turn); the rng is the
 * run's, drawn from as described above. */
void rt_stream_epoch(rt_stream *s, const int *order, int n, rt_rng *rng);
/* The next batch: *x and *y stay valid until the next call. 0, 1 at the
 * end of the pass, or -1 with a message naming the file. */
int rt_stream_next(rt_stream *s, const float **x, const ir_label **y, int *b, char *err,
                   size_t errlen);
/* The same for a set in memory, as draws (valid until the next call) for
 * a backend that keeps the set: the same rng draws, so that a run is the
 * same either way. */
int rt_stream_next_draws(rt_stream *s, const rt_draw **dr, const ir_label **y, int *b,
                         char *err, size_t errlen);
/* A data-parallel run (comm.h): each batch's part of this rank alone
 * (rt_comm_part of the batch's images) is made and handed out; the draws
 * of a set in memory are all taken, so that the ranks' rngs stay in step.
 * NULL: whole batches (the default). */
void rt_stream_part(rt_stream *s, const rt_comm *c);
/* Seconds the caller spent waiting in rt_stream_next, and the calls that
 * waited at all, since the stream began. */
double rt_stream_waited(const rt_stream *s, long *calls);
void rt_stream_free(rt_stream *s);

#endif
