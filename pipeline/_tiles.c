/* Compiled kernel of the frame analysis (pipeline/luma.py, diff.py): one pass over a source
 * luma plane that finds the tiles differing from the previous plane and recomputes only their
 * analysis pixels, change marks and cell means.
 *
 * Why C: per frame the analysis may add little CPU over decoding (issue 6), and numpy spends
 * most of it in call overhead on small bands. Why plain C with the buffer protocol: no numpy
 * headers, no JIT runtime, nothing to load (numba cost every process 110 MB; bench/RESULTS.md).
 * The numpy path in luma.py / diff.py stays the reference; tests compare the two exactly.
 *
 * The source is whole groups of p source pixels making q analysis pixels per axis (1280 -> 960:
 * 4 -> 3), each analysis pixel an integer-weighted sum of its group's pixels. A tile is a whole
 * number of groups on each axis and of cells (cell x cell analysis pixels), so tiles never
 * share an analysis pixel or a cell (frame edges aside, where both are cut short).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define OUT_OF_LINE __attribute__((noinline))
#define RESTRICT __restrict__
#elif defined(_MSC_VER)
#define OUT_OF_LINE __declspec(noinline)
#define RESTRICT __restrict
#else
#define OUT_OF_LINE
#define RESTRICT
#endif

#define MAX_P 16
#define MAX_TILE_CELL_ROWS 64

typedef struct {
    int n;
    int offset[MAX_P];
    int weight[MAX_P];
} taps_t;

/* group weights (p x q, int64, C order) -> per output pixel j of a group, its non-zero taps */
static int read_plan(Py_buffer *group, int p, int q, taps_t *plan)
{
    const int64_t *w = (const int64_t *)group->buf;
    if (p < 1 || p > MAX_P || q < 1 || q > p || group->len != (Py_ssize_t)(p * q * sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "group weights do not match p x q");
        return -1;
    }
    for (int j = 0; j < q; j++) {
        int64_t total = 0;
        plan[j].n = 0;
        for (int t = 0; t < p; t++) {
            int64_t v = w[t * q + j];
            if (v) {
                plan[j].offset[plan[j].n] = t;
                plan[j].weight[plan[j].n] = (int)v;
                plan[j].n++;
                total += v < 0 ? -(int64_t)MAX_P * MAX_P : v;  /* a negative weight fails the sum */
            }
        }
        if (total != p) {
            PyErr_SetString(PyExc_ValueError, "group weights must be p per analysis pixel");
            return -1;
        }
    }
    return 0;
}

static inline Py_ssize_t min_n(Py_ssize_t a, Py_ssize_t b) { return a < b ? a : b; }

static int check_2d(Py_buffer *b, Py_ssize_t itemsize, const char *what)
{
    if (b->ndim != 2 || b->itemsize != itemsize || b->strides[1] != itemsize || b->strides[0] < b->shape[1] * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must be a 2-D array with contiguous rows", what);
        return -1;
    }
    return 0;
}

/* Half to even, as numpy's rint of the float32 mean (exact: the area is a power of two). */
static inline uint8_t cell_mean(uint32_t sum, uint32_t area)
{
    uint32_t q = sum / area, r = sum % area;
    if (2 * r > area || (2 * r == area && (q & 1)))
        q++;
    return (uint8_t)q;
}

/* Every ratio worth groups here has at most two taps per analysis pixel on an axis (4 -> 3,
 * 2 -> 1; 1 -> 1 is padded with a zero weight): those loops have a fixed shape, the common
 * groups a fixed size too. Anything else takes the general loop. */
static int pad_to_two(taps_t *plan, int q)
{
    for (int j = 0; j < q; j++)
        if (plan[j].n > 2)
            return 0;
    for (int j = 0; j < q; j++)
        if (plan[j].n == 1) {
            plan[j].offset[1] = plan[j].offset[0];
            plan[j].weight[1] = 0;
            plan[j].n = 2;
        }
    return 1;
}

/* The area weights of 4 -> 3 (1280 -> 960, 1440 -> 1080...) and 2 -> 1 (1920 -> 960) as
 * constants: the loops compile to a few instructions per pixel. Kept out of line so their
 * registers are their own. */
static const int AREA_4_3[3][2][2] = {{{0, 3}, {1, 1}}, {{1, 2}, {2, 2}}, {{2, 1}, {3, 3}}};  /* (offset, weight) */

static int is_area_4_3(const taps_t *plan)
{
    for (int i = 0; i < 3; i++)
        for (int n = 0; n < 2; n++)
            if (plan[i].offset[n] != AREA_4_3[i][n][0] || plan[i].weight[n] != AREA_4_3[i][n][1])
                return 0;
    return 1;
}

static int is_area_2_1(const taps_t *plan)
{
    return plan[0].offset[0] == 0 && plan[0].weight[0] == 1 && plan[0].offset[1] == 1 && plan[0].weight[1] == 1;
}

OUT_OF_LINE static void across_area_4_3(const uint8_t *RESTRICT row, uint32_t *RESTRICT out, Py_ssize_t groups)
{
    for (Py_ssize_t k = 0; k < groups; k++, row += 4, out += 3) {
        const uint32_t r0 = row[0], r1 = row[1], r2 = row[2], r3 = row[3];
        out[0] = 3 * r0 + r1;
        out[1] = 2 * (r1 + r2);
        out[2] = r2 + 3 * r3;
    }
}

OUT_OF_LINE static void across_area_2_1(const uint8_t *RESTRICT row, uint32_t *RESTRICT out, Py_ssize_t groups)
{
    for (Py_ssize_t k = 0; k < groups; k++)
        out[k] = (uint32_t)row[2 * k] + row[2 * k + 1];
}

static void across(const uint8_t *row, uint32_t *out, Py_ssize_t groups, int p, int q, const taps_t *plan,
                   int kind)
{
    if (kind == 43) {
        across_area_4_3(row, out, groups);
        return;
    }
    if (kind == 21) {
        across_area_2_1(row, out, groups);
        return;
    }
    for (Py_ssize_t k = 0; k < groups; k++, row += p, out += q)
        for (int i = 0; i < q; i++) {
            uint32_t s = 0;
            for (int n = 0; n < plan[i].n; n++)
                s += (uint32_t)plan[i].weight[n] * row[plan[i].offset[n]];
            out[i] = s;
        }
}

/* One analysis row of a tile from the horizontal sums of its group's source rows: the gray
 * level, a mark where it moved by more than noise, the picture updated. Returns whether any moved. */
OUT_OF_LINE static int down(const uint32_t *RESTRICT hsum, int stride, const taps_t *tap, int two_taps,
                            const uint8_t *RESTRICT lut, uint8_t *RESTRICT picture, uint8_t *RESTRICT marks,
                            Py_ssize_t width, int noise)
{
    int moved = 0;
    if (two_taps) {
        const uint32_t *RESTRICT h0 = hsum + (size_t)tap->offset[0] * stride;
        const uint32_t *RESTRICT h1 = hsum + (size_t)tap->offset[1] * stride;
        const uint32_t w0 = (uint32_t)tap->weight[0], w1 = (uint32_t)tap->weight[1];
        for (Py_ssize_t x = 0; x < width; x++) {
            const int v = lut[w0 * h0[x] + w1 * h1[x]], old = picture[x];
            const int m = (v > old ? v - old : old - v) > noise;
            marks[x] |= (uint8_t)m;
            moved |= m;
            picture[x] = (uint8_t)v;
        }
        return moved;
    }
    for (Py_ssize_t x = 0; x < width; x++) {
        uint32_t s = 0;
        for (int n = 0; n < tap->n; n++)
            s += (uint32_t)tap->weight[n] * hsum[(size_t)tap->offset[n] * stride + x];
        const int v = lut[s], old = picture[x];
        const int m = (v > old ? v - old : old - v) > noise;
        marks[x] |= (uint8_t)m;
        moved |= m;
        picture[x] = (uint8_t)v;
    }
    return moved;
}

typedef struct {
    Py_ssize_t flat;
    int value;
} drift_t;

static int by_cell(const void *a, const void *b)
{
    const Py_ssize_t x = ((const drift_t *)a)->flat, y = ((const drift_t *)b)->flat;
    return (x > y) - (x < y);
}

/* The sum of a cell's analysis pixels and whether any is marked, rows y0..y1 (exclusive) and
 * columns x0..x1. cell_of_8: a whole 8-pixel-wide cell, a row at a time as one 64-bit word
 * (the bytes summed in 16-bit lanes: 8 rows of 8 bytes stay under 2^16 per lane and in all). */
static inline uint32_t cell_any(const Py_buffer *pic, const Py_buffer *changed, Py_ssize_t y0, Py_ssize_t y1,
                                Py_ssize_t x0, Py_ssize_t x1, int *marked)
{
    uint32_t sum = 0;
    uint8_t any = 0;
    for (Py_ssize_t y = y0; y < y1; y++) {
        const uint8_t *prow = (const uint8_t *)pic->buf + y * pic->strides[0];
        const uint8_t *mrow = (const uint8_t *)changed->buf + y * changed->strides[0];
        for (Py_ssize_t x = x0; x < x1; x++) {
            sum += prow[x];
            any |= mrow[x];
        }
    }
    *marked = any != 0;
    return sum;
}

static inline uint32_t cell_of_8(const Py_buffer *pic, const Py_buffer *changed, Py_ssize_t y0, Py_ssize_t y1,
                                 Py_ssize_t x0, int *marked)
{
    const uint64_t low_bytes = 0x00FF00FF00FF00FFull;
    uint64_t lanes = 0, any = 0;
    for (Py_ssize_t y = y0; y < y1; y++) {
        uint64_t p, m;
        memcpy(&p, (const uint8_t *)pic->buf + y * pic->strides[0] + x0, 8);
        memcpy(&m, (const uint8_t *)changed->buf + y * changed->strides[0] + x0, 8);
        lanes += (p & low_bytes) + ((p >> 8) & low_bytes);
        any |= m;
    }
    *marked = any != 0;
    return (uint32_t)((lanes * 0x0001000100010001ull) >> 48);
}

static PyObject *update_tiles(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer src = {0}, prev = {0}, pic = {0}, changed = {0}, cell_marks = {0}, means = {0}, recorded = {0}, gy = {0},
              gx = {0}, lut = {0};
    int py, qy, px, qx, tile_gy, tile_gx, cell, noise, drift_level;
    PyObject *params, *result = NULL;
    uint32_t *hsum = NULL;
    uint8_t *dirty = NULL;
    drift_t *drifted = NULL;

    PyObject *objs[7];
    if (!PyArg_ParseTuple(args, "O!OOOOOOOii", &PyTuple_Type, &params, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6], &noise, &drift_level))
        return NULL;
    if (!PyArg_ParseTuple(params, "y*y*y*iiiiiii", &gy, &gx, &lut, &py, &qy, &px, &qx, &tile_gy, &tile_gx, &cell))
        return NULL;
    /* strided views: a decoder's plane has padded rows */
    Py_buffer *arrays[7] = {&src, &prev, &pic, &changed, &cell_marks, &means, &recorded};
    for (int i = 0; i < 7; i++)
        if (PyObject_GetBuffer(objs[i], arrays[i], PyBUF_STRIDES | PyBUF_FORMAT | (i >= 2 ? PyBUF_WRITABLE : 0)) < 0)
            goto done;

    taps_t plan_y[MAX_P], plan_x[MAX_P];
    if (read_plan(&gy, py, qy, plan_y) < 0 || read_plan(&gx, px, qx, plan_x) < 0)
        goto done;
    const int two_taps = pad_to_two(plan_y, qy) & pad_to_two(plan_x, qx);
    const int kind_x = !two_taps                                     ? 0
                       : px == 4 && qx == 3 && is_area_4_3(plan_x) ? 43
                       : px == 2 && qx == 1 && is_area_2_1(plan_x) ? 21
                                                                   : 0;
    if (check_2d(&src, 1, "source") < 0 || check_2d(&prev, 1, "previous") < 0 || check_2d(&pic, 1, "picture") < 0
        || check_2d(&changed, 1, "changed") < 0 || check_2d(&cell_marks, 1, "cell marks") < 0
        || check_2d(&means, 1, "means") < 0
        || check_2d(&recorded, 1, "recorded") < 0)
        goto done;
    const Py_ssize_t sh = src.shape[0], sw = src.shape[1], ah = pic.shape[0], aw = pic.shape[1];
    const Py_ssize_t ch = means.shape[0], cw = means.shape[1];
    if (cell < 1 || cell > 16 || (cell & (cell - 1)) || tile_gy < 1 || tile_gx < 1 || (tile_gy * qy) % cell
        || tile_gy * qy / cell > MAX_TILE_CELL_ROWS
        || (tile_gx * qx) % cell || prev.shape[0] != sh || prev.shape[1] != sw || sh % py || sw % px
        || ah != sh / py * qy || aw != sw / px * qx || changed.shape[0] != ah || changed.shape[1] != aw
        || ch != (ah + cell - 1) / cell || cw != (aw + cell - 1) / cell || recorded.shape[0] != ch
        || recorded.shape[1] != cw || cell_marks.shape[0] != ch || cell_marks.shape[1] != cw) {
        PyErr_SetString(PyExc_ValueError, "array shapes do not match the groups and tiles");
        goto done;
    }
    if (lut.len < (Py_ssize_t)(255 * py * px + 1)) {
        PyErr_SetString(PyExc_ValueError, "the lookup table is too short for the group area");
        goto done;
    }
    const uint8_t *lut_p = (const uint8_t *)lut.buf;
    const Py_ssize_t ss = src.strides[0], ps = prev.strides[0], as = pic.strides[0], cs = changed.strides[0],
                     ms = means.strides[0], rs = recorded.strides[0], ks = cell_marks.strides[0];
    const int tile_sw = tile_gx * px;  /* source pixels per tile row */
    const int tile_aw = tile_gx * qx;  /* analysis pixels per tile row */
    hsum = PyMem_Malloc(sizeof(uint32_t) * (size_t)py * (size_t)tile_aw);
    Py_ssize_t drift_room = 64, n_drifted = 0;  /* grown without the GIL: PyMem_Raw */
    drifted = PyMem_RawMalloc(sizeof(drift_t) * (size_t)drift_room);
    if (!hsum || !drifted) {
        PyErr_NoMemory();
        goto done;
    }

    /* which groups of source rows differ, per tile column, and so which tiles: rows in memory
     * order (a tile's rows are a frame width apart), a whole row compared at once first: most
     * rows of a screen recording did not change. Codec noise often touches one macroblock row
     * of a tile: only the groups that differ are rescaled, only the cells they feed summed. */
    const Py_ssize_t tiles_x = (sw + tile_sw - 1) / tile_sw, n_groups = sh / py;
    dirty = PyMem_Calloc((size_t)(n_groups * tiles_x), 1);  /* per group of source rows and tile column */
    if (!dirty) {
        PyErr_NoMemory();
        goto done;
    }
    int any = 0, moved = 0, out_of_memory = 0, rows_differ = 0;
    Py_ssize_t cy0 = ch, cy1 = 0, cx0 = cw, cx1 = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0, y = 0; g < n_groups; g++) {
        uint8_t *flags = dirty + g * tiles_x;
        for (int t = 0; t < py; t++, y++) {
            const uint8_t *a = (const uint8_t *)src.buf + y * ss, *b = (const uint8_t *)prev.buf + y * ps;
            if (memcmp(a, b, (size_t)sw) == 0)
                continue;
            rows_differ = 1;
            for (Py_ssize_t tx = 0, x0 = 0; tx < tiles_x; tx++, x0 += tile_sw)
                if (!flags[tx] && memcmp(a + x0, b + x0, (size_t)(min_n(x0 + tile_sw, sw) - x0)) != 0)
                    flags[tx] = 1;
        }
    }
    if (!rows_differ)  /* an identical frame (2 in 5 of a terminal session): no tile to visit */
        goto released;
    const Py_ssize_t tile_ah = (Py_ssize_t)tile_gy * qy, tile_cell_rows = tile_ah / cell;
    for (Py_ssize_t g0 = 0; g0 < n_groups; g0 += tile_gy) {
        const Py_ssize_t g1 = min_n(g0 + tile_gy, n_groups);
        if (!memchr(dirty + g0 * tiles_x, 1, (size_t)((g1 - g0) * tiles_x)))  /* no group of the tile row differs */
            continue;
        /* the tile row's analysis rows and cell rows: whole cells, the frame's last row aside */
        const Py_ssize_t ay0 = g0 * qy, ay1 = g1 * qy, cr0 = ay0 / cell, cr1 = (ay1 + cell - 1) / cell;
        for (Py_ssize_t tx = 0, sx0 = 0; tx < tiles_x; tx++, sx0 += tile_sw) {
            const Py_ssize_t sx1 = min_n(sx0 + tile_sw, sw);
            /* the analysis pixels of the tile's groups that differ */
            const Py_ssize_t ax0 = tx * tile_aw, ax1 = sx1 / px * qx;
            const Py_ssize_t groups_x = (sx1 - sx0) / px;
            uint8_t cell_rows[MAX_TILE_CELL_ROWS];  /* the tile's cell rows those groups feed */
            int differs = 0;
            for (Py_ssize_t g = g0; g < g1; g++) {
                if (!dirty[g * tiles_x + tx])
                    continue;
                if (!differs) {
                    memset(cell_rows, 0, (size_t)tile_cell_rows);
                    differs = 1;
                }
                for (Py_ssize_t r = (g * qy) / cell; r <= (g * qy + qy - 1) / cell; r++)
                    cell_rows[r - cr0] = 1;
                for (int t = 0; t < py; t++)  /* each source row of the group, summed across */
                    across((const uint8_t *)src.buf + (g * py + t) * ss + sx0, hsum + (size_t)t * tile_aw, groups_x,
                           px, qx, plan_x, kind_x);
                for (int j = 0; j < qy; j++)  /* ...then down */
                    moved |= down(hsum, tile_aw, &plan_y[j], two_taps, lut_p, (uint8_t *)pic.buf + (g * qy + j) * as + ax0,
                                  (uint8_t *)changed.buf + (g * qy + j) * cs + ax0, ax1 - ax0, noise);
            }
            if (!differs)
                continue;
            any = 1;
            /* the tile's cells (whole cells: the tile is cell-aligned; an edge cell sums what it has) */
            const Py_ssize_t cc0 = ax0 / cell, cc1 = (ax1 + cell - 1) / cell;
            for (Py_ssize_t cy = cr0; cy < cr1; cy++) {
                if (!cell_rows[cy - cr0])
                    continue;
                const Py_ssize_t ye = min_n((cy + 1) * cell, ah);
                for (Py_ssize_t cx = cc0; cx < cc1; cx++) {
                    const Py_ssize_t xs = cx * cell, xe = min_n(xs + cell, aw);
                    uint32_t sum;
                    int marked;
                    if (cell == 8 && xe - xs == 8)
                        sum = cell_of_8(&pic, &changed, cy * cell, ye, xs, &marked);
                    else
                        sum = cell_any(&pic, &changed, cy * cell, ye, xs, xe, &marked);
                    if (marked)
                        ((uint8_t *)cell_marks.buf)[cy * ks + cx] = 1;
                    const uint8_t mean = cell_mean(sum, (uint32_t)(cell * cell));
                    ((uint8_t *)means.buf)[cy * ms + cx] = mean;
                    /* a cell whose mean moved more than drift_level since last recorded (a fade) */
                    uint8_t *then = (uint8_t *)recorded.buf + cy * rs + cx;
                    if ((mean > *then ? mean - *then : *then - mean) > drift_level) {
                        *then = mean;
                        if (n_drifted == drift_room) {
                            drift_t *more = PyMem_RawRealloc(drifted, sizeof(drift_t) * (size_t)(2 * drift_room));
                            if (!more) {
                                out_of_memory = 1;
                                goto released;
                            }
                            drifted = more;
                            drift_room *= 2;
                        }
                        drifted[n_drifted].flat = cy * cw + cx;
                        drifted[n_drifted].value = mean;
                        n_drifted++;
                    }
                }
            }
            if (cr0 < cy0) cy0 = cr0;
            if (cr1 > cy1) cy1 = cr1;
            if (cc0 < cx0) cx0 = cc0;
            if (cc1 > cx1) cx1 = cc1;
        }
    }
    qsort(drifted, (size_t)n_drifted, sizeof(drift_t), by_cell);  /* in cell order, as numpy's nonzero */
released:
    Py_END_ALLOW_THREADS
    if (out_of_memory) {
        PyErr_NoMemory();
        goto done;
    }
    if (!any) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *drift = PyTuple_New(n_drifted);
    if (!drift)
        goto done;
    for (Py_ssize_t i = 0; i < n_drifted; i++) {
        PyObject *pair = Py_BuildValue("(ni)", drifted[i].flat, drifted[i].value);
        if (!pair) {
            Py_DECREF(drift);
            goto done;
        }
        PyTuple_SET_ITEM(drift, i, pair);
    }
    result = Py_BuildValue("O(nnnn)N", moved ? Py_True : Py_False, cy0, cy1, cx0, cx1, drift);

done:
    PyMem_Free(hsum);
    PyMem_Free(dirty);
    PyMem_RawFree(drifted);
    Py_buffer *all[] = {&src, &prev, &pic, &changed, &cell_marks, &means, &recorded, &gy, &gx, &lut};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i]->obj)
            PyBuffer_Release(all[i]);
    return result;
}

/* 8-connected components of the marked cells of a block, numbered in raster order of their
 * first cell (as scipy.ndimage.label numbers them), and for each the box and number of its
 * marked pixels in its own cells. Replaces scipy's label and find_objects and a dozen numpy
 * calls per blob: on a frame where something moved, that was most of the diff's Python. */
static PyObject *blobs(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer changed = {0}, cell_marks = {0}, means = {0};
    PyObject *objs[3], *result = NULL;
    Py_ssize_t cy0, cy1, cx0, cx1;
    int cell;
    int32_t *label = NULL, *stack = NULL, *order = NULL, *start = NULL;
    if (!PyArg_ParseTuple(args, "OOOnnnni", &objs[0], &objs[1], &objs[2], &cy0, &cy1, &cx0, &cx1, &cell))
        return NULL;
    Py_buffer *arrays[3] = {&changed, &cell_marks, &means};
    for (int i = 0; i < 3; i++)
        if (PyObject_GetBuffer(objs[i], arrays[i], PyBUF_STRIDES | PyBUF_FORMAT | (i < 2 ? PyBUF_WRITABLE : 0)) < 0)
            goto done;
    if (check_2d(&changed, 1, "changed") < 0 || check_2d(&cell_marks, 1, "cell marks") < 0
        || check_2d(&means, 1, "means") < 0)
        goto done;
    const Py_ssize_t ah = changed.shape[0], aw = changed.shape[1], ch = cell_marks.shape[0], cw = cell_marks.shape[1];
    if (cell < 1 || ch != (ah + cell - 1) / cell || cw != (aw + cell - 1) / cell || means.shape[0] != ch
        || means.shape[1] != cw || cy0 < 0 || cx0 < 0 || cy1 > ch || cx1 > cw || cy0 > cy1 || cx0 > cx1) {
        PyErr_SetString(PyExc_ValueError, "array shapes do not match the cells and block");
        goto done;
    }
    const Py_ssize_t bh = cy1 - cy0, bw = cx1 - cx0, n = bh * bw, cs = changed.strides[0], ks = cell_marks.strides[0],
                     ms = means.strides[0];
    uint8_t *marks = (uint8_t *)cell_marks.buf, *pixels = (uint8_t *)changed.buf;
    label = PyMem_Calloc((size_t)n + 1, sizeof(int32_t));
    stack = PyMem_Malloc(sizeof(int32_t) * ((size_t)n + 1));
    order = PyMem_Malloc(sizeof(int32_t) * ((size_t)n + 1));
    start = PyMem_Calloc((size_t)n + 2, sizeof(int32_t));
    if (!label || !stack || !order || !start) {
        PyErr_NoMemory();
        goto done;
    }
    int32_t labels = 0;
    for (Py_ssize_t i = 0; i < n; i++) {  /* flood fill from each unlabelled marked cell, in raster order */
        if (label[i] || !marks[(cy0 + i / bw) * ks + cx0 + i % bw])
            continue;
        label[i] = ++labels;
        Py_ssize_t top = 0;
        stack[top++] = (int32_t)i;
        while (top) {
            const Py_ssize_t c = stack[--top], y = c / bw, x = c % bw;
            for (Py_ssize_t ny = y - 1; ny <= y + 1; ny++)
                for (Py_ssize_t nx = x - 1; nx <= x + 1; nx++) {
                    if (ny < 0 || ny >= bh || nx < 0 || nx >= bw || label[ny * bw + nx]
                        || !marks[(cy0 + ny) * ks + cx0 + nx])
                        continue;
                    label[ny * bw + nx] = labels;
                    stack[top++] = (int32_t)(ny * bw + nx);
                }
        }
    }
    /* each label's cells in raster order: a counting sort */
    for (Py_ssize_t i = 0; i < n; i++)
        if (label[i])
            start[label[i] + 1]++;
    for (int32_t l = 1; l <= labels; l++)
        start[l + 1] += start[l];
    for (Py_ssize_t i = 0; i < n; i++)
        if (label[i])
            order[start[label[i]]++] = (int32_t)i;
    result = PyList_New(0);
    if (!result)
        goto done;
    Py_ssize_t first = 0;
    for (int32_t l = 1; l <= labels; l++) {
        const Py_ssize_t last = start[l];  /* advanced past this label's cells by the fill above */
        Py_ssize_t x0 = aw, y0 = ah, x1 = -1, y1 = -1, count = 0;
        for (Py_ssize_t k = first; k < last; k++) {
            const Py_ssize_t cy = cy0 + order[k] / bw, cx = cx0 + order[k] % bw;
            const Py_ssize_t ye = min_n((cy + 1) * cell, ah), xe = min_n((cx + 1) * cell, aw);
            for (Py_ssize_t y = cy * cell; y < ye; y++) {
                const uint8_t *row = pixels + y * cs;
                for (Py_ssize_t x = cx * cell; x < xe; x++)
                    if (row[x]) {
                        count++;
                        if (x < x0) x0 = x;
                        if (x > x1) x1 = x;
                        if (y < y0) y0 = y;
                        if (y > y1) y1 = y;
                    }
            }
        }
        if (count) {
            PyObject *cells = PyTuple_New(last - first), *values = PyTuple_New(last - first), *blob = NULL;
            if (cells && values) {
                for (Py_ssize_t k = first; k < last; k++) {
                    const Py_ssize_t cy = cy0 + order[k] / bw, cx = cx0 + order[k] % bw;
                    PyTuple_SET_ITEM(cells, k - first, PyLong_FromSsize_t(cy * cw + cx));
                    PyTuple_SET_ITEM(values, k - first, PyLong_FromLong(((uint8_t *)means.buf)[cy * ms + cx]));
                }
                blob = Py_BuildValue("(nnnnnOO)", x0, y0, x1 + 1, y1 + 1, count, cells, values);
            }
            Py_XDECREF(cells);
            Py_XDECREF(values);
            if (!blob || PyList_Append(result, blob) < 0) {
                Py_XDECREF(blob);
                Py_CLEAR(result);
                goto done;
            }
            Py_DECREF(blob);
        }
        first = last;
    }
    /* clear the block's marks for the next frame */
    for (Py_ssize_t cy = cy0; cy < cy1; cy++)
        memset(marks + cy * ks + cx0, 0, (size_t)bw);
    const Py_ssize_t px0 = cx0 * cell, px1 = min_n(cx1 * cell, aw), py1 = min_n(cy1 * cell, ah);
    for (Py_ssize_t y = cy0 * cell; y < py1; y++)
        memset(pixels + y * cs + px0, 0, (size_t)(px1 - px0));

done:
    PyMem_Free(label);
    PyMem_Free(stack);
    PyMem_Free(order);
    PyMem_Free(start);
    for (int i = 0; i < 3; i++)
        if (arrays[i]->obj)
            PyBuffer_Release(arrays[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"update_tiles", update_tiles, METH_VARARGS,
     "update_tiles(params, source, previous, picture, changed, cell_marks, means, recorded, noise, drift) -> None | "
     "(moved, (cy0, cy1, cx0, cx1), drifted)\n\n"
     "params = (group_y, group_x, lut, py, qy, px, qx, tile_gy, tile_gx, cell). Recompute the analysis pixels, "
     "change marks of pixels and of cells (set, never cleared) and cell means of the tiles where source differs "
     "from previous. None when no tile does; else whether any analysis pixel moved by more than noise, the block of cells around the tiles "
     "that differ, and ((cell, mean), ...) for their cells whose mean moved more than drift from recorded "
     "(updated), in cell order."},
    {"blobs", blobs, METH_VARARGS,
     "blobs(changed, cell_marks, means, cy0, cy1, cx0, cx1, cell) -> [(x0, y0, x1, y1, pixels, cells, means), ...]\n\n"
     "The 8-connected groups of marked cells in the block cell_marks[cy0:cy1, cx0:cx1], in raster order of their "
     "first cell (as scipy.ndimage.label numbers them); for each, the box (x1, y1 exclusive) and number of the "
     "marked pixels of changed in its own cells, its cells (flat indexes of the whole grid, in raster order) and "
     "their means. Groups without a marked pixel are left out. Clears both marks in the block."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tiles", "Compiled kernel of the frame analysis.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__tiles(void) { return PyModule_Create(&module); }
