// CPU kernels (OpenMP over output rows). Numbers: common.h / mirnet/sdk/ops/reference.py.
// Lookup tables hold exactly the values the scalar formulas give (they are built with them), so a
// table lookup is the same number, only cheaper: 8/16-bit inputs have few distinct values.
#include <atomic>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"
#include "kernels.h"

namespace mirnet {
namespace cpu {
namespace {

std::atomic<int> g_threads{0};
constexpr int64_t kParallelMin = 1 << 15;  // elements below which a kernel stays on one thread
// rows per OpenMP task: dynamic scheduling, so a thread preempted by another process (shared
// cores) delays only its current rows, not a static share of the image
constexpr int kRowsPerTask = 8;

int threads_for(int64_t work) {
#ifdef _OPENMP
    if (work < kParallelMin) return 1;
    const int n = g_threads.load();
    return n > 0 ? n : omp_get_max_threads();
#else
    (void)work;
    return 1;
#endif
}

std::vector<int64_t> reflect_table(int64_t n, int64_t padded) {
    std::vector<int64_t> t(static_cast<size_t>(padded));
    for (int64_t i = 0; i < padded; ++i) t[static_cast<size_t>(i)] = reflect(i, n);
    return t;
}

// ---------------------------------------------------------------- tables (built once, thread-safe)
template <typename TI> const uint16_t* f16_of_unit() {  // integer pixel -> half(to_unit(pixel))
    static const std::vector<uint16_t> t = [] {
        std::vector<uint16_t> v(size_t(1) << (8 * sizeof(TI)));
        for (size_t i = 0; i < v.size(); ++i) v[i] = f32_to_f16(to_unit(static_cast<TI>(i)));
        return v;
    }();
    return t.data();
}
template <typename TO> const TO* int_of_half() {  // half bits -> from_unit(half)
    static const std::vector<TO> t = [] {
        std::vector<TO> v(65536);
        for (size_t i = 0; i < v.size(); ++i) v[i] = from_unit<TO>(f16_to_f32(static_cast<uint16_t>(i)));
        return v;
    }();
    return t.data();
}
struct YuvTables {
    float y[256], rv[256], gu[256], gv[256], bu[256];
};
const YuvTables& yuv_tables() {
    static const YuvTables t = [] {
        YuvTables v;
        for (int i = 0; i < 256; ++i) {
            const float c = yuv_c(static_cast<uint8_t>(i));
            v.y[i] = yuv_y(static_cast<uint8_t>(i));
            v.rv[i] = fmul(kRV, c);
            v.gu[i] = fmul(kGU, c);
            v.gv[i] = fmul(kGV, c);
            v.bu[i] = fmul(kBU, c);
        }
        return v;
    }();
    return t;
}

// ---------------------------------------------------------------- value converters
struct UnitF32 {  // int pixel -> float32
    template <typename TI> float operator()(TI v) const { return to_unit(v); }
};
struct UnitF16 {  // int pixel -> half bits
    const uint16_t* lut;
    template <typename TI> uint16_t operator()(TI v) const { return lut[v]; }
};
template <typename TO> struct IntOfF32 {
    TO operator()(float v) const { return from_unit<TO>(v); }
};
template <typename TO> struct IntOfF16 {
    const TO* lut;
    TO operator()(uint16_t v) const { return lut[v]; }
};
inline void store(float* p, float v) { *p = v; }
inline void store(uint16_t* p, float v) { *p = f32_to_f16(v); }

// ---------------------------------------------------------------- preprocess
template <typename TI, typename TO, bool BGR, typename Conv>
void pre_impl(const TI* src, TO* dst, const PreArgs& a, Conv conv) {
    const std::vector<int64_t> cols = reflect_table(a.w, a.wp);
    const int64_t plane = a.hp * a.wp, rows = a.n * a.hp;
    constexpr int cr = BGR ? 2 : 0, cb = BGR ? 0 : 2;
#pragma omp parallel for schedule(dynamic, kRowsPerTask) num_threads(threads_for(rows * a.wp))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r / a.hp, y = r % a.hp;
        const TI* in = src + (b * a.h + reflect(y, a.h)) * a.w * 3;
        TO* o0 = dst + b * 3 * plane + y * a.wp;
        TO* o1 = o0 + plane;
        TO* o2 = o1 + plane;
        for (int64_t x = 0; x < a.w; ++x) {
            o0[x] = conv(in[3 * x + cr]);
            o1[x] = conv(in[3 * x + 1]);
            o2[x] = conv(in[3 * x + cb]);
        }
        for (int64_t x = a.w; x < a.wp; ++x) {
            const int64_t s = cols[static_cast<size_t>(x)];
            o0[x] = conv(in[3 * s + cr]);
            o1[x] = conv(in[3 * s + 1]);
            o2[x] = conv(in[3 * s + cb]);
        }
    }
}

template <typename TI, bool BGR> void pre_dispatch_out(const void* src, void* dst, const PreArgs& a) {
    const TI* s = static_cast<const TI*>(src);
    if (a.dst == DType::F32) {
        pre_impl<TI, float, BGR>(s, static_cast<float*>(dst), a, UnitF32{});
    } else {
        pre_impl<TI, uint16_t, BGR>(s, static_cast<uint16_t*>(dst), a, UnitF16{f16_of_unit<TI>()});
    }
}

// ---------------------------------------------------------------- postprocess
template <typename TI, typename TO, bool BGR, typename Conv>
void post_impl(const TI* src, TO* dst, const PostArgs& a, Conv conv) {
    const int64_t plane = a.h * a.w, rows = a.n * a.oh;
    constexpr int cr = BGR ? 2 : 0, cb = BGR ? 0 : 2;
#pragma omp parallel for schedule(dynamic, kRowsPerTask) num_threads(threads_for(rows * a.ow))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r / a.oh, y = r % a.oh;
        const TI* p0 = src + b * 3 * plane + y * a.w;
        const TI* p1 = p0 + plane;
        const TI* p2 = p1 + plane;
        TO* out = dst + r * a.ow * 3;
        for (int64_t x = 0; x < a.ow; ++x) {
            out[3 * x + cr] = conv(p0[x]);
            out[3 * x + 1] = conv(p1[x]);
            out[3 * x + cb] = conv(p2[x]);
        }
    }
}

template <typename TO, bool BGR> void post_dispatch_in(const void* src, void* dst, const PostArgs& a) {
    TO* d = static_cast<TO*>(dst);
    if (a.src == DType::F32) {
        post_impl<float, TO, BGR>(static_cast<const float*>(src), d, a, IntOfF32<TO>{});
    } else {
        post_impl<uint16_t, TO, BGR>(static_cast<const uint16_t*>(src), d, a, IntOfF16<TO>{int_of_half<TO>()});
    }
}

// ---------------------------------------------------------------- camera formats
// Fetch (Y, U, V) of pixel (sy, sx) of an unpadded frame; chroma shared by 2x2 (NV12) / 2x1 (YUYV).
struct Nv12 {
    static void fetch(const uint8_t* f, int64_t h, int64_t w, int64_t sy, int64_t sx, uint8_t& Y, uint8_t& U,
                      uint8_t& V) {
        Y = f[sy * w + sx];
        const uint8_t* uv = f + (h + sy / 2) * w + (sx & ~int64_t(1));
        U = uv[0];
        V = uv[1];
    }
};
struct Yuyv {
    static void fetch(const uint8_t* f, int64_t, int64_t w, int64_t sy, int64_t sx, uint8_t& Y, uint8_t& U,
                      uint8_t& V) {
        const uint8_t* row = f + sy * w * 2;
        Y = row[2 * sx];
        const uint8_t* pair = row + 4 * (sx >> 1);
        U = pair[1];
        V = pair[3];
    }
};

template <typename Fmt, typename TO> void yuv_impl(const uint8_t* src, TO* dst, const YuvArgs& a) {
    const std::vector<int64_t> cols = reflect_table(a.w, a.wp);
    const YuvTables& t = yuv_tables();
    const int64_t plane = a.hp * a.wp;
#pragma omp parallel for schedule(dynamic, kRowsPerTask) num_threads(threads_for(a.hp * a.wp))
    for (int64_t y = 0; y < a.hp; ++y) {
        const int64_t sy = reflect(y, a.h);
        TO* o0 = dst + y * a.wp;
        TO* o1 = o0 + plane;
        TO* o2 = o1 + plane;
        for (int64_t x = 0; x < a.wp; ++x) {
            uint8_t Y, U, V;
            Fmt::fetch(src, a.h, a.w, sy, cols[static_cast<size_t>(x)], Y, U, V);
            const float yy = t.y[Y];
            store(o0 + x, clamp01(fadd(yy, t.rv[V])));
            store(o1 + x, clamp01(fsub(fsub(yy, t.gu[U]), t.gv[V])));
            store(o2 + x, clamp01(fadd(yy, t.bu[U])));
        }
    }
}

template <typename Fmt> void yuv_dispatch(const uint8_t* src, void* dst, const YuvArgs& a) {
    if (a.dst == DType::F32) {
        yuv_impl<Fmt>(src, static_cast<float*>(dst), a);
    } else {
        yuv_impl<Fmt>(src, static_cast<uint16_t*>(dst), a);
    }
}

}  // namespace

// ---------------------------------------------------------------- public entry points
void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0); }

int num_threads() {
#ifdef _OPENMP
    const int n = g_threads.load();
    return n > 0 ? n : omp_get_max_threads();
#else
    return 1;
#endif
}

bool has_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

void preprocess(const void* src, void* dst, const PreArgs& a) {
    if (a.src == DType::U8) {
        a.bgr ? pre_dispatch_out<uint8_t, true>(src, dst, a) : pre_dispatch_out<uint8_t, false>(src, dst, a);
    } else {
        a.bgr ? pre_dispatch_out<uint16_t, true>(src, dst, a) : pre_dispatch_out<uint16_t, false>(src, dst, a);
    }
}

void postprocess(const void* src, void* dst, const PostArgs& a) {
    if (a.dst == DType::U8) {
        a.bgr ? post_dispatch_in<uint8_t, true>(src, dst, a) : post_dispatch_in<uint8_t, false>(src, dst, a);
    } else {
        a.bgr ? post_dispatch_in<uint16_t, true>(src, dst, a) : post_dispatch_in<uint16_t, false>(src, dst, a);
    }
}

void preprocess_nv12(const uint8_t* src, void* dst, const YuvArgs& a) { yuv_dispatch<Nv12>(src, dst, a); }
void preprocess_yuyv(const uint8_t* src, void* dst, const YuvArgs& a) { yuv_dispatch<Yuyv>(src, dst, a); }

// acc[:, :, y0:y0+th, x0:x0+tw] += out * weight;  wsum[y0:y0+th, x0:x0+tw] += weight
void tile_accumulate(float* acc, float* wsum, const float* out, const float* weight, const TileArgs& a) {
    const int64_t rows = a.n * a.c * a.th;
#pragma omp parallel for schedule(dynamic, kRowsPerTask) num_threads(threads_for(rows * a.tw))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t p = r / a.th, y = r % a.th;
        float* dst = acc + (p * a.H + a.y0 + y) * a.W + a.x0;
        const float* o = out + r * a.tw;
        const float* wt = weight + y * a.tw;
        for (int64_t x = 0; x < a.tw; ++x) dst[x] = fadd(dst[x], fmul(o[x], wt[x]));
    }
    for (int64_t y = 0; y < a.th; ++y) {
        float* dst = wsum + (a.y0 + y) * a.W + a.x0;
        const float* wt = weight + y * a.tw;
        for (int64_t x = 0; x < a.tw; ++x) dst[x] = fadd(dst[x], wt[x]);
    }
}

// acc[p] /= wsum for every (n, c) plane p
void tile_normalize(float* acc, const float* wsum, int64_t planes, int64_t h, int64_t w) {
    const int64_t rows = planes * h;
#pragma omp parallel for schedule(dynamic, kRowsPerTask) num_threads(threads_for(rows * w))
    for (int64_t r = 0; r < rows; ++r) {
        float* a = acc + r * w;
        const float* s = wsum + (r % h) * w;
        for (int64_t x = 0; x < w; ++x) a[x] = fdiv(a[x], s[x]);
    }
}

}  // namespace cpu
}  // namespace mirnet
