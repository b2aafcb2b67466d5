// pybind11 module mirnet.sdk._ext: argument validation (ValueError/TypeError naming the bad
// value), GIL release around every kernel, dispatch to the CPU (cpu_ops.cpp) and CUDA (cuda_ops.cu)
// kernels. The Python layer (mirnet.sdk.ops) turns ValueError/TypeError into InputError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels.h"

namespace py = pybind11;
using mirnet::DType;

namespace {

constexpr int64_t kMaxMultiple = 1 << 16;

// ---------------------------------------------------------------- validation helpers
std::string shape_str(const py::array& a) { return py::str(a.attr("shape")); }
std::string dtype_str(const py::array& a) { return py::str(a.dtype()); }
std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

py::array as_array(py::handle obj, const char* name) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
    }
    return py::reinterpret_borrow<py::array>(obj);
}

// dtype of an array among the four the kernels know ("uint8" etc. are native byte order only).
bool array_dtype(const py::array& a, DType* out) {
    const std::string s = dtype_str(a);
    if (s == "uint8") *out = DType::U8;
    else if (s == "uint16") *out = DType::U16;
    else if (s == "float32") *out = DType::F32;
    else if (s == "float16") *out = DType::F16;
    else return false;
    return true;
}

DType array_dtype_in(const py::array& a, const char* name, DType x, DType y) {
    DType t;
    if (!array_dtype(a, &t) || (t != x && t != y)) {
        throw py::value_error(std::string(name) + " dtype must be " + mirnet::dtype_name(x) + " or " +
                              mirnet::dtype_name(y) + ", got " + dtype_str(a));
    }
    return t;
}

// A dtype argument (np.float32, "float16", np.dtype(...)) that must be x or y.
DType dtype_arg(py::handle spec, const char* name, DType x, DType y) {
    const std::string s = py::str(py::dtype::from_args(py::reinterpret_borrow<py::object>(spec)));
    for (DType t : {x, y}) {
        if (s == mirnet::dtype_name(t)) return t;
    }
    throw py::value_error(std::string(name) + " must be " + mirnet::dtype_name(x) + " or " + mirnet::dtype_name(y) +
                          ", got " + s);
}

void require_contiguous(const py::array& a, const char* name) {
    if (!(a.flags() & py::array::c_style)) {
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray), got strides " +
                              std::string(py::str(a.attr("strides"))) + " for shape " + shape_str(a));
    }
}

void require_writeable(const py::array& a, const char* name) {
    if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable (it is updated in place)");
}

void require_nonempty(const py::array& a, const char* name) {
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (a.shape(i) == 0) throw py::value_error(std::string(name) + " must not be empty, got shape " + shape_str(a));
    }
}

bool parse_order(const std::string& order) {
    if (order == "bgr") return true;
    if (order == "rgb") return false;
    throw py::value_error("order must be one of ('bgr', 'rgb'), got '" + order + "'");
}

int64_t padded(int64_t n, int64_t multiple) {
    if (multiple < 1 || multiple > kMaxMultiple) {
        throw py::value_error("multiple must be in [1, " + std::to_string(kMaxMultiple) + "], got " +
                              std::to_string(multiple));
    }
    return (n + multiple - 1) / multiple * multiple;
}

[[maybe_unused]] void require_positive(std::initializer_list<std::pair<const char*, int64_t>> values) {
    for (const auto& kv : values) {
        if (kv.second < 1) throw py::value_error(std::string(kv.first) + " must be >= 1, got " + std::to_string(kv.second));
    }
}

std::pair<int64_t, int64_t> parse_hw(py::handle obj, const char* name, int64_t h, int64_t w) {
    const auto bad = [&] {
        return py::type_error(std::string(name) + " must be a (h, w) pair of ints, got " + std::string(py::repr(obj)));
    };
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::len(obj) != 2) throw bad();
    std::pair<int64_t, int64_t> hw;
    try {
        const auto seq = py::reinterpret_borrow<py::sequence>(obj);
        hw = {seq[0].cast<int64_t>(), seq[1].cast<int64_t>()};
    } catch (const py::cast_error&) {
        throw bad();
    }
    if (hw.first < 1 || hw.first > h || hw.second < 1 || hw.second > w) {
        throw py::value_error(std::string(name) + " must satisfy 1 <= (h, w) <= (" + std::to_string(h) + ", " +
                              std::to_string(w) + "), got " + std::string(py::repr(obj)));
    }
    return hw;
}

py::array new_array(DType t, std::vector<py::ssize_t> shape) { return py::array(py::dtype(mirnet::dtype_name(t)), shape); }

// ---------------------------------------------------------------- argument parsing per op
struct Pre {
    py::array img;
    mirnet::PreArgs a;
};
Pre parse_pre(py::handle obj, const std::string& order, int64_t multiple, py::handle dtype) {
    Pre p{as_array(obj, "img"), {}};
    const py::array& img = p.img;
    if ((img.ndim() != 3 && img.ndim() != 4) || img.shape(img.ndim() - 1) != 3) {
        throw py::value_error("img must be a (H,W,3) or (N,H,W,3) uint8/uint16 array, got shape " + shape_str(img));
    }
    require_nonempty(img, "img");
    mirnet::PreArgs& a = p.a;
    a.src = array_dtype_in(img, "img", DType::U8, DType::U16);
    require_contiguous(img, "img");
    a.bgr = parse_order(order);
    a.dst = dtype_arg(dtype, "dtype", DType::F32, DType::F16);
    const int k = img.ndim() == 4 ? 1 : 0;
    a.n = k ? img.shape(0) : 1;
    a.h = img.shape(k);
    a.w = img.shape(k + 1);
    a.hp = padded(a.h, multiple);
    a.wp = padded(a.w, multiple);
    return p;
}

struct Post {
    py::array t;
    mirnet::PostArgs a;
};
Post parse_post(py::handle obj, py::handle out_hw, const std::string& order, py::handle out_dtype) {
    Post p{as_array(obj, "t"), {}};
    const py::array& t = p.t;
    if ((t.ndim() != 3 && t.ndim() != 4) || t.shape(t.ndim() - 3) != 3) {
        throw py::value_error("t must be a (3,H,W) or (N,3,H,W) float32/float16 array, got shape " + shape_str(t));
    }
    require_nonempty(t, "t");
    mirnet::PostArgs& a = p.a;
    a.src = array_dtype_in(t, "t", DType::F32, DType::F16);
    require_contiguous(t, "t");
    a.bgr = parse_order(order);
    a.dst = dtype_arg(out_dtype, "out_dtype", DType::U8, DType::U16);
    const int k = t.ndim() == 4 ? 1 : 0;
    a.n = k ? t.shape(0) : 1;
    a.h = t.shape(k + 1);
    a.w = t.shape(k + 2);
    std::tie(a.oh, a.ow) = parse_hw(out_hw, "out_hw", a.h, a.w);
    return p;
}

struct Yuv {
    py::array frame;
    mirnet::YuvArgs a;
};
Yuv parse_nv12(py::handle obj, int64_t multiple, py::handle dtype) {
    Yuv p{as_array(obj, "frame"), {}};
    const py::array& f = p.frame;
    DType t;
    if (f.ndim() != 2 || !array_dtype(f, &t) || t != DType::U8 || f.shape(0) == 0 || f.shape(0) % 3 != 0 ||
        f.shape(1) == 0 || f.shape(1) % 2 != 0) {
        throw py::value_error(
            "nv12 frame must be a (H*3/2, W) uint8 array (Y plane, then interleaved UV rows) with H and W even and "
            ">= 2, got shape " + shape_str(f) + " dtype " + dtype_str(f));
    }
    require_contiguous(f, "frame");
    p.a.h = f.shape(0) / 3 * 2;
    p.a.w = f.shape(1);
    p.a.hp = padded(p.a.h, multiple);
    p.a.wp = padded(p.a.w, multiple);
    p.a.dst = dtype_arg(dtype, "dtype", DType::F32, DType::F16);
    return p;
}
Yuv parse_yuyv(py::handle obj, int64_t multiple, py::handle dtype) {
    Yuv p{as_array(obj, "frame"), {}};
    const py::array& f = p.frame;
    DType t;
    if (f.ndim() != 3 || f.shape(2) != 2 || !array_dtype(f, &t) || t != DType::U8 || f.shape(0) == 0 ||
        f.shape(1) == 0 || f.shape(1) % 2 != 0) {
        throw py::value_error(
            "yuyv frame must be a (H, W, 2) uint8 array (bytes Y0 U Y1 V per pixel pair) with W even and >= 2, "
            "got shape " + shape_str(f) + " dtype " + dtype_str(f));
    }
    require_contiguous(f, "frame");
    p.a.h = f.shape(0);
    p.a.w = f.shape(1);
    p.a.hp = padded(p.a.h, multiple);
    p.a.wp = padded(p.a.w, multiple);
    p.a.dst = dtype_arg(dtype, "dtype", DType::F32, DType::F16);
    return p;
}

py::array require_f32(py::handle obj, const char* name, int ndim, bool writeable) {
    py::array a = as_array(obj, name);
    if (a.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                              shape_str(a));
    }
    DType t;
    if (!array_dtype(a, &t) || t != DType::F32) {
        throw py::value_error(std::string(name) + " dtype must be float32, got " + dtype_str(a));
    }
    require_nonempty(a, name);
    require_contiguous(a, name);
    if (writeable) require_writeable(a, name);
    return a;
}

struct Tile {
    py::array acc, wsum, out, weight;
    mirnet::TileArgs a;
};
Tile parse_tile(py::handle acc, py::handle wsum, py::handle out, py::handle weight, int64_t y0, int64_t x0) {
    Tile p{require_f32(acc, "acc", 4, true), require_f32(wsum, "wsum", 2, true), require_f32(out, "out", 4, false),
           require_f32(weight, "weight", 2, false), {}};
    mirnet::TileArgs& a = p.a;
    a.n = p.acc.shape(0);
    a.c = p.acc.shape(1);
    a.H = p.acc.shape(2);
    a.W = p.acc.shape(3);
    a.th = p.out.shape(2);
    a.tw = p.out.shape(3);
    a.y0 = y0;
    a.x0 = x0;
    if (p.wsum.shape(0) != a.H || p.wsum.shape(1) != a.W) {
        throw py::value_error("wsum shape must be acc's (H, W) = (" + std::to_string(a.H) + ", " + std::to_string(a.W) +
                              "), got " + shape_str(p.wsum));
    }
    if (p.out.shape(0) != a.n || p.out.shape(1) != a.c) {
        throw py::value_error("out must be (" + std::to_string(a.n) + ", " + std::to_string(a.c) +
                              ", th, tw) like acc, got shape " + shape_str(p.out));
    }
    if (p.weight.shape(0) != a.th || p.weight.shape(1) != a.tw) {
        throw py::value_error("weight shape must be out's (th, tw) = (" + std::to_string(a.th) + ", " +
                              std::to_string(a.tw) + "), got " + shape_str(p.weight));
    }
    if (y0 < 0 || x0 < 0 || y0 + a.th > a.H || x0 + a.tw > a.W) {
        throw py::value_error("tile at (y0, x0) = (" + std::to_string(y0) + ", " + std::to_string(x0) + ") of size (" +
                              std::to_string(a.th) + ", " + std::to_string(a.tw) + ") exceeds acc's (H, W) = (" +
                              std::to_string(a.H) + ", " + std::to_string(a.W) + ")");
    }
    return p;
}

void check_wsum(const py::array& acc, const py::array& wsum) {
    if (wsum.shape(0) != acc.shape(2) || wsum.shape(1) != acc.shape(3)) {
        throw py::value_error("wsum shape must be acc's (H, W) = (" + std::to_string(acc.shape(2)) + ", " +
                              std::to_string(acc.shape(3)) + "), got " + shape_str(wsum));
    }
}

// ---------------------------------------------------------------- CPU functions
py::array preprocess(py::handle img, const std::string& order, int64_t multiple, py::handle dtype) {
    Pre p = parse_pre(img, order, multiple, dtype);
    py::array out = new_array(p.a.dst, {p.a.n, 3, p.a.hp, p.a.wp});
    const void* src = p.img.data();
    void* dst = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        mirnet::cpu::preprocess(src, dst, p.a);
    }
    return out;
}

py::array postprocess(py::handle t, py::handle out_hw, const std::string& order, py::handle out_dtype) {
    Post p = parse_post(t, out_hw, order, out_dtype);
    py::array out = new_array(p.a.dst, {p.a.n, p.a.oh, p.a.ow, 3});
    const void* src = p.t.data();
    void* dst = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        mirnet::cpu::postprocess(src, dst, p.a);
    }
    return out;
}

template <bool NV12> py::array preprocess_yuv(py::handle frame, int64_t multiple, py::handle dtype) {
    Yuv p = NV12 ? parse_nv12(frame, multiple, dtype) : parse_yuyv(frame, multiple, dtype);
    py::array out = new_array(p.a.dst, {1, 3, p.a.hp, p.a.wp});
    const auto* src = static_cast<const uint8_t*>(p.frame.data());
    void* dst = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        NV12 ? mirnet::cpu::preprocess_nv12(src, dst, p.a) : mirnet::cpu::preprocess_yuyv(src, dst, p.a);
    }
    return out;
}

void tile_accumulate(py::handle acc, py::handle wsum, py::handle out, py::handle weight, int64_t y0, int64_t x0) {
    Tile p = parse_tile(acc, wsum, out, weight, y0, x0);
    auto* pa = static_cast<float*>(p.acc.mutable_data());
    auto* pw = static_cast<float*>(p.wsum.mutable_data());
    const auto* po = static_cast<const float*>(p.out.data());
    const auto* pwt = static_cast<const float*>(p.weight.data());
    py::gil_scoped_release nogil;
    mirnet::cpu::tile_accumulate(pa, pw, po, pwt, p.a);
}

void tile_normalize(py::handle acc_obj, py::handle wsum_obj) {
    py::array acc = require_f32(acc_obj, "acc", 4, true), wsum = require_f32(wsum_obj, "wsum", 2, false);
    check_wsum(acc, wsum);
    const int64_t planes = acc.shape(0) * acc.shape(1), h = acc.shape(2), w = acc.shape(3);
    auto* pa = static_cast<float*>(acc.mutable_data());
    const auto* pw = static_cast<const float*>(wsum.data());
    py::gil_scoped_release nogil;
    mirnet::cpu::tile_normalize(pa, pw, planes, h, w);
}

// ---------------------------------------------------------------- CUDA
bool cuda_available() {
#ifdef MIRNET_WITH_CUDA
    return mirnet::cuda::device_count(nullptr) > 0;
#else
    return false;
#endif
}

py::dict cuda_info() {
    py::dict d;
    d["has_cuda_kernels"] = false;
    d["available"] = false;
#ifdef MIRNET_WITH_CUDA
    std::string why;
    const int n = mirnet::cuda::device_count(&why);
    d["has_cuda_kernels"] = true;
    d["available"] = n > 0;
    d["device_count"] = n;
    d["error"] = why;
    d["runtime_version"] = mirnet::cuda::runtime_version();
    d["driver_version"] = mirnet::cuda::driver_version();
    py::list names;
    for (int i = 0; i < n; ++i) names.append(mirnet::cuda::device_name(i));
    d["devices"] = names;
    d["archs"] = MIRNET_CUDA_ARCHS;
#else
    d["error"] = "mirnet.sdk._ext was built without CUDA kernels";
#endif
    return d;
}

#ifdef MIRNET_WITH_CUDA
namespace cu = mirnet::cuda;

// Device memory owned for the duration of one host-array call.
class DeviceMem {
  public:
    explicit DeviceMem(std::size_t nbytes) : ptr_(cu::malloc_device(nbytes)) {}
    ~DeviceMem() { cu::free_device(ptr_); }
    DeviceMem(const DeviceMem&) = delete;
    DeviceMem& operator=(const DeviceMem&) = delete;
    std::uintptr_t get() const { return ptr_; }

  private:
    std::uintptr_t ptr_;
};

std::size_t nbytes(const py::array& a) { return static_cast<std::size_t>(a.nbytes()); }

py::array cuda_preprocess(py::handle img, const std::string& order, int64_t multiple, py::handle dtype) {
    Pre p = parse_pre(img, order, multiple, dtype);
    py::array out = new_array(p.a.dst, {p.a.n, 3, p.a.hp, p.a.wp});
    const void* src = p.img.data();
    void* dst = out.mutable_data();
    const std::size_t in_bytes = nbytes(p.img), out_bytes = nbytes(out);
    {
        py::gil_scoped_release nogil;
        DeviceMem d_in(in_bytes), d_out(out_bytes);
        cu::copy_to_device(d_in.get(), src, in_bytes);
        cu::preprocess(d_in.get(), d_out.get(), p.a, 0);
        cu::copy_to_host(dst, d_out.get(), out_bytes);
    }
    return out;
}

py::array cuda_postprocess(py::handle t, py::handle out_hw, const std::string& order, py::handle out_dtype) {
    Post p = parse_post(t, out_hw, order, out_dtype);
    py::array out = new_array(p.a.dst, {p.a.n, p.a.oh, p.a.ow, 3});
    const void* src = p.t.data();
    void* dst = out.mutable_data();
    const std::size_t in_bytes = nbytes(p.t), out_bytes = nbytes(out);
    {
        py::gil_scoped_release nogil;
        DeviceMem d_in(in_bytes), d_out(out_bytes);
        cu::copy_to_device(d_in.get(), src, in_bytes);
        cu::postprocess(d_in.get(), d_out.get(), p.a, 0);
        cu::copy_to_host(dst, d_out.get(), out_bytes);
    }
    return out;
}

template <bool NV12> py::array cuda_preprocess_yuv(py::handle frame, int64_t multiple, py::handle dtype) {
    Yuv p = NV12 ? parse_nv12(frame, multiple, dtype) : parse_yuyv(frame, multiple, dtype);
    py::array out = new_array(p.a.dst, {1, 3, p.a.hp, p.a.wp});
    const void* src = p.frame.data();
    void* dst = out.mutable_data();
    const std::size_t in_bytes = nbytes(p.frame), out_bytes = nbytes(out);
    {
        py::gil_scoped_release nogil;
        DeviceMem d_in(in_bytes), d_out(out_bytes);
        cu::copy_to_device(d_in.get(), src, in_bytes);
        NV12 ? cu::preprocess_nv12(d_in.get(), d_out.get(), p.a, 0) : cu::preprocess_yuyv(d_in.get(), d_out.get(), p.a, 0);
        cu::copy_to_host(dst, d_out.get(), out_bytes);
    }
    return out;
}

void cuda_tile_accumulate(py::handle acc, py::handle wsum, py::handle out, py::handle weight, int64_t y0, int64_t x0) {
    Tile p = parse_tile(acc, wsum, out, weight, y0, x0);
    void* pa = p.acc.mutable_data();
    void* pw = p.wsum.mutable_data();
    const void* po = p.out.data();
    const void* pwt = p.weight.data();
    const std::size_t ba = nbytes(p.acc), bw = nbytes(p.wsum), bo = nbytes(p.out), bwt = nbytes(p.weight);
    py::gil_scoped_release nogil;
    DeviceMem d_acc(ba), d_wsum(bw), d_out(bo), d_wt(bwt);
    cu::copy_to_device(d_acc.get(), pa, ba);
    cu::copy_to_device(d_wsum.get(), pw, bw);
    cu::copy_to_device(d_out.get(), po, bo);
    cu::copy_to_device(d_wt.get(), pwt, bwt);
    cu::tile_accumulate(d_acc.get(), d_wsum.get(), d_out.get(), d_wt.get(), p.a, 0);
    cu::copy_to_host(pa, d_acc.get(), ba);
    cu::copy_to_host(pw, d_wsum.get(), bw);
}

void cuda_tile_normalize(py::handle acc_obj, py::handle wsum_obj) {
    py::array acc = require_f32(acc_obj, "acc", 4, true), wsum = require_f32(wsum_obj, "wsum", 2, false);
    check_wsum(acc, wsum);
    const int64_t planes = acc.shape(0) * acc.shape(1), h = acc.shape(2), w = acc.shape(3);
    void* pa = acc.mutable_data();
    const void* pw = wsum.data();
    const std::size_t ba = nbytes(acc), bw = nbytes(wsum);
    py::gil_scoped_release nogil;
    DeviceMem d_acc(ba), d_wsum(bw);
    cu::copy_to_device(d_acc.get(), pa, ba);
    cu::copy_to_device(d_wsum.get(), pw, bw);
    cu::tile_normalize(d_acc.get(), d_wsum.get(), planes, h, w, 0);
    cu::copy_to_host(pa, d_acc.get(), ba);
}

// ---- device-pointer forms (asynchronous on `stream`)
void require_ptrs(std::initializer_list<std::pair<const char*, std::uintptr_t>> ptrs) {
    for (const auto& kv : ptrs) {
        if (kv.second == 0) throw py::value_error(std::string(kv.first) + " must be a device pointer, got 0");
    }
}

py::tuple cuda_preprocess_ptr(std::uintptr_t src, std::uintptr_t dst, int64_t n, int64_t h, int64_t w,
                              py::handle src_dtype, const std::string& order, int64_t multiple, py::handle dst_dtype,
                              std::uintptr_t stream) {
    require_ptrs({{"src", src}, {"dst", dst}});
    require_positive({{"n", n}, {"h", h}, {"w", w}});
    mirnet::PreArgs a{n, h, w, padded(h, multiple), padded(w, multiple),
                      dtype_arg(src_dtype, "src_dtype", DType::U8, DType::U16),
                      dtype_arg(dst_dtype, "dst_dtype", DType::F32, DType::F16), parse_order(order)};
    {
        py::gil_scoped_release nogil;
        cu::preprocess(src, dst, a, stream);
    }
    return py::make_tuple(a.n, 3, a.hp, a.wp);
}

void cuda_postprocess_ptr(std::uintptr_t src, std::uintptr_t dst, int64_t n, int64_t h, int64_t w, py::handle out_hw,
                          py::handle src_dtype, const std::string& order, py::handle dst_dtype, std::uintptr_t stream) {
    require_ptrs({{"src", src}, {"dst", dst}});
    require_positive({{"n", n}, {"h", h}, {"w", w}});
    mirnet::PostArgs a{n, h, w, 0, 0, dtype_arg(src_dtype, "src_dtype", DType::F32, DType::F16),
                       dtype_arg(dst_dtype, "dst_dtype", DType::U8, DType::U16), parse_order(order)};
    std::tie(a.oh, a.ow) = parse_hw(out_hw, "out_hw", h, w);
    py::gil_scoped_release nogil;
    cu::postprocess(src, dst, a, stream);
}

template <bool NV12>
py::tuple cuda_preprocess_yuv_ptr(std::uintptr_t src, std::uintptr_t dst, int64_t h, int64_t w, int64_t multiple,
                                  py::handle dst_dtype, std::uintptr_t stream) {
    require_ptrs({{"src", src}, {"dst", dst}});
    require_positive({{"h", h}, {"w", w}});
    if (w % 2 || (NV12 && h % 2)) {
        throw py::value_error(std::string(NV12 ? "nv12 needs even h and w" : "yuyv needs an even w") + ", got h=" +
                              std::to_string(h) + ", w=" + std::to_string(w));
    }
    mirnet::YuvArgs a{h, w, padded(h, multiple), padded(w, multiple),
                      dtype_arg(dst_dtype, "dst_dtype", DType::F32, DType::F16)};
    {
        py::gil_scoped_release nogil;
        NV12 ? cu::preprocess_nv12(src, dst, a, stream) : cu::preprocess_yuyv(src, dst, a, stream);
    }
    return py::make_tuple(1, 3, a.hp, a.wp);
}

void cuda_tile_accumulate_ptr(std::uintptr_t acc, std::uintptr_t wsum, std::uintptr_t out, std::uintptr_t weight,
                              int64_t n, int64_t c, int64_t H, int64_t W, int64_t th, int64_t tw, int64_t y0,
                              int64_t x0, std::uintptr_t stream) {
    require_ptrs({{"acc", acc}, {"wsum", wsum}, {"out", out}, {"weight", weight}});
    require_positive({{"n", n}, {"c", c}, {"H", H}, {"W", W}, {"th", th}, {"tw", tw}});
    if (y0 < 0 || x0 < 0 || y0 + th > H || x0 + tw > W) {
        throw py::value_error("tile at (y0, x0) = (" + std::to_string(y0) + ", " + std::to_string(x0) +
                              ") of size (" + std::to_string(th) + ", " + std::to_string(tw) + ") exceeds (H, W) = (" +
                              std::to_string(H) + ", " + std::to_string(W) + ")");
    }
    mirnet::TileArgs a{n, c, H, W, th, tw, y0, x0};
    py::gil_scoped_release nogil;
    cu::tile_accumulate(acc, wsum, out, weight, a, stream);
}

void cuda_tile_normalize_ptr(std::uintptr_t acc, std::uintptr_t wsum, int64_t n, int64_t c, int64_t H, int64_t W,
                             std::uintptr_t stream) {
    require_ptrs({{"acc", acc}, {"wsum", wsum}});
    require_positive({{"n", n}, {"c", c}, {"H", H}, {"W", W}});
    py::gil_scoped_release nogil;
    cu::tile_normalize(acc, wsum, n * c, H, W, stream);
}

// A device allocation owned by Python: ptr for the *_ptr functions, upload/download for numpy.
class CudaBuffer {
  public:
    explicit CudaBuffer(std::size_t nbytes) : nbytes_(nbytes) {
        if (nbytes == 0) throw py::value_error("nbytes must be >= 1, got 0");
        py::gil_scoped_release nogil;
        ptr_ = cu::malloc_device(nbytes);
    }
    ~CudaBuffer() { free(); }
    CudaBuffer(const CudaBuffer&) = delete;
    CudaBuffer& operator=(const CudaBuffer&) = delete;
    void free() {
        cu::free_device(ptr_);
        ptr_ = 0;
    }
    std::uintptr_t ptr() const {
        if (!ptr_) throw py::value_error("CudaBuffer was freed");
        return ptr_;
    }
    std::size_t nbytes() const { return nbytes_; }
    void upload(py::handle obj) {
        py::array a = as_array(obj, "array");
        require_contiguous(a, "array");
        check_size(a);
        const void* src = a.data();
        const std::uintptr_t dst = ptr();
        const std::size_t n = static_cast<std::size_t>(a.nbytes());
        py::gil_scoped_release nogil;
        cu::copy_to_device(dst, src, n);
    }
    void download(py::handle obj) {
        py::array a = as_array(obj, "array");
        require_contiguous(a, "array");
        require_writeable(a, "array");
        check_size(a);
        void* dst = a.mutable_data();
        const std::uintptr_t src = ptr();
        const std::size_t n = static_cast<std::size_t>(a.nbytes());
        py::gil_scoped_release nogil;
        cu::copy_to_host(dst, src, n);
    }

  private:
    void check_size(const py::array& a) const {
        if (static_cast<std::size_t>(a.nbytes()) > nbytes_) {
            throw py::value_error("array has " + std::to_string(a.nbytes()) + " bytes, more than the buffer's " +
                                  std::to_string(nbytes_));
        }
    }
    std::uintptr_t ptr_ = 0;
    std::size_t nbytes_;
};
#endif  // MIRNET_WITH_CUDA

}  // namespace

PYBIND11_MODULE(_ext, m) {
    m.doc() = "mirnet-edge C++/CUDA pre/post-processing kernels (bit-exact with mirnet.sdk.ops.reference).";

    m.attr("has_cuda_kernels") = py::bool_(
#ifdef MIRNET_WITH_CUDA
        true
#else
        false
#endif
    );
    m.attr("has_openmp") = py::bool_(mirnet::cpu::has_openmp());

    m.def("set_num_threads", &mirnet::cpu::set_num_threads, py::arg("n"),
          "OpenMP threads for the CPU kernels (all Python threads); n <= 0 restores the OpenMP default.");
    m.def("get_num_threads", &mirnet::cpu::num_threads, "OpenMP threads the CPU kernels use.");

    m.def("preprocess", &preprocess, py::arg("img"), py::arg("order") = "bgr", py::arg("multiple") = 4,
          py::arg("dtype") = "float32",
          "(H,W,3) or (N,H,W,3) C-contiguous uint8/uint16 image(s) in `order` -> (N,3,Hp,Wp) RGB float32/float16,\n"
          "reflect-padded at the bottom/right to a multiple of `multiple` (reference.preprocess).");
    m.def("postprocess", &postprocess, py::arg("t"), py::arg("out_hw"), py::arg("order") = "bgr",
          py::arg("out_dtype") = "uint8",
          "(3,H,W) or (N,3,H,W) C-contiguous float32/float16 RGB -> (N,h,w,3) uint8/uint16 in `order`, cropped to\n"
          "out_hw=(h,w) (reference.postprocess).");
    m.def("preprocess_nv12", &preprocess_yuv<true>, py::arg("frame"), py::arg("multiple") = 4,
          py::arg("dtype") = "float32", "NV12 (H*3/2, W) uint8 -> (1,3,Hp,Wp) RGB float (reference.preprocess_nv12).");
    m.def("preprocess_yuyv", &preprocess_yuv<false>, py::arg("frame"), py::arg("multiple") = 4,
          py::arg("dtype") = "float32", "YUYV (H, W, 2) uint8 -> (1,3,Hp,Wp) RGB float (reference.preprocess_yuyv).");
    m.def("tile_accumulate", &tile_accumulate, py::arg("acc"), py::arg("wsum"), py::arg("out"), py::arg("weight"),
          py::arg("y0"), py::arg("x0"),
          "In place, float32: acc[:, :, y0:y0+th, x0:x0+tw] += out * weight; wsum[y0:y0+th, x0:x0+tw] += weight.");
    m.def("tile_normalize", &tile_normalize, py::arg("acc"), py::arg("wsum"),
          "In place, float32: acc /= wsum (wsum (H,W) broadcast over acc's (N,C) planes).");

    m.def("cuda_available", &cuda_available,
          "True when CUDA kernels are compiled in and a CUDA device with a working driver is present (never raises).");
    m.def("cuda_info", &cuda_info, "CUDA kernels, devices, runtime/driver versions and the reason when unavailable.");

#ifdef MIRNET_WITH_CUDA
    m.attr("cuda_archs") = MIRNET_CUDA_ARCHS;
    // host-array forms: copy in, run on the default stream, copy out (synchronous)
    m.def("cuda_preprocess", &cuda_preprocess, py::arg("img"), py::arg("order") = "bgr", py::arg("multiple") = 4,
          py::arg("dtype") = "float32", "CUDA version of preprocess on host arrays.");
    m.def("cuda_postprocess", &cuda_postprocess, py::arg("t"), py::arg("out_hw"), py::arg("order") = "bgr",
          py::arg("out_dtype") = "uint8", "CUDA version of postprocess on host arrays.");
    m.def("cuda_preprocess_nv12", &cuda_preprocess_yuv<true>, py::arg("frame"), py::arg("multiple") = 4,
          py::arg("dtype") = "float32", "CUDA version of preprocess_nv12 on host arrays.");
    m.def("cuda_preprocess_yuyv", &cuda_preprocess_yuv<false>, py::arg("frame"), py::arg("multiple") = 4,
          py::arg("dtype") = "float32", "CUDA version of preprocess_yuyv on host arrays.");
    m.def("cuda_tile_accumulate", &cuda_tile_accumulate, py::arg("acc"), py::arg("wsum"), py::arg("out"),
          py::arg("weight"), py::arg("y0"), py::arg("x0"), "CUDA version of tile_accumulate on host arrays.");
    m.def("cuda_tile_normalize", &cuda_tile_normalize, py::arg("acc"), py::arg("wsum"),
          "CUDA version of tile_normalize on host arrays.");
    // device-pointer forms: enqueue on `stream` (cudaStream_t as int, 0 = default stream), no sync
    m.def("cuda_preprocess_ptr", &cuda_preprocess_ptr, py::arg("src"), py::arg("dst"), py::arg("n"), py::arg("h"),
          py::arg("w"), py::arg("src_dtype") = "uint8", py::arg("order") = "bgr", py::arg("multiple") = 4,
          py::arg("dst_dtype") = "float32", py::arg("stream") = 0,
          "Device (n,h,w,3) image at src -> device (n,3,hp,wp) tensor at dst; returns (n, 3, hp, wp).");
    m.def("cuda_postprocess_ptr", &cuda_postprocess_ptr, py::arg("src"), py::arg("dst"), py::arg("n"), py::arg("h"),
          py::arg("w"), py::arg("out_hw"), py::arg("src_dtype") = "float32", py::arg("order") = "bgr",
          py::arg("dst_dtype") = "uint8", py::arg("stream") = 0,
          "Device (n,3,h,w) tensor at src -> device (n,out_h,out_w,3) image at dst.");
    m.def("cuda_preprocess_nv12_ptr", &cuda_preprocess_yuv_ptr<true>, py::arg("src"), py::arg("dst"), py::arg("h"),
          py::arg("w"), py::arg("multiple") = 4, py::arg("dst_dtype") = "float32", py::arg("stream") = 0,
          "Device NV12 frame (h*3/2, w) at src -> device (1,3,hp,wp) at dst; returns (1, 3, hp, wp).");
    m.def("cuda_preprocess_yuyv_ptr", &cuda_preprocess_yuv_ptr<false>, py::arg("src"), py::arg("dst"), py::arg("h"),
          py::arg("w"), py::arg("multiple") = 4, py::arg("dst_dtype") = "float32", py::arg("stream") = 0,
          "Device YUYV frame (h, w, 2) at src -> device (1,3,hp,wp) at dst; returns (1, 3, hp, wp).");
    m.def("cuda_tile_accumulate_ptr", &cuda_tile_accumulate_ptr, py::arg("acc"), py::arg("wsum"), py::arg("out"),
          py::arg("weight"), py::arg("n"), py::arg("c"), py::arg("H"), py::arg("W"), py::arg("th"), py::arg("tw"),
          py::arg("y0"), py::arg("x0"), py::arg("stream") = 0, "tile_accumulate on device pointers.");
    m.def("cuda_tile_normalize_ptr", &cuda_tile_normalize_ptr, py::arg("acc"), py::arg("wsum"), py::arg("n"),
          py::arg("c"), py::arg("H"), py::arg("W"), py::arg("stream") = 0, "tile_normalize on device pointers.");
    m.def(
        "cuda_synchronize",
        [](std::uintptr_t stream) {
            py::gil_scoped_release nogil;
            cu::synchronize(stream);
        },
        py::arg("stream") = 0, "Wait for `stream` (0: the whole device).");
    py::class_<CudaBuffer>(m, "CudaBuffer", "Device memory owned by Python (cudaMalloc/cudaFree).")
        .def(py::init<std::size_t>(), py::arg("nbytes"))
        .def_property_readonly("ptr", &CudaBuffer::ptr, "Device address as an int.")
        .def_property_readonly("nbytes", &CudaBuffer::nbytes)
        .def("upload", &CudaBuffer::upload, py::arg("array"), "Copy a C-contiguous array to the buffer start.")
        .def("download", &CudaBuffer::download, py::arg("array"), "Fill a C-contiguous writeable array from the buffer.")
        .def("free", &CudaBuffer::free, "Release the device memory now.")
        .def("__enter__", [](CudaBuffer& b) -> CudaBuffer& { return b; }, py::return_value_policy::reference)
        .def("__exit__", [](CudaBuffer& b, py::args) { b.free(); });
#endif
}
