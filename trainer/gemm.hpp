// C[M,N] = A[M,K] B[K,N] (or C +=), the product every linear layer of the trainer runs
// three times per step (forward, input gradient, weight gradient).
//
// Strides let one routine serve all three without copies: element (i,k) of A is
// A[i*a_row + k*a_col] and element (k,n) of B is B[k*b_row + n*b_col], so a transpose is
// just swapped strides.
//
// Every element of C is summed over k = 0..K-1 in one fixed order, whatever the thread
// count: training is bit-identical with 1 or 2 threads. Called inside a parallel region,
// a product runs on the calling thread alone (nested regions are serial).
#pragma once

namespace moe::train {

struct Strided {
  const void* data;
  long row;  // stride between rows
  long col;  // stride between columns
};

// The reference: a plain triple loop (parallel over rows). Used for double precision
// (gradient checks) and by the tests as the truth for the fast path.
template <class T>
void gemm_reference(int M, int N, int K, const T* A, long a_row, long a_col, const T* B, long b_row, long b_col, T* C,
                    long ldc, bool accumulate);

// The fast path for float: B packed into panels of NR columns, an MR x NR register tile
// of C per micro-kernel call (xsimd), OpenMP over the tiles. Other types use the reference.
template <class T>
void gemm(int M, int N, int K, const T* A, long a_row, long a_col, const T* B, long b_row, long b_col, T* C, long ldc,
          bool accumulate);

}  // namespace moe::train
