// Mean-field inference for the fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun, NIPS 2011),
// as DeepLab uses it: a spatial Gaussian kernel and a bilateral kernel, Potts compatibility, symmetric kernel
// normalisation, filtering on the permutohedral lattice (Adams et al. 2010). The arithmetic follows Krähenbühl's
// densecrf (the code behind pydensecrf) step for step; what differs is the engineering for few labels:
//   - lattice construction and filtering are dominated by random accesses to megabytes of hash slots and vertex
//     values: keys are hashed in batches and their slots prefetched ahead of use; the blur's neighbours come from
//     one sort of the vertex keys, not a lookup each, and the vertices are numbered in that order, which keeps
//     the vertices read one after another close in memory; large arrays ask for huge pages, kept for reuse;
//   - filters are specialised for the number of labels (a vertex's values one vector of 2, 4 or 8 floats, or
//     several) and fused with the normalisation and the Potts weights;
//   - the spatial kernel depends only on the image size, so the last few built are kept and reused, and the
//     bilateral one, on request, for the next call on the same image (a tuning's settings of one image);
//   - optionally (the pruned CRF) a narrow spatial kernel is computed exactly, as a separable filter (no lattice);
//   - exponentials are computed in arithmetic the compiler vectorises.
// deeplab_core/crf.py calls it through `mean_field`; pydensecrf stays the reference (the CRF's exact mode).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

struct Settings {
    int height, width, labels, iterations;
    float bilateral_weight, bilateral_xy_std, bilateral_rgb_std, gaussian_weight, gaussian_xy_std;
    int separable_spatial_kernel;  // the narrow spatial kernel convolved on the pixel grid (SeparableGaussian), not
                                   // approximated on its lattice
    int keep_bilateral;  // keep this call's bilateral lattice for the next call on the same image and widths
};

// Blocks of huge pages freed by one call, kept for the next: each CRF allocates the same tens of megabytes (a
// 512x512 image's lattice ~60 MB), and a fresh block costs a page fault and the kernel's clearing of every page
// before the CRF writes it anyway (measured in docs/benchmarks.md, the CRF extension's choices). An allocation takes the smallest kept
// block that holds it, if that is at most a quarter larger (sizes vary with each image's vertex count); at most
// kMaxKeptBytes are kept, the oldest given back first.
class KeptBlocks {
  public:
    static KeptBlocks &instance() {
        static KeptBlocks *blocks = new KeptBlocks;  // never destroyed: freed blocks may arrive during exit
        return *blocks;
    }
    // A kept block of at least `bytes`, or null. Freed again, it is kept as that size (the rest of it unused).
    void *take(size_t bytes) {
        std::lock_guard<std::mutex> lock(guard_);
        size_t best = blocks_.size();
        for (size_t i = 0; i < blocks_.size(); ++i)
            if (blocks_[i].first >= bytes && blocks_[i].first <= bytes + bytes / 4 &&
                (best == blocks_.size() || blocks_[i].first < blocks_[best].first))
                best = i;
        if (best == blocks_.size()) return nullptr;
        void *memory = blocks_[best].second;
        kept_bytes_ -= blocks_[best].first;
        blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(best));
        return memory;
    }
    void keep(void *memory, size_t bytes) {
        std::vector<void *> released;
        {
            std::lock_guard<std::mutex> lock(guard_);
            blocks_.emplace_back(bytes, memory);
            kept_bytes_ += bytes;
            while (kept_bytes_ > kMaxKeptBytes) {
                released.push_back(blocks_.front().second);
                kept_bytes_ -= blocks_.front().first;
                blocks_.erase(blocks_.begin());
            }
        }
        for (void *block : released) std::free(block);
    }

  private:
    static constexpr size_t kMaxKeptBytes = size_t(128) << 20;
    std::mutex guard_;
    std::vector<std::pair<size_t, void *>> blocks_;  // (bytes, block), oldest first
    size_t kept_bytes_ = 0;
};

// std::allocator, except that an array of 2 MiB or more is placed on transparent huge pages where Linux offers them
// on request (its default, `madvise`): the lattice's hash table, vertex values and per-pixel arrays are read at
// random over megabytes, and with 4 KiB pages most of those reads also miss the TLB. Such blocks are kept for reuse
// (KeptBlocks).
template <typename T>
struct LargePageAllocator {
    using value_type = T;
    static constexpr size_t kHugePage = size_t(1) << 21;
    LargePageAllocator() = default;
    template <typename U>
    LargePageAllocator(const LargePageAllocator<U> &) {}
    T *allocate(size_t n) {
        const size_t bytes = n * sizeof(T);
        if (bytes < kHugePage) return std::allocator<T>().allocate(n);
        const size_t rounded = rounded_up(bytes);
        void *memory = KeptBlocks::instance().take(rounded);
        if (memory != nullptr) return static_cast<T *>(memory);
        memory = std::aligned_alloc(kHugePage, rounded);
        if (memory == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
        madvise(memory, rounded, MADV_HUGEPAGE);  // advice: without it (or where refused) the usual pages
#endif
        return static_cast<T *>(memory);
    }
    void deallocate(T *memory, size_t n) {
        if (n * sizeof(T) < kHugePage) std::allocator<T>().deallocate(memory, n);
        else KeptBlocks::instance().keep(memory, rounded_up(n * sizeof(T)));
    }
    template <typename U>
    bool operator==(const LargePageAllocator<U> &) const { return true; }
    template <typename U>
    bool operator!=(const LargePageAllocator<U> &) const { return false; }

  private:
    static size_t rounded_up(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }
};
template <typename T>
using Array = std::vector<T, LargePageAllocator<T>>;

// Seconds spent in each phase of one call, for benchmarks/crf.py.
struct Phases {
    double kernels = 0, spatial = 0, bilateral = 0, normalise = 0;
};

class Stopwatch {
  public:
    // Seconds since the last lap (or since made).
    double lap() {
        const auto now = std::chrono::steady_clock::now();
        const double seconds = std::chrono::duration<double>(now - last_).count();
        last_ = now;
        return seconds;
    }

  private:
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace

// The computation, compiled twice: for any x86-64 CPU, and for AVX2 (the exponentials, the separable filter and the
// softmax vectorise 8 floats wide; what that buys: docs/benchmarks.md, the CRF extension's choices), chosen once per process from what the CPU reports (DEEPLAB_CRF_ISA=generic forces the first). Without FMA:
// no operation is contracted or reordered, so both give the same marginals bit for bit (tested).
namespace {
namespace generic {
#include "_meanfield_impl.h"
}  // namespace generic
}  // namespace

#if defined(__x86_64__) && defined(__GNUC__)
#define DEEPLAB_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2")
namespace {
namespace avx2 {
#include "_meanfield_impl.h"
}  // namespace avx2
}  // namespace
#pragma GCC pop_options
#endif

namespace {

bool use_avx2() {
#ifdef DEEPLAB_HAVE_AVX2
    static const bool chosen = [] {
        const char *forced = std::getenv("DEEPLAB_CRF_ISA");
        if (forced != nullptr && std::strcmp(forced, "generic") == 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return chosen;
#else
    return false;
#endif
}

bool run_mean_field(const float *unary, const float *rest, const uint8_t *image, float *q, const Settings &s,
                    Phases &phases) {
#ifdef DEEPLAB_HAVE_AVX2
    if (use_avx2()) return avx2::run_mean_field(unary, rest, image, q, s, phases);
#endif
    return generic::run_mean_field(unary, rest, image, q, s, phases);
}

PyObject *instruction_set(PyObject *, PyObject *) { return PyUnicode_FromString(use_avx2() ? "avx2" : "generic"); }

PyObject *mean_field(PyObject *, PyObject *args, PyObject *kwargs) {
    static const char *names[] = {"unary", "rest", "image", "out", "height", "width", "labels", "iterations",
                                  "bilateral_weight", "bilateral_xy_std", "bilateral_rgb_std", "gaussian_weight",
                                  "gaussian_xy_std", "separable_spatial_kernel", "keep_bilateral", nullptr};
    Py_buffer unary, rest, image, out;
    Settings s;
    // The four buffers by position, every setting by keyword ("$"): a call reads as the settings it passes.
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*y*w*$iiiifffffpp", const_cast<char **>(names), &unary, &rest,
                                     &image, &out, &s.height, &s.width, &s.labels, &s.iterations,
                                     &s.bilateral_weight, &s.bilateral_xy_std, &s.bilateral_rgb_std,
                                     &s.gaussian_weight, &s.gaussian_xy_std, &s.separable_spatial_kernel,
                                     &s.keep_bilateral))
        return nullptr;
    const Py_ssize_t pixels = static_cast<Py_ssize_t>(s.height) * s.width;
    const char *problem = nullptr;
    Phases phases;
    if (s.height < 1 || s.width < 1 || s.labels < 1 || s.iterations < 0)
        problem = "height, width and labels must be >= 1, iterations >= 0";
    else if (pixels > (1 << 27)) problem = "image too large for the CRF (more than 2**27 pixels): downscale it first";
    else if (unary.len != pixels * s.labels * 4) problem = "unary must hold height*width*labels float32 values";
    else if (out.len != pixels * s.labels * 4) problem = "out must hold height*width*labels float32 values";
    else if (image.len != pixels * 3) problem = "image must hold height*width*3 uint8 values";
    else if (rest.len != 0 && rest.len != pixels * 4) problem = "rest must be empty or hold height*width float32 values";
    else if (!(s.bilateral_xy_std > 0 && s.bilateral_rgb_std > 0 && s.gaussian_xy_std > 0))
        problem = "kernel widths must be > 0";
    if (problem == nullptr) {
        bool done;
        Py_BEGIN_ALLOW_THREADS
        done = run_mean_field(static_cast<const float *>(unary.buf),
                              rest.len != 0 ? static_cast<const float *>(rest.buf) : nullptr,
                              static_cast<const uint8_t *>(image.buf),
                              static_cast<float *>(out.buf), s, phases);
        Py_END_ALLOW_THREADS
        if (!done)
            problem = "image too large for these kernel widths: lattice coordinates overflow 16 bits "
                      "(downscale the image or widen the kernels)";
    }
    PyBuffer_Release(&unary);
    PyBuffer_Release(&rest);
    PyBuffer_Release(&image);
    PyBuffer_Release(&out);
    if (problem != nullptr) {
        PyErr_SetString(PyExc_ValueError, problem);
        return nullptr;
    }
    return Py_BuildValue("{s:d,s:d,s:d,s:d}", "kernels", phases.kernels, "spatial messages", phases.spatial,
                         "bilateral messages", phases.bilateral, "normalisation", phases.normalise);
}

PyMethodDef methods[] = {
    {"mean_field", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(mean_field)),
     METH_VARARGS | METH_KEYWORDS,
     "mean_field(unary, rest, image, out, *, height, width, labels, iterations, bilateral_weight, bilateral_xy_std, "
     "bilateral_rgb_std, gaussian_weight, gaussian_xy_std, separable_spatial_kernel, keep_bilateral)\n\nDense-CRF marginals "
     "into `out` (float32, H*W x labels, pixel-major) from `unary` (-log p, same layout) and `image` (uint8 H x W x "
     "3). `rest`: empty, or per pixel the log of the probability of labels left out (normalisation only). "
     "separable_spatial_kernel: the spatial kernel convolved exactly on the pixel grid when gaussian_xy_std <= 2 (else, and when false, on the "
     "lattice). keep_bilateral: keep the bilateral lattice for the next call on the same image and widths. Returns the "
     "seconds spent in each phase (a dict)."},
    {"instruction_set", instruction_set, METH_NOARGS,
     "instruction_set()\n\nWhich build of the computation this process runs: 'avx2' (AVX2, no FMA: the same marginals "
     "bit for bit) or 'generic'."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_meanfield", "Dense-CRF mean-field inference (see _meanfield.cpp).",
                      -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__meanfield(void) { return PyModule_Create(&module); }
