// Kernel entry points on raw pointers, with no Python or CUDA types: the CPU versions
// (cpu_ops.cpp, OpenMP) and the CUDA versions (cuda_ops.cu). bindings.cpp validates arguments,
// releases the GIL and calls these. All arrays are C-contiguous.
//
// Layouts: images (N,H,W,3) uint8/uint16; tensors (N,3,H,W) float32/float16 (half as uint16 bits);
// NV12 (H*3/2, W) uint8; YUYV (H, W, 2) uint8; tiles: acc (N,C,H,W), wsum (H,W), out (N,C,th,tw),
// weight (th,tw), all float32. acc /= wsum broadcasts wsum (H,W) over the N*C planes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mirnet {

enum class DType { U8, U16, F32, F16 };

inline std::size_t dtype_size(DType t) { return t == DType::U8 ? 1 : (t == DType::F32 ? 4 : 2); }
inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::U8: return "uint8";
        case DType::U16: return "uint16";
        case DType::F32: return "float32";
        default: return "float16";
    }
}

struct PreArgs {       // (n,h,w,3) int image -> (n,3,hp,wp) float tensor
    int64_t n, h, w, hp, wp;
    DType src, dst;    // src U8|U16, dst F32|F16
    bool bgr;
};
struct PostArgs {      // (n,3,h,w) float tensor -> (n,oh,ow,3) int image
    int64_t n, h, w, oh, ow;
    DType src, dst;    // src F32|F16, dst U8|U16
    bool bgr;
};
struct YuvArgs {       // NV12 (h*3/2,w) or YUYV (h,w,2) uint8 -> (1,3,hp,wp) float tensor
    int64_t h, w, hp, wp;
    DType dst;
};
struct TileArgs {      // acc (n,c,H,W) += out (n,c,th,tw) * weight at (y0,x0); wsum += weight
    int64_t n, c, H, W, th, tw, y0, x0;
};

namespace cpu {
void set_num_threads(int n);   // <= 0: OpenMP default
int num_threads();
bool has_openmp();
void preprocess(const void* src, void* dst, const PreArgs& a);
void postprocess(const void* src, void* dst, const PostArgs& a);
void preprocess_nv12(const uint8_t* src, void* dst, const YuvArgs& a);
void preprocess_yuyv(const uint8_t* src, void* dst, const YuvArgs& a);
void tile_accumulate(float* acc, float* wsum, const float* out, const float* weight, const TileArgs& a);
void tile_normalize(float* acc, const float* wsum, int64_t planes, int64_t h, int64_t w);
}  // namespace cpu

#ifdef MIRNET_WITH_CUDA
namespace cuda {
// Device-pointer forms: enqueue on `stream` (a cudaStream_t as an integer; 0 = legacy default
// stream) and return without synchronising. Errors (launch, invalid pointer) throw
// std::runtime_error with cudaGetErrorString.
void preprocess(std::uintptr_t src, std::uintptr_t dst, const PreArgs& a, std::uintptr_t stream);
void postprocess(std::uintptr_t src, std::uintptr_t dst, const PostArgs& a, std::uintptr_t stream);
void preprocess_nv12(std::uintptr_t src, std::uintptr_t dst, const YuvArgs& a, std::uintptr_t stream);
void preprocess_yuyv(std::uintptr_t src, std::uintptr_t dst, const YuvArgs& a, std::uintptr_t stream);
void tile_accumulate(std::uintptr_t acc, std::uintptr_t wsum, std::uintptr_t out, std::uintptr_t weight,
                     const TileArgs& a, std::uintptr_t stream);
void tile_normalize(std::uintptr_t acc, std::uintptr_t wsum, int64_t planes, int64_t h, int64_t w,
                    std::uintptr_t stream);

// Host memory helpers (synchronous) used by the host-array forms and by CudaBuffer.
std::uintptr_t malloc_device(std::size_t nbytes);
void free_device(std::uintptr_t ptr) noexcept;
void copy_to_device(std::uintptr_t dst, const void* src, std::size_t nbytes);
void copy_to_host(void* dst, std::uintptr_t src, std::size_t nbytes);
void synchronize(std::uintptr_t stream);   // stream 0: whole device

// Status without throwing: device count (0 when there is no device or driver) and, when it is 0,
// the runtime's reason.
int device_count(std::string* why);
std::string device_name(int device);
int runtime_version();
int driver_version();
}  // namespace cuda
#endif

}  // namespace mirnet
