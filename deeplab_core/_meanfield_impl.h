// The mean-field code of _meanfield.cpp, included there once per instruction set it is compiled for (inside a
// namespace of its own: generic x86-64, and AVX2), so that one build runs the widest code each CPU supports.
// It relies on the includes, `Settings`, `Phases` and `Stopwatch` that _meanfield.cpp defines before including it.
// No include guard: included on purpose more than once.


// std::nearbyint in the default rounding mode (to nearest, ties to even) for |x| < 2^22, in two additions: x86-64's
// baseline instruction set has no rounding instruction, and the library call, six per pixel, took ~12 % of the
// lattice build. Larger values come out large, which the callers' range checks refuse.
inline float round_to_integer(float x) { return (x + 12582912.f) - 12582912.f; }  // 12582912 = 1.5 * 2^23

template <int D>
struct Lattice {
    int num_pixels = 0;
    int num_vertices = 0;
    Array<int> offset;          // (D+1) per pixel: vertex index + 1 (0 is an always-zero slot)
    Array<float> barycentric;   // (D+1) per pixel
    Array<int> neighbours;      // per axis, per vertex: (lower, upper) vertex index + 1, 0 when absent
    Array<float> norm;          // symmetric normalisation, one per pixel

    // False when a lattice coordinate does not fit the 16-bit keys (features too large for their kernel widths).
    template <typename Features>
    bool build(int pixels, const Features &features);

    // out = K in, `values` floats per pixel (pixel-major).
    void filter(const float *in, float *out, int values, Array<float> &buffer_a,
                Array<float> &buffer_b) const;
    // energy += weight * N K N q (N: the normalisation), the Potts message of mean-field inference.
    void add_message(const float *q, float *energy, int values, float weight, Array<float> &buffer_a,
                     Array<float> &buffer_b) const;
};

// Open addressing with linear probing; keys stored inline next to the vertex index.
template <int D>
class VertexTable {
  public:
    explicit VertexTable(size_t expected) {
        size_t capacity = 1024;
        while (capacity < 2 * expected) capacity *= 2;
        slots_.assign(capacity, Slot{});
        mask_ = capacity - 1;
        keys_.reserve(expected * D);
    }
    int size() const { return static_cast<int>(keys_.size() / D); }
    const int16_t *key(int index) const { return &keys_[static_cast<size_t>(index) * D]; }

    static size_t hash(const int16_t *key) {
        uint64_t h = 0;
        for (int i = 0; i < D; ++i) h = (h + static_cast<uint16_t>(key[i])) * 0x9E3779B97F4A7C15ull;
        return static_cast<size_t>(h ^ (h >> 29));
    }
    // Lookups are cache misses in a table of megabytes: callers hash a batch of keys and prefetch their slots first.
    void prefetch(size_t hash) const { __builtin_prefetch(&slots_[hash & mask_]); }

    // Vertex index of `key` (whose hash is `hash`), inserted when absent.
    int find_or_insert(const int16_t *key, size_t hash) {
        if (2 * (keys_.size() / D + 1) > slots_.size()) grow();
        size_t h = hash & mask_;
        while (true) {
            Slot &slot = slots_[h];
            if (slot.index < 0) {
                std::memcpy(slot.key, key, sizeof(slot.key));
                slot.index = size();
                keys_.insert(keys_.end(), key, key + D);
                return slot.index;
            }
            if (std::memcmp(slot.key, key, sizeof(slot.key)) == 0) return slot.index;
            h = (h + 1) & mask_;
        }
    }

  private:
    struct Slot {
        int16_t key[D] = {};
        int32_t index = -1;
    };
    Array<Slot> slots_;
    Array<int16_t> keys_;
    size_t mask_ = 0;
    void grow() {
        Array<Slot> old;
        old.swap(slots_);
        slots_.assign(old.size() * 2, Slot{});
        mask_ = slots_.size() - 1;
        for (const Slot &slot : old) {
            if (slot.index < 0) continue;
            size_t h = hash(slot.key) & mask_;
            while (slots_[h].index >= 0) h = (h + 1) & mask_;
            slots_[h] = slot;
        }
    }
};

// The blur's neighbours: along axis j, a vertex's neighbours are the vertex -1 (+D on coordinate j) and +1 (-D)
// (for j = D, the coordinate the keys leave implicit: -1 or +1 on every stored one). Rather than a hash lookup per
// vertex and axis (cache misses in a table of megabytes, most of them for absent neighbours), each key is packed
// into one integer, a digit per coordinate with room for the neighbours' offsets, and the keys are sorted once:
// adding one offset to every key keeps their order, so each axis' upper neighbours are found in one merge of the
// sorted keys with themselves shifted, reading memory in order. The same pairs as the lookups find.
// The vertices are then numbered in that order (`renumbered`: the new index of each), rather than in the order the
// pixels met them: a vertex's neighbours on every axis lie in the next few runs of equal first coordinate, and the
// blur's, splat's and slice's random reads stay closer together (faster: docs/benchmarks.md).
template <typename Packed, int D>
void link_sorted_neighbours(const VertexTable<D> &table, const int (&lowest)[D], const int (&bits)[D],
                            Array<int> &neighbours, Array<int> &renumbered) {
    struct Entry {
        Packed key;
        int32_t index;
    };
    const int vertices = table.size();
    Array<Entry> sorted(vertices), scratch(vertices);
    int position[D];  // of each coordinate's digit, the first coordinate most significant (lexicographic order)
    for (int i = D - 1, at = 0; i >= 0; at += bits[i], --i) position[i] = at;
    for (int v = 0; v < vertices; ++v) {
        const int16_t *key = table.key(v);
        Packed packed = 0;
        for (int i = 0; i < D; ++i) packed |= static_cast<Packed>(key[i] - lowest[i] + D) << position[i];
        sorted[v] = {packed, v};
    }
    Array<int> start;
    for (int i = D - 1; i >= 0; --i) {  // least significant digit first: a counting pass per coordinate
        const Packed mask = (static_cast<Packed>(1) << bits[i]) - 1;
        start.assign((static_cast<size_t>(1) << bits[i]) + 1, 0);
        for (const Entry &entry : sorted) ++start[static_cast<size_t>((entry.key >> position[i]) & mask) + 1];
        for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
        for (const Entry &entry : sorted)
            scratch[start[static_cast<size_t>((entry.key >> position[i]) & mask)]++] = entry;
        sorted.swap(scratch);
    }
    renumbered.resize(vertices);
    for (int k = 0; k < vertices; ++k) renumbered[sorted[k].index] = k;
    Packed all_ones = 0;
    for (int i = 0; i < D; ++i) all_ones += static_cast<Packed>(1) << position[i];
    for (int j = 0; j <= D; ++j) {
        // +1 on every coordinate but j, -D on j: unsigned arithmetic, no digit leaves its room, so no carry.
        const Packed shift = j < D ? all_ones - (static_cast<Packed>(D + 1) << position[j]) : all_ones;
        int *axis = &neighbours[static_cast<size_t>(j) * vertices * 2];  // (lower, upper) per vertex
        int candidate = 0;
        for (int k = 0; k < vertices; ++k) {
            const Packed upper = sorted[k].key + shift;
            while (candidate < vertices && sorted[candidate].key < upper) ++candidate;
            if (candidate == vertices) break;
            if (sorted[candidate].key != upper) continue;
            axis[2 * k + 1] = candidate + 1;
            axis[2 * candidate] = k + 1;
        }
    }
}

// `neighbours`: per axis and vertex, (lower, upper) vertex index + 1, 0 when absent, the vertices numbered anew:
// `renumbered` holds the new index of each of the table's.
template <int D>
void link_blur_neighbours(const VertexTable<D> &table, Array<int> &neighbours, Array<int> &renumbered) {
    const int vertices = table.size();
    neighbours.assign(static_cast<size_t>(D + 1) * vertices * 2, 0);
    if (vertices == 0) return;
    int lowest[D], highest[D], bits[D], total_bits = 0;
    std::fill(lowest, lowest + D, INT32_MAX);
    std::fill(highest, highest + D, INT32_MIN);
    for (int v = 0; v < vertices; ++v)
        for (int i = 0; i < D; ++i) {
            lowest[i] = std::min<int>(lowest[i], table.key(v)[i]);
            highest[i] = std::max<int>(highest[i], table.key(v)[i]);
        }
    for (int i = 0; i < D; ++i) {  // digits from lowest - D (a lower neighbour) to highest + 1 (an upper one)
        bits[i] = 1;
        while ((1 << bits[i]) <= highest[i] - lowest[i] + D + 1) ++bits[i];
        total_bits += bits[i];
    }
    if (total_bits <= 64)  // up to ~7000 key values per coordinate: theta_beta >= 1 with the paper's theta_alpha
        link_sorted_neighbours<uint64_t>(table, lowest, bits, neighbours, renumbered);
    else
        link_sorted_neighbours<unsigned __int128>(table, lowest, bits, neighbours, renumbered);
}

template <int D>
template <typename Features>
bool Lattice<D>::build(int pixels, const Features &features) {
    num_pixels = pixels;
    offset.assign(static_cast<size_t>(pixels) * (D + 1), 0);
    barycentric.assign(static_cast<size_t>(pixels) * (D + 1), 0.f);
    // Sized for 1.5 vertices per pixel (0.9-1.1 measured on the benchmark images); it grows when needed.
    VertexTable<D> table(static_cast<size_t>(pixels) + pixels / 2);

    int16_t canonical[D + 1][D + 1];
    for (int i = 0; i <= D; ++i) {
        for (int j = 0; j <= D - i; ++j) canonical[i][j] = static_cast<int16_t>(i);
        for (int j = D - i + 1; j <= D; ++j) canonical[i][j] = static_cast<int16_t>(i - (D + 1));
    }
    const float inv_std_dev = static_cast<float>(std::sqrt(2.0 / 3.0) * (D + 1));
    float scale[D];
    for (int i = 0; i < D; ++i) scale[i] = static_cast<float>(1.0 / std::sqrt(double((i + 2) * (i + 1))) * inv_std_dev);
    const float down = 1.0f / (D + 1);
    const float up = static_cast<float>(D + 1);

    constexpr int kBatch = 16;
    struct Pending {
        int16_t key[D];
        size_t hash;
    };
    Array<Pending> pending(static_cast<size_t>(kBatch) * (D + 1));  // D+1 vertices per pixel
    float f[D], elevated[D + 1], rem0[D + 1], bary[D + 2];
    int rank[D + 1];
    for (int first = 0; first < pixels; first += kBatch) {
        const int last = std::min(pixels, first + kBatch);
        for (int k = first; k < last; ++k) {
            features(k, f);
            // Elevate onto the hyperplane (y = E p) and find the enclosing simplex by rounding and sorting.
            float sm = 0.f;
            for (int j = D; j > 0; --j) {
                const float cf = f[j - 1] * scale[j - 1];
                elevated[j] = sm - j * cf;
                sm += cf;
            }
            elevated[0] = sm;
            float sum = 0.f;
            for (int i = 0; i <= D; ++i) {
                const float v = round_to_integer(down * elevated[i]);
                rem0[i] = v * up;
                sum += v;
            }
            for (int i = 0; i <= D; ++i)
                if (std::fabs(rem0[i]) > 32767 - 2 * (D + 1)) return false;
            float delta[D + 1];
            for (int i = 0; i <= D; ++i) {
                delta[i] = elevated[i] - rem0[i];
                rank[i] = 0;
            }
            for (int i = 0; i < D; ++i) {
                for (int j = i + 1; j <= D; ++j) {
                    const bool below = delta[i] < delta[j];  // arithmetic, not a branch: unpredictable
                    rank[i] += below;
                    rank[j] += !below;
                }
            }
            const int shift = static_cast<int>(sum);
            for (int i = 0; i <= D; ++i) {  // wrap the ranks into 0..D, again without branches
                const int shifted = rank[i] + shift;
                const int wrap = (shifted < 0) - (shifted >= D + 1);
                rank[i] = shifted + wrap * (D + 1);
                rem0[i] += static_cast<float>(wrap) * up;
            }
            for (int i = 0; i <= D + 1; ++i) bary[i] = 0.f;
            for (int i = 0; i <= D; ++i) {
                const float v = (elevated[i] - rem0[i]) * down;
                bary[D - rank[i]] += v;
                bary[D - rank[i] + 1] -= v;
            }
            bary[0] += 1.0f + bary[D + 1];
            float *pixel_bary = &barycentric[static_cast<size_t>(k) * (D + 1)];
            for (int r = 0; r <= D; ++r) {
                pixel_bary[r] = bary[r];
                Pending &vertex = pending[static_cast<size_t>(k - first) * (D + 1) + r];
                for (int i = 0; i < D; ++i) vertex.key[i] = static_cast<int16_t>(rem0[i] + canonical[r][rank[i]]);
                vertex.hash = VertexTable<D>::hash(vertex.key);
                table.prefetch(vertex.hash);
            }
        }
        for (int k = first; k < last; ++k)
            for (int r = 0; r <= D; ++r) {
                const Pending &vertex = pending[static_cast<size_t>(k - first) * (D + 1) + r];
                offset[static_cast<size_t>(k) * (D + 1) + r] = table.find_or_insert(vertex.key, vertex.hash) + 1;
            }
    }

    num_vertices = table.size();
    Array<int> renumbered;
    link_blur_neighbours(table, neighbours, renumbered);
    for (int &vertex : offset) vertex = renumbered[vertex - 1] + 1;  // every pixel's vertices exist: never 0
    // Symmetric normalisation: 1 / sqrt(K 1).
    Array<float> ones(pixels, 1.f), filtered(pixels), a, b;
    filter(ones.data(), filtered.data(), 1, a, b);
    norm.resize(pixels);
    for (int i = 0; i < pixels; ++i) norm[i] = static_cast<float>(1.0 / std::sqrt(filtered[i] + 1e-20));
    return true;
}

// Label counts up to this get filters and softmaxes specialised at compile time (a trained model's outputs keep 2-7
// labels, a scene with many classes or an untrained model more, and the pruned CRF's screening runs over every class:
// VOC's 21, Cityscapes' 19, ~25 % faster than in chunks); more labels are processed in chunks of it.
constexpr int kMaxFixedValues = 24;

// Floats per vertex on the lattice for `values` values per pixel: from 2 to kMaxFixedValues values, whole vectors of
// 2, 4 or 8 floats (the padding 0), so that splat, blur and slice move a vertex's values in one instruction per 8
// instead of one per value (the same arithmetic per value: bit for bit the same results); else the values.
constexpr int vertex_row(int values) {
    if (values == 2) return 2;
    if (values >= 3 && values <= 4) return 4;
    if (values >= 5 && values <= kMaxFixedValues) return (values + 7) / 8 * 8;
    return values;
}

// A vector of N floats at a float's alignment (unaligned loads and stores: buffers are not all 32-byte aligned).
template <int N>
struct VectorOf {
    typedef float type __attribute__((vector_size(N * sizeof(float)), aligned(alignof(float))));
};

// Splat, blur along each lattice axis, slice: out = K in (pixel-major, `V` values per pixel; 0: `runtime_values`).
// No software prefetches: with the vertices numbered in key order, the vertices a pixel or a vertex reads next are
// mostly close to the last ones, and prefetching them cost more than it saved (docs/benchmarks.md).
// As a `Message`, the input is normalised first and the output normalised and added to `out` with `weight`, in
// densecrf's order of operations.
template <int D, int V, bool Message>
void filter_values(const Lattice<D> &lattice, const float *in, float *out, int runtime_values, float weight,
                   float *values, float *scratch) {
    const int nv = V > 0 ? V : runtime_values;
    constexpr bool kVectors = V >= 2;
    constexpr int kRow = vertex_row(V);
    constexpr int kLanes = kVectors ? std::min(kRow, 8) : 1;
    constexpr int kChunks = kRow / kLanes;  // vectors per vertex
    using Row = typename VectorOf<kLanes>::type;
    const int row = V > 0 ? kRow : nv;  // floats per vertex
    std::fill(values, values + static_cast<size_t>(lattice.num_vertices + 1) * row, 0.f);
    std::fill(scratch, scratch + row, 0.f);  // the absent-neighbour slot
    const int pixels = lattice.num_pixels;
    for (int i = 0; i < pixels; ++i) {
        const int *o = &lattice.offset[static_cast<size_t>(i) * (D + 1)];
        const float *w = &lattice.barycentric[static_cast<size_t>(i) * (D + 1)];
        const float *value = in + static_cast<size_t>(i) * nv;
        // One vector per vertex is its own case: written as an array of one, it stayed in memory (~10 % slower).
        if constexpr (kVectors && kChunks == 1) {
            Row scaled = {};
            for (int c = 0; c < V; ++c) scaled[c] = Message ? value[c] * lattice.norm[i] : value[c];
            for (int r = 0; r <= D; ++r)
                *reinterpret_cast<Row *>(values + static_cast<size_t>(o[r]) * kRow) += w[r] * scaled;
            continue;
        } else if constexpr (kVectors) {
            float scaled[kRow] = {};
            for (int c = 0; c < V; ++c) scaled[c] = Message ? value[c] * lattice.norm[i] : value[c];
            for (int r = 0; r <= D; ++r) {
                Row *target = reinterpret_cast<Row *>(values + static_cast<size_t>(o[r]) * kRow);
                for (int k = 0; k < kChunks; ++k)
                    target[k] += w[r] * *reinterpret_cast<const Row *>(scaled + k * kLanes);
            }
            continue;
        }
        for (int first = 0; first < nv; first += kMaxFixedValues) {
            const int count = V > 0 ? V : std::min(nv - first, kMaxFixedValues);
            float scaled[V > 0 ? V : kMaxFixedValues];
            for (int c = 0; c < count; ++c) scaled[c] = Message ? value[first + c] * lattice.norm[i] : value[first + c];
            for (int r = 0; r <= D; ++r) {
                float *target = values + static_cast<size_t>(o[r]) * row + first;
                for (int c = 0; c < count; ++c) target[c] += w[r] * scaled[c];
            }
        }
    }
    float *current = values, *next = scratch;
    for (int j = 0; j <= D; ++j) {
        const int *axis = &lattice.neighbours[static_cast<size_t>(j) * lattice.num_vertices * 2];
        const int vertices = lattice.num_vertices;
        for (int v = 0; v < vertices; ++v) {
            const float *__restrict own = current + static_cast<size_t>(v + 1) * row;
            const float *__restrict lower = current + static_cast<size_t>(axis[2 * v]) * row;
            const float *__restrict upper = current + static_cast<size_t>(axis[2 * v + 1]) * row;
            float *__restrict target = next + static_cast<size_t>(v + 1) * row;
            if constexpr (kVectors) {
                for (int k = 0; k < kChunks; ++k)
                    reinterpret_cast<Row *>(target)[k] = reinterpret_cast<const Row *>(own)[k] +
                        0.5f * (reinterpret_cast<const Row *>(lower)[k] + reinterpret_cast<const Row *>(upper)[k]);
            } else {
                for (int c = 0; c < row; ++c) target[c] = own[c] + 0.5f * (lower[c] + upper[c]);
            }
        }
        std::swap(current, next);
    }
    const float alpha = 1.0f / (1 + std::pow(2.0f, -D));
    for (int i = 0; i < pixels; ++i) {
        const int *o = &lattice.offset[static_cast<size_t>(i) * (D + 1)];
        const float *w = &lattice.barycentric[static_cast<size_t>(i) * (D + 1)];
        float *target = out + static_cast<size_t>(i) * nv;
        if constexpr (kVectors && kChunks == 1) {
            Row sum = {};
            for (int r = 0; r <= D; ++r) {
                const Row &source = *reinterpret_cast<const Row *>(current + static_cast<size_t>(o[r]) * kRow);
                if constexpr (V <= 2) sum += w[r] * source * alpha;  // densecrf's rounding order, as below
                else sum += (w[r] * alpha) * source;
            }
            for (int c = 0; c < V; ++c) {
                if (Message) target[c] -= -weight * (sum[c] * lattice.norm[i]);
                else target[c] = sum[c];
            }
            continue;
        } else if constexpr (kVectors) {  // more than 8 values
            float sum[kRow] = {};
            for (int r = 0; r <= D; ++r) {
                const Row *source = reinterpret_cast<const Row *>(current + static_cast<size_t>(o[r]) * kRow);
                for (int k = 0; k < kChunks; ++k)
                    *reinterpret_cast<Row *>(sum + k * kLanes) += (w[r] * alpha) * source[k];
            }
            for (int c = 0; c < V; ++c) {
                if (Message) target[c] -= -weight * (sum[c] * lattice.norm[i]);
                else target[c] = sum[c];
            }
            continue;
        }
        for (int first = 0; first < nv; first += kMaxFixedValues) {
            const int count = V > 0 ? V : std::min(nv - first, kMaxFixedValues);
            float sum[V > 0 ? V : kMaxFixedValues] = {};
            for (int r = 0; r <= D; ++r) {
                const float *source = current + static_cast<size_t>(o[r]) * row + first;
                if (nv <= 2) {  // densecrf's scalar path (up to 2 values) rounds in this order
                    for (int c = 0; c < count; ++c) sum[c] += w[r] * source[c] * alpha;
                } else {
                    const float vertex_weight = w[r] * alpha;
                    for (int c = 0; c < count; ++c) sum[c] += vertex_weight * source[c];
                }
            }
            for (int c = 0; c < count; ++c) {
                if (Message) target[first + c] -= -weight * (sum[c] * lattice.norm[i]);
                else target[first + c] = sum[c];
            }
        }
    }
}

// filter_values specialised for `values` when it is at most kMaxFixedValues, else its runtime-width version.
template <int D, bool Message, int V = 1>
void filter_fixed_or_runtime(const Lattice<D> &lattice, const float *in, float *out, int values, float weight,
                             float *buffer_a, float *buffer_b) {
    if constexpr (V > kMaxFixedValues) {
        filter_values<D, 0, Message>(lattice, in, out, values, weight, buffer_a, buffer_b);
    } else if (values == V) {
        filter_values<D, V, Message>(lattice, in, out, values, weight, buffer_a, buffer_b);
    } else {
        filter_fixed_or_runtime<D, Message, V + 1>(lattice, in, out, values, weight, buffer_a, buffer_b);
    }
}

template <int D, bool Message>
void dispatch_filter(const Lattice<D> &lattice, const float *in, float *out, int values, float weight,
                     Array<float> &buffer_a, Array<float> &buffer_b) {
    const size_t slots = static_cast<size_t>(lattice.num_vertices + 1) * vertex_row(values);
    if (buffer_a.size() < slots) buffer_a.resize(slots);
    if (buffer_b.size() < slots) buffer_b.resize(slots);
    filter_fixed_or_runtime<D, Message>(lattice, in, out, values, weight, buffer_a.data(), buffer_b.data());
}

template <int D>
void Lattice<D>::filter(const float *in, float *out, int values, Array<float> &buffer_a,
                        Array<float> &buffer_b) const {
    dispatch_filter<D, false>(*this, in, out, values, 0.f, buffer_a, buffer_b);
}

template <int D>
void Lattice<D>::add_message(const float *q, float *energy, int values, float weight, Array<float> &buffer_a,
                             Array<float> &buffer_b) const {
    dispatch_filter<D, true>(*this, q, energy, values, weight, buffer_a, buffer_b);
}

struct SpatialKey {
    int height, width;
    float xy_std;
    bool operator==(const SpatialKey &other) const {
        return height == other.height && width == other.width && xy_std == other.xy_std;
    }
};

// The spatial kernel depends only on the image size and the kernel's width: keep the last few built (a CRF worker
// sees many images of one size, and the pruned CRF's label screening runs on a coarser grid of each image, so two
// sizes alternate). `make` builds one, or returns null when it cannot. One cache per call site.
constexpr size_t kKernelsKept = 4;

template <typename Kernel, typename Make>
std::shared_ptr<const Kernel> last_built(const SpatialKey &key, Make make) {
    static std::mutex guard;
    static std::vector<std::pair<SpatialKey, std::shared_ptr<const Kernel>>> cached;  // most recently used last
    {
        std::lock_guard<std::mutex> lock(guard);
        for (size_t i = 0; i < cached.size(); ++i) {
            if (cached[i].first == key) {
                auto hit = cached[i];
                cached.erase(cached.begin() + static_cast<std::ptrdiff_t>(i));
                cached.push_back(hit);
                return hit.second;
            }
        }
    }
    std::shared_ptr<const Kernel> kernel = make();
    if (!kernel) return nullptr;
    std::lock_guard<std::mutex> lock(guard);
    if (cached.size() >= kKernelsKept) cached.erase(cached.begin());
    cached.emplace_back(key, kernel);
    return kernel;
}

std::shared_ptr<const Lattice<2>> spatial_lattice(int height, int width, float xy_std) {
    return last_built<Lattice<2>>({height, width, xy_std}, [&]() -> std::shared_ptr<const Lattice<2>> {
        auto lattice = std::make_shared<Lattice<2>>();
        const bool built = lattice->build(height * width, [&](int k, float *f) {
            f[0] = (k % width) / xy_std;
            f[1] = (k / width) / xy_std;
        });
        return built ? lattice : nullptr;
    });
}

// The spatial kernel exp(-|p_i - p_j|^2 / (2 std^2)) of a narrow width (the paper's is 1 pixel) computed exactly on
// the pixel grid: a Gaussian is separable, so K q is a pass along the rows, then one along the columns, each a few
// taps long and reading memory in order. The lattice, built for wide kernels, spends more on a 1-pixel kernel than
// on the exact one and only approximates it. Taps beyond kTruncation standard deviations (weight < 3.4e-4) are left
// out.
constexpr float kTruncation = 4.0f;
constexpr float kMaxSeparableStd = 2.0f;
constexpr int kMaxSeparableValues = 8;

class SeparableGaussian {
  public:
    SeparableGaussian(int height, int width, float xy_std) : height_(height), width_(width) {
        const int radius = static_cast<int>(std::ceil(kTruncation * xy_std));
        for (int d = 0; d <= radius; ++d) taps_.push_back(std::exp(-0.5f * d * d / (xy_std * xy_std)));
        const Array<float> ones(static_cast<size_t>(height) * width, 1.f);
        Array<float> scratch, row;
        norm_.resize(ones.size());
        filter<1>(ones.data(), nullptr, 1, scratch, row, [&](int y, const float *filtered) {
            for (int x = 0; x < width_; ++x)
                norm_[static_cast<size_t>(y) * width_ + x] = static_cast<float>(1.0 / std::sqrt(filtered[x] + 1e-20));
        });
    }

    // energy = -unary + weight * N K N q (N: the symmetric normalisation, as on the lattice): the unary and this
    // message in one pass over the energies, which start each iteration from the unary.
    // Specialised for `values` up to kMaxSeparableValues: the per-pixel loops vectorise only when they know the value
    // count (~40 % faster); more values at a runtime width.
    template <int V = 1>
    void unary_plus_message(const float *q, const float *unary, float *energy, int values, float weight,
                            Array<float> &scratch, Array<float> &row) const {
        if constexpr (V > kMaxSeparableValues) {
            unary_plus_message_of<0>(q, unary, energy, values, weight, scratch, row);
        } else if (values == V) {
            unary_plus_message_of<V>(q, unary, energy, values, weight, scratch, row);
        } else {
            unary_plus_message<V + 1>(q, unary, energy, values, weight, scratch, row);
        }
    }

  private:
    int height_, width_;
    Array<float> taps_;  // taps_[d]: the weight at distance d
    Array<float> norm_;

    // unary_plus_message for `V` values per pixel (0: `runtime_values`).
    template <int V>
    void unary_plus_message_of(const float *q, const float *unary, float *energy, int runtime_values, float weight,
                               Array<float> &scratch, Array<float> &row) const {
        const int values = V > 0 ? V : runtime_values;
        filter<V>(q, norm_.data(), values, scratch, row, [&](int y, const float *filtered) {
            const size_t first = static_cast<size_t>(y) * width_ * values;
            float *target = energy + first;
            const float *own_unary = unary + first;
            const float *norm = &norm_[static_cast<size_t>(y) * width_];
            for (int x = 0; x < width_; ++x)
                for (int c = 0; c < values; ++c)
                    target[x * values + c] = -own_unary[x * values + c] + weight * (filtered[x * values + c] * norm[x]);
        });
    }

    // K (in * scale), `V` floats per pixel (0: `runtime_values`; pixel-major; `scale`: a factor per pixel, or null for
    // none): along the rows into `scratch`, then along the columns, each output row handed to `emit(y, row)` while in
    // cache. The taps are symmetric: both neighbours at distance d are added before their weight is applied.
    template <int V, typename Emit>
    void filter(const float *in, const float *scale, int runtime_values, Array<float> &scratch, Array<float> &row,
                Emit emit) const {
        const int values = V > 0 ? V : runtime_values;
        const int radius = static_cast<int>(taps_.size()) - 1;
        const size_t stride = static_cast<size_t>(width_) * values;  // floats per image row
        scratch.resize(stride * height_);
        row.resize(stride);
        for (int y = 0; y < height_; ++y) {
            const float *source = in + y * stride;
            if (scale != nullptr) {
                const float *factor = scale + static_cast<size_t>(y) * width_;
                for (int x = 0; x < width_; ++x)
                    for (int c = 0; c < values; ++c) row[x * values + c] = source[x * values + c] * factor[x];
                source = row.data();
            }
            float *__restrict target = scratch.data() + y * stride;
            for (size_t k = 0; k < stride; ++k) target[k] = taps_[0] * source[k];
            for (int d = 1; d <= radius && d < width_; ++d) {  // the neighbours d pixels to the left and right
                const size_t shift = static_cast<size_t>(d) * values;
                const float tap = taps_[d];
                const size_t right_end = stride - shift;  // below it, k has a neighbour on the right
                for (size_t k = 0; k < std::min(shift, right_end); ++k) target[k] += tap * source[k + shift];
                for (size_t k = shift; k < right_end; ++k) target[k] += tap * (source[k - shift] + source[k + shift]);
                for (size_t k = std::max(shift, right_end); k < stride; ++k) target[k] += tap * source[k - shift];
            }
        }
        for (int y = 0; y < height_; ++y) {
            float *__restrict target = row.data();
            const float *centre = scratch.data() + y * stride;
            for (size_t k = 0; k < stride; ++k) target[k] = taps_[0] * centre[k];
            for (int d = 1; d <= radius; ++d) {  // the rows d above and below
                const float tap = taps_[d];
                const float *above = y - d >= 0 ? centre - d * stride : nullptr;
                const float *below = y + d < height_ ? centre + d * stride : nullptr;
                if (above && below) {
                    for (size_t k = 0; k < stride; ++k) target[k] += tap * (above[k] + below[k]);
                } else if (above || below) {
                    const float *other = above ? above : below;
                    for (size_t k = 0; k < stride; ++k) target[k] += tap * other[k];
                }
            }
            emit(y, target);
        }
    }
};

// exp(x) for x <= 0 (energies less their maximum) to about a float ulp, in arithmetic the compiler vectorises where
// std::exp is a library call per value: x = n ln 2 + r, exp(r) by Cephes' expf polynomial, 2^n as exponent bits.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.0f);  // exp(-87) is still a normal float
    const float n = round_to_integer(x * 1.44269504f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;     // ln 2 in two parts: r exact to float precision
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// q = softmax(energy) per pixel, `L` labels per pixel (0: `runtime_labels`). In blocks of pixels that stay in the
// L1 cache through the three passes: the maximum, the exponentials (one flat loop, vectorised across pixels), the sum.
// `rest` (may be null): per pixel, the energy of the labels left out of the CRF (label pruning), which take part in
// the normalisation only: q then sums to what they leave.
template <int L>
void exp_normalize_labels(const float *energy, const float *rest, float *q, int pixels, int runtime_labels) {
    const int labels = L > 0 ? L : runtime_labels;
    constexpr int kBlockPixels = 512;
    float rest_share[kBlockPixels];
    for (int first = 0; first < pixels; first += kBlockPixels) {
        const int count = std::min(kBlockPixels, pixels - first);
        const float *e = energy + static_cast<size_t>(first) * labels;
        float *p = q + static_cast<size_t>(first) * labels;
        for (int i = 0; i < count; ++i) {
            float top = e[i * labels];
            for (int c = 1; c < labels; ++c) top = std::max(top, e[i * labels + c]);
            if (rest != nullptr) {
                top = std::max(top, rest[first + i]);
                rest_share[i] = rest[first + i] - top;
            }
            for (int c = 0; c < labels; ++c) p[i * labels + c] = e[i * labels + c] - top;
        }
        const int values = count * labels;
        for (int k = 0; k < values; ++k) p[k] = exp_nonpositive(p[k]);
        if (rest != nullptr)
            for (int i = 0; i < count; ++i) rest_share[i] = exp_nonpositive(rest_share[i]);
        for (int i = 0; i < count; ++i) {
            float total = rest != nullptr ? rest_share[i] : 0.f;
            for (int c = 0; c < labels; ++c) total += p[i * labels + c];
            for (int c = 0; c < labels; ++c) p[i * labels + c] /= total;
        }
    }
}

// exp_normalize_labels specialised for `labels` when it is at most kMaxFixedValues, else its runtime-width version.
template <int L = 1>
void exp_normalize(const float *energy, const float *rest, float *q, int pixels, int labels) {
    if constexpr (L > kMaxFixedValues) {
        exp_normalize_labels<0>(energy, rest, q, pixels, labels);
    } else if (labels == L) {
        exp_normalize_labels<L>(energy, rest, q, pixels, labels);
    } else {
        exp_normalize<L + 1>(energy, rest, q, pixels, labels);
    }
}


// The bilateral lattice depends on the image and the two kernel widths only, not on the weights, the labels or the
// unary: a tuning that scores several settings of one image (w1 values, iteration counts) builds it once. Kept on
// request only (one lattice, ~100 bytes per pixel), and found again only for the same image bytes, compared whole.
struct KeptBilateral {
    int height = 0, width = 0;
    float xy_std = 0.f, rgb_std = 0.f;
    Array<uint8_t> image;
    std::shared_ptr<const Lattice<5>> lattice;
};

std::shared_ptr<const Lattice<5>> bilateral_lattice(const uint8_t *image, const Settings &s) {
    static std::mutex guard;
    static KeptBilateral kept;
    const size_t bytes = static_cast<size_t>(s.height) * s.width * 3;
    {
        std::lock_guard<std::mutex> lock(guard);
        if (kept.lattice && kept.height == s.height && kept.width == s.width && kept.xy_std == s.bilateral_xy_std &&
            kept.rgb_std == s.bilateral_rgb_std && std::memcmp(kept.image.data(), image, bytes) == 0)
            return kept.lattice;
    }
    auto lattice = std::make_shared<Lattice<5>>();
    const int width = s.width;
    // The features' values, each division done once: positions and intensities are few.
    Array<float> position(std::max(s.height, s.width)), intensity(256);
    for (size_t p = 0; p < position.size(); ++p) position[p] = static_cast<float>(p) / s.bilateral_xy_std;
    for (int v = 0; v < 256; ++v) intensity[v] = static_cast<float>(v) / s.bilateral_rgb_std;
    const bool built = lattice->build(s.height * s.width, [&](int k, float *f) {
        const int y = k / width;
        f[0] = position[k - y * width];
        f[1] = position[y];
        const uint8_t *rgb = image + static_cast<size_t>(k) * 3;
        f[2] = intensity[rgb[0]];
        f[3] = intensity[rgb[1]];
        f[4] = intensity[rgb[2]];
    });
    if (!built) return nullptr;
    if (s.keep_bilateral) {
        std::lock_guard<std::mutex> lock(guard);
        kept.height = s.height;
        kept.width = s.width;
        kept.xy_std = s.bilateral_xy_std;
        kept.rgb_std = s.bilateral_rgb_std;
        kept.image.assign(image, image + bytes);
        kept.lattice = lattice;
    }
    return lattice;
}


// q <- mean-field marginals; unary is -log p, both pixel-major (H*W x labels). rest (may be null): per pixel, the
// energy (log of the summed probabilities) of labels left out, held constant: they are the labels that gather no
// pairwise support, so their messages are taken as 0 and they enter only each pixel's normalisation, as they do in
// the CRF over every label. False: lattice overflow.
bool run_mean_field(const float *unary, const float *rest, const uint8_t *image, float *q, const Settings &s,
                    Phases &phases) {
    const int pixels = s.height * s.width;
    const int labels = s.labels;
    const size_t size = static_cast<size_t>(pixels) * labels;

    Stopwatch stopwatch;
    std::shared_ptr<const SeparableGaussian> separable;
    std::shared_ptr<const Lattice<2>> spatial;
    if (s.separable_spatial_kernel && s.gaussian_xy_std <= kMaxSeparableStd)
        separable = last_built<SeparableGaussian>({s.height, s.width, s.gaussian_xy_std}, [&] {
            return std::make_shared<const SeparableGaussian>(s.height, s.width, s.gaussian_xy_std);
        });
    else if (!(spatial = spatial_lattice(s.height, s.width, s.gaussian_xy_std)))
        return false;
    const std::shared_ptr<const Lattice<5>> bilateral = bilateral_lattice(image, s);
    if (!bilateral) return false;
    phases.kernels += stopwatch.lap();

    Array<float> energy(size), buffer_a, buffer_b;
    for (size_t i = 0; i < size; ++i) energy[i] = -unary[i];
    exp_normalize(energy.data(), rest, q, pixels, labels);
    phases.normalise += stopwatch.lap();

    for (int iteration = 0; iteration < s.iterations; ++iteration) {
        // Potts compatibility: each kernel's message -w * (N K N Q) is subtracted from the energy, -unary.
        if (separable) {
            separable->unary_plus_message(q, unary, energy.data(), labels, s.gaussian_weight, buffer_a, buffer_b);
        } else {
            for (size_t i = 0; i < size; ++i) energy[i] = -unary[i];
            spatial->add_message(q, energy.data(), labels, s.gaussian_weight, buffer_a, buffer_b);
        }
        phases.spatial += stopwatch.lap();
        bilateral->add_message(q, energy.data(), labels, s.bilateral_weight, buffer_a, buffer_b);
        phases.bilateral += stopwatch.lap();
        exp_normalize(energy.data(), rest, q, pixels, labels);
        phases.normalise += stopwatch.lap();
    }
    return true;
}
