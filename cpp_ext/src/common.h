// Scalar building blocks shared by the CPU (OpenMP) and CUDA kernels.
//
// The numbers are defined by the NumPy reference, mirnet/sdk/ops/reference.py: IEEE float32,
// round-to-nearest-even, every operation rounded separately (no fused multiply-add). Host code is
// compiled with -ffp-contract=off and without -ffast-math; device code uses the explicit
// __fmul_rn/__fadd_rn/__fdiv_rn intrinsics (and nvcc --fmad=false as a second guard).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define MN_HD __host__ __device__ __forceinline__
#else
#define MN_HD inline
#endif

namespace mirnet {

// ---------------------------------------------------------------- float32 arithmetic, one rounding each
MN_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
MN_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
MN_HD float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, -b);
#else
    return a - b;
#endif
}
MN_HD float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
// fmin(fmax(x, 0), 1) with NaN -> 0 (a comparison with NaN is false).
MN_HD float clamp01(float x) {
    x = x > 0.0f ? x : 0.0f;
    return x < 1.0f ? x : 1.0f;
}

// ---------------------------------------------------------------- constants (float32 roundings of doubles,
// exactly as np.float32(<python float>) in the reference)
constexpr float kInv255 = static_cast<float>(1.0 / 255.0);
constexpr float kInv65535 = static_cast<float>(1.0 / 65535.0);
constexpr float kHalf = 0.5f;
// BT.601 limited range (reference.py, module docstring)
constexpr float kYOffset = 16.0f, kCOffset = 128.0f, kYRange = 219.0f, kCRange = 224.0f;
constexpr float kRV = static_cast<float>(1.402);
constexpr float kGU = static_cast<float>(0.344136286);
constexpr float kGV = static_cast<float>(0.714136286);
constexpr float kBU = static_cast<float>(1.772);

template <typename T> struct IntTraits;
template <> struct IntTraits<uint8_t> {
    static constexpr float inv = kInv255;
    static constexpr float scale = 255.0f;
};
template <> struct IntTraits<uint16_t> {
    static constexpr float inv = kInv65535;
    static constexpr float scale = 65535.0f;
};

// ---------------------------------------------------------------- float16 <-> float32 (bit exact, RNE)
MN_HD uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
MN_HD float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// float32 -> IEEE half bits, round to nearest even (same as numpy's astype(float16) for non-NaN).
MN_HD uint16_t f32_to_f16(float f) {
    uint32_t x = f2u(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    uint32_t o;
    if (x >= 0x47800000u) {                       // >= 65536 (always overflows), inf or NaN
        o = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (x < 0x38800000u) {                 // < 2^-14: half subnormal or zero
        // adding 0.5 aligns the half subnormal grid with float's last mantissa bit; the float
        // addition does the round-to-nearest-even (needs no flush-to-zero, i.e. no fast-math)
        const float magic = u2f(126u << 23);
        o = f2u(fadd(u2f(x), magic)) - (126u << 23);
    } else {                                      // normal half (or rounds up to inf)
        const uint32_t odd = (x >> 13) & 1u;
        x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
        o = x >> 13;
    }
    return static_cast<uint16_t>(sign | o);
}

// IEEE half bits -> float32 (exact).
MN_HD float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        bits = sign | f2u(static_cast<float>(man) * 5.9604644775390625e-08f);  // man * 2^-24, exact
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    return u2f(bits);
}

// ---------------------------------------------------------------- per-value conversions
// integer pixel -> [0,1] float32: float32(x) * float32(1/S)
template <typename TI> MN_HD float to_unit(TI v) { return fmul(static_cast<float>(v), IntTraits<TI>::inv); }

// [0,1] float32 -> integer: floor(clamp01(x) * S + 0.5). The sum is >= 0.5, so truncation is floor.
template <typename TO> MN_HD TO from_unit(float x) {
    return static_cast<TO>(static_cast<int32_t>(fadd(fmul(clamp01(x), IntTraits<TO>::scale), kHalf)));
}

// Reflect index (BORDER_REFLECT_101, periodic for pads longer than the axis): reference.reflect_indices.
MN_HD int64_t reflect(int64_t i, int64_t n) {
    if (n == 1) return 0;
    const int64_t period = 2 * (n - 1);
    i %= period;
    return i < n ? i : period - i;
}

// One BT.601 limited-range sample -> clipped RGB (reference._yuv_to_rgb).
MN_HD float yuv_y(uint8_t y) { return fdiv(fsub(static_cast<float>(y), kYOffset), kYRange); }
MN_HD float yuv_c(uint8_t c) { return fdiv(fsub(static_cast<float>(c), kCOffset), kCRange); }
MN_HD void yuv_to_rgb(uint8_t Y, uint8_t U, uint8_t V, float& r, float& g, float& b) {
    const float y = yuv_y(Y), u = yuv_c(U), v = yuv_c(V);
    r = clamp01(fadd(y, fmul(kRV, v)));
    g = clamp01(fsub(fsub(y, fmul(kGU, u)), fmul(kGV, v)));
    b = clamp01(fadd(y, fmul(kBU, u)));
}

}  // namespace mirnet
