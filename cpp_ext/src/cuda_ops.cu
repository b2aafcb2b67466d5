// CUDA kernels: the same numbers as the CPU kernels and mirnet/sdk/ops/reference.py (common.h:
// __fmul_rn/__fadd_rn/__fdiv_rn, built with --fmad=false). One thread per output pixel along x,
// grid-stride loops along rows (y) and images/planes (z), so any size fits the grid limits.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common.h"
#include "kernels.h"

namespace mirnet {
namespace cuda {
namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear a sticky-free error so later calls start clean
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e) + " (" +
                                 cudaGetErrorName(e) + ")");
    }
}

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

constexpr int kBlockX = 32, kBlockY = 8;
constexpr int64_t kMaxGridYZ = 65535;

struct Launch {
    dim3 grid, block;
};
Launch launch_for(int64_t width, int64_t height, int64_t depth) {
    const int64_t gx = (width + kBlockX - 1) / kBlockX;
    const int64_t gy = std::min<int64_t>((height + kBlockY - 1) / kBlockY, kMaxGridYZ);
    const int64_t gz = std::min<int64_t>(depth, kMaxGridYZ);
    return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(gz)),
            dim3(kBlockX, kBlockY, 1)};
}

__device__ __forceinline__ int64_t gx() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t gy0() { return blockIdx.y * int64_t(blockDim.y) + threadIdx.y; }
__device__ __forceinline__ int64_t gys() { return int64_t(gridDim.y) * blockDim.y; }

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(uint16_t* p, float v) { *p = f32_to_f16(v); }
__device__ __forceinline__ float get(float v) { return v; }
__device__ __forceinline__ float get(uint16_t v) { return f16_to_f32(v); }

// ---------------------------------------------------------------- kernels
template <typename TI, typename TO, bool BGR>
__global__ void pre_kernel(const TI* __restrict__ src, TO* __restrict__ dst, PreArgs a) {
    const int64_t x = gx();
    if (x >= a.wp) return;
    const int64_t sx = reflect(x, a.w), plane = a.hp * a.wp;
    constexpr int cr = BGR ? 2 : 0, cb = BGR ? 0 : 2;
    for (int64_t b = blockIdx.z; b < a.n; b += gridDim.z) {
        for (int64_t y = gy0(); y < a.hp; y += gys()) {
            const TI* px = src + ((b * a.h + reflect(y, a.h)) * a.w + sx) * 3;
            TO* o = dst + (b * 3 * a.hp + y) * a.wp + x;
            put(o, to_unit(px[cr]));
            put(o + plane, to_unit(px[1]));
            put(o + 2 * plane, to_unit(px[cb]));
        }
    }
}

template <typename TI, typename TO, bool BGR>
__global__ void post_kernel(const TI* __restrict__ src, TO* __restrict__ dst, PostArgs a) {
    const int64_t x = gx();
    if (x >= a.ow) return;
    const int64_t plane = a.h * a.w;
    constexpr int cr = BGR ? 2 : 0, cb = BGR ? 0 : 2;
    for (int64_t b = blockIdx.z; b < a.n; b += gridDim.z) {
        for (int64_t y = gy0(); y < a.oh; y += gys()) {
            const TI* p = src + (b * 3 * a.h + y) * a.w + x;
            TO* o = dst + ((b * a.oh + y) * a.ow + x) * 3;
            o[cr] = from_unit<TO>(get(p[0]));
            o[1] = from_unit<TO>(get(p[plane]));
            o[cb] = from_unit<TO>(get(p[2 * plane]));
        }
    }
}

template <bool NV12, typename TO>
__global__ void yuv_kernel(const uint8_t* __restrict__ src, TO* __restrict__ dst, YuvArgs a) {
    const int64_t x = gx();
    if (x >= a.wp) return;
    const int64_t sx = reflect(x, a.w), plane = a.hp * a.wp;
    for (int64_t y = gy0(); y < a.hp; y += gys()) {
        const int64_t sy = reflect(y, a.h);
        uint8_t Y, U, V;
        if (NV12) {
            Y = src[sy * a.w + sx];
            const uint8_t* uv = src + (a.h + sy / 2) * a.w + (sx & ~int64_t(1));
            U = uv[0];
            V = uv[1];
        } else {
            const uint8_t* row = src + sy * a.w * 2;
            Y = row[2 * sx];
            U = row[4 * (sx >> 1) + 1];
            V = row[4 * (sx >> 1) + 3];
        }
        float r, g, b;
        yuv_to_rgb(Y, U, V, r, g, b);
        TO* o = dst + y * a.wp + x;
        put(o, r);
        put(o + plane, g);
        put(o + 2 * plane, b);
    }
}

__global__ void tile_acc_kernel(float* __restrict__ acc, float* __restrict__ wsum, const float* __restrict__ out,
                                const float* __restrict__ weight, TileArgs a) {
    const int64_t x = gx();
    if (x >= a.tw) return;
    for (int64_t p = blockIdx.z; p < a.n * a.c; p += gridDim.z) {
        for (int64_t y = gy0(); y < a.th; y += gys()) {
            const float wt = weight[y * a.tw + x];
            float* d = acc + (p * a.H + a.y0 + y) * a.W + a.x0 + x;
            *d = fadd(*d, fmul(out[(p * a.th + y) * a.tw + x], wt));
            if (p == 0) {
                float* s = wsum + (a.y0 + y) * a.W + a.x0 + x;
                *s = fadd(*s, wt);
            }
        }
    }
}

__global__ void tile_norm_kernel(float* __restrict__ acc, const float* __restrict__ wsum, int64_t planes, int64_t h,
                                 int64_t w) {
    const int64_t x = gx();
    if (x >= w) return;
    for (int64_t p = blockIdx.z; p < planes; p += gridDim.z) {
        for (int64_t y = gy0(); y < h; y += gys()) {
            float* d = acc + (p * h + y) * w + x;
            *d = fdiv(*d, wsum[y * w + x]);
        }
    }
}

// ---------------------------------------------------------------- typed launchers
template <typename TI, typename TO, bool BGR>
void pre_launch(std::uintptr_t src, std::uintptr_t dst, const PreArgs& a, cudaStream_t s) {
    const Launch l = launch_for(a.wp, a.hp, a.n);
    pre_kernel<TI, TO, BGR><<<l.grid, l.block, 0, s>>>(reinterpret_cast<const TI*>(src), reinterpret_cast<TO*>(dst), a);
}
template <typename TI, typename TO>
void pre_order(std::uintptr_t src, std::uintptr_t dst, const PreArgs& a, cudaStream_t s) {
    a.bgr ? pre_launch<TI, TO, true>(src, dst, a, s) : pre_launch<TI, TO, false>(src, dst, a, s);
}
template <typename TI> void pre_out(std::uintptr_t src, std::uintptr_t dst, const PreArgs& a, cudaStream_t s) {
    a.dst == DType::F32 ? pre_order<TI, float>(src, dst, a, s) : pre_order<TI, uint16_t>(src, dst, a, s);
}

template <typename TI, typename TO, bool BGR>
void post_launch(std::uintptr_t src, std::uintptr_t dst, const PostArgs& a, cudaStream_t s) {
    const Launch l = launch_for(a.ow, a.oh, a.n);
    post_kernel<TI, TO, BGR><<<l.grid, l.block, 0, s>>>(reinterpret_cast<const TI*>(src), reinterpret_cast<TO*>(dst), a);
}
template <typename TI, typename TO>
void post_order(std::uintptr_t src, std::uintptr_t dst, const PostArgs& a, cudaStream_t s) {
    a.bgr ? post_launch<TI, TO, true>(src, dst, a, s) : post_launch<TI, TO, false>(src, dst, a, s);
}
template <typename TO> void post_in(std::uintptr_t src, std::uintptr_t dst, const PostArgs& a, cudaStream_t s) {
    a.src == DType::F32 ? post_order<float, TO>(src, dst, a, s) : post_order<uint16_t, TO>(src, dst, a, s);
}

template <bool NV12> void yuv_launch(std::uintptr_t src, std::uintptr_t dst, const YuvArgs& a, cudaStream_t s) {
    const Launch l = launch_for(a.wp, a.hp, 1);
    const auto* in = reinterpret_cast<const uint8_t*>(src);
    if (a.dst == DType::F32) {
        yuv_kernel<NV12, float><<<l.grid, l.block, 0, s>>>(in, reinterpret_cast<float*>(dst), a);
    } else {
        yuv_kernel<NV12, uint16_t><<<l.grid, l.block, 0, s>>>(in, reinterpret_cast<uint16_t*>(dst), a);
    }
}

}  // namespace

// ---------------------------------------------------------------- entry points (kernels.h)
void preprocess(std::uintptr_t src, std::uintptr_t dst, const PreArgs& a, std::uintptr_t stream) {
    a.src == DType::U8 ? pre_out<uint8_t>(src, dst, a, as_stream(stream))
                       : pre_out<uint16_t>(src, dst, a, as_stream(stream));
    check(cudaGetLastError(), "preprocess kernel launch");
}

void postprocess(std::uintptr_t src, std::uintptr_t dst, const PostArgs& a, std::uintptr_t stream) {
    a.dst == DType::U8 ? post_in<uint8_t>(src, dst, a, as_stream(stream))
                       : post_in<uint16_t>(src, dst, a, as_stream(stream));
    check(cudaGetLastError(), "postprocess kernel launch");
}

void preprocess_nv12(std::uintptr_t src, std::uintptr_t dst, const YuvArgs& a, std::uintptr_t stream) {
    yuv_launch<true>(src, dst, a, as_stream(stream));
    check(cudaGetLastError(), "preprocess_nv12 kernel launch");
}

void preprocess_yuyv(std::uintptr_t src, std::uintptr_t dst, const YuvArgs& a, std::uintptr_t stream) {
    yuv_launch<false>(src, dst, a, as_stream(stream));
    check(cudaGetLastError(), "preprocess_yuyv kernel launch");
}

void tile_accumulate(std::uintptr_t acc, std::uintptr_t wsum, std::uintptr_t out, std::uintptr_t weight,
                     const TileArgs& a, std::uintptr_t stream) {
    const Launch l = launch_for(a.tw, a.th, a.n * a.c);
    tile_acc_kernel<<<l.grid, l.block, 0, as_stream(stream)>>>(
        reinterpret_cast<float*>(acc), reinterpret_cast<float*>(wsum), reinterpret_cast<const float*>(out),
        reinterpret_cast<const float*>(weight), a);
    check(cudaGetLastError(), "tile_accumulate kernel launch");
}

void tile_normalize(std::uintptr_t acc, std::uintptr_t wsum, int64_t planes, int64_t h, int64_t w,
                    std::uintptr_t stream) {
    const Launch l = launch_for(w, h, planes);
    tile_norm_kernel<<<l.grid, l.block, 0, as_stream(stream)>>>(reinterpret_cast<float*>(acc),
                                                                reinterpret_cast<const float*>(wsum), planes, h, w);
    check(cudaGetLastError(), "tile_normalize kernel launch");
}

std::uintptr_t malloc_device(std::size_t nbytes) {
    void* p = nullptr;
    check(cudaMalloc(&p, nbytes), "cudaMalloc");
    return reinterpret_cast<std::uintptr_t>(p);
}

void free_device(std::uintptr_t ptr) noexcept {
    if (ptr) {
        cudaFree(reinterpret_cast<void*>(ptr));
        cudaGetLastError();
    }
}

void copy_to_device(std::uintptr_t dst, const void* src, std::size_t nbytes) {
    check(cudaMemcpy(reinterpret_cast<void*>(dst), src, nbytes, cudaMemcpyHostToDevice), "copy to device");
}

void copy_to_host(void* dst, std::uintptr_t src, std::size_t nbytes) {
    check(cudaMemcpy(dst, reinterpret_cast<const void*>(src), nbytes, cudaMemcpyDeviceToHost), "copy to host");
}

void synchronize(std::uintptr_t stream) {
    if (stream == 0) {
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    } else {
        check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize");
    }
}

int device_count(std::string* why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
        return 0;
    }
    if (n == 0 && why) *why = "no CUDA device found";
    return n;
}

std::string device_name(int device) {
    cudaDeviceProp prop;
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return prop.name;
}

int runtime_version() {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
}

int driver_version() {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return v;
}

}  // namespace cuda
}  // namespace mirnet
