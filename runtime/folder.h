/* folder.h: image folders (ImageNet's layout), private to the runtime;
 * data.h is their public face (RT_DATA_FOLDER, rt_stream).
 *
 * Opening a folder lists its class sub-folders and files, sorted, and
 * checks every file's header and end on a few threads; nothing is decoded
 * until a stream asks for an image. An rt_fwork is one thread's decoder
 * and buffers.
 *
 *   rt_fwork *w = rt_fwork_new();
 *   rt_folder_image(&train, w, i, &nm, 1, 1, seed, out, &label, err, n);
 *   rt_fwork_free(w);
 */
#ifndef ILNAS_RT_FOLDER_H
#define ILNAS_RT_FOLDER_H

#include "data.h"

typedef struct rt_fwork rt_fwork;

int rt_folder_open(const rt_data_opts *o, rt_dataset *train, rt_dataset *test, char *err,
                   size_t errlen);
void rt_folder_free(struct rt_folder *f);
const char *rt_folder_class(const struct rt_folder *f, int k);
void rt_folder_truncate(rt_dataset *d, int n);
void rt_folder_norm(const rt_dataset *d, rt_norm *nm);

rt_fwork *rt_fwork_new(void); /* NULL when out of memory */
void rt_fwork_free(rt_fwork *w);

/* Image i of d into out (c*h*w, normalised) and its label: train 1 gives
 * a random-resized-crop and, with flip, a random mirror, drawn from seed;
 * train 0 the centre crop. A bad file is an error naming it, or with
 * 'skip bad' is reported once and the next good image in the folder takes
 * its place. 0 or -1. Safe on many threads, each with its own w. */
int rt_folder_image(const rt_dataset *d, rt_fwork *w, int i, const rt_norm *nm, int train,
                    int flip, uint64_t seed, float *out, ir_label *label, char *err,
                    size_t errlen);

/* Each of `planes` ih x iw float planes resampled to oh x ow with PIL's
 * bilinear filter (antialiased when shrinking): the folders' resampling,
 * for 'data ... resize' on data sets in memory. 0, or -1 out of memory. */
int rt_resize_planes(const float *src, int planes, int ih, int iw, float *dst, int oh, int ow);

#endif
