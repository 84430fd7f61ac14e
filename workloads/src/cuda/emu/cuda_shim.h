// A CPU emulator for kvbench's CUDA kernels, for tests on machines without a GPU
// (workloads/tests/cuda_emulated.rs). Every CUDA thread of a block is a fiber (ucontext) on
// the calling OS thread; blocks run one after another; __syncthreads and warp shuffles are
// barriers the fibers yield at until every participant arrives. Slow, but it runs the very
// kernel sources NVRTC compiles, so addressing, quantize-on-write, online softmax and the
// split-K merge are checked before a GPU ever sees them.
//
// Limits (true of kvbench's kernels): warps never diverge around a shuffle or a barrier, and
// blockDim is a multiple of 32.
#pragma once

#include <math.h>
#include <setjmp.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#define KVBENCH_EMULATE 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One copy per kernel function, shared by all its threads: blocks run one at a time.
#define __shared__ static

using std::max;
using std::min;

struct uint4 {
    unsigned x, y, z, w;
};
struct uint2 {
    unsigned x, y;
};
struct dim3 {
    unsigned x, y, z;
};

namespace emu {

// Internal linkage: each translation unit (and each loaded configuration's library) keeps its
// own state, so emulators of several configurations can run side by side.
static const size_t STACK_BYTES = 256 * 1024;

// A fiber starts once through setcontext (makecontext's stack); after that every switch is a
// _setjmp/_longjmp pair, which unlike swapcontext makes no system call (built with
// _FORTIFY_SOURCE off: its longjmp check rejects jumps between stacks).
struct Fiber {
    ucontext_t ctx;
    jmp_buf resume;
    std::unique_ptr<char[]> stack;
    bool started = false;
    bool done = false;
};

static jmp_buf scheduler;
static std::vector<Fiber> fibers;
static int current_thread = -1;
static const std::function<void()>* body = nullptr;
static dim3 bid, bdim, gdim;

// Hand control back to the scheduler (which resumes the next fiber).
static void yield() {
    if (!_setjmp(fibers[current_thread].resume)) _longjmp(scheduler, 1);
}

struct Barrier {
    int n = 0;
    int count = 0;
    unsigned generation = 0;
    void wait() {
        unsigned g = generation;
        if (++count == n) {
            count = 0;
            generation++;
            return;
        }
        while (generation == g) yield();
    }
};

static Barrier block_barrier;
static std::vector<Barrier> warp_barriers;
static std::vector<std::vector<float>> lanes;

static void trampoline() {
    (*body)();
    fibers[current_thread].done = true;
    _longjmp(scheduler, 1); // never returns into makecontext's frame
}

// Run `kernel` over the grid, one block at a time, one fiber per CUDA thread.
template <class F>
void launch(dim3 grid, dim3 block, F kernel) {
    const std::function<void()> f = kernel;
    body = &f;
    gdim = grid;
    bdim = block;
    const int n = (int)(block.x * block.y * block.z);
    if ((int)fibers.size() < n) fibers.resize(n);
    for (auto& fb : fibers)
        if (!fb.stack) fb.stack.reset(new char[STACK_BYTES]);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                bid = dim3{x, y, z};
                block_barrier = Barrier();
                block_barrier.n = n;
                warp_barriers.assign((n + 31) / 32, Barrier());
                lanes.assign((n + 31) / 32, std::vector<float>(32, 0.0f));
                for (int w = 0; w < (int)warp_barriers.size(); w++)
                    warp_barriers[w].n = std::min(32, n - 32 * w);
                for (int t = 0; t < n; t++) {
                    Fiber& fb = fibers[t];
                    fb.done = false;
                    fb.started = false;
                    getcontext(&fb.ctx);
                    fb.ctx.uc_stack.ss_sp = fb.stack.get();
                    fb.ctx.uc_stack.ss_size = STACK_BYTES;
                    fb.ctx.uc_link = nullptr;
                    makecontext(&fb.ctx, trampoline, 0);
                }
                int remaining = n;
                while (remaining > 0) {
                    for (int t = 0; t < n; t++) {
                        if (fibers[t].done) continue;
                        current_thread = t;
                        if (!_setjmp(scheduler)) {
                            if (!fibers[t].started) {
                                fibers[t].started = true;
                                setcontext(&fibers[t].ctx);
                            }
                            _longjmp(fibers[t].resume, 1);
                        }
                        if (fibers[t].done) remaining--;
                    }
                }
                current_thread = -1;
            }
    body = nullptr;
}

static inline dim3 thread_idx() { return dim3{(unsigned)current_thread, 0, 0}; }

static inline float exchange(float v, int src) {
    const int t = current_thread, w = t / 32, lane = t % 32;
    std::vector<float>& buf = lanes[w];
    buf[lane] = v;
    warp_barriers[w].wait();
    float r = buf[src];
    warp_barriers[w].wait();
    return r;
}

} // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::bid)
#define blockDim (emu::bdim)
#define gridDim (emu::gdim)

inline void __syncthreads() { emu::block_barrier.wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
    return emu::exchange(v, ((int)threadIdx.x % 32) ^ o);
}
inline float __shfl_sync(unsigned, float v, int src) { return emu::exchange(v, src); }

inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float emu_f16_to_f32(unsigned short h) {
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}
inline unsigned short emu_f32_to_f16(float f) {
    _Float16 x = (_Float16)f; // round to nearest even, as cvt.rn.f16.f32
    unsigned short h;
    memcpy(&h, &x, 2);
    return h;
}

// C entry points: launch one kernel over a grid with its parameter struct.
#define EMU_ENTRY(kernel, Params)                                                    \
    extern "C" __attribute__((visibility("default"))) void emu_##kernel(dim3 grid, dim3 block, const Params* p) {          \
        emu::launch(grid, block, [p] { kernel(*p); });                               \
    }
