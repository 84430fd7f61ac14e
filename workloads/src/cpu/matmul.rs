//! Dense f32 products through the `gemm` crate (blocked, SIMD, multithreaded on the current
//! rayon pool when asked).

/// Threads a product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Par {
    /// One thread (inside an already parallel loop).
    Single,
    /// Every thread of the current rayon pool.
    Pool,
}

impl Par {
    fn gemm(self) -> gemm::Parallelism {
        match self {
            Par::Single => gemm::Parallelism::None,
            Par::Pool => match rayon::current_num_threads() {
                1 => gemm::Parallelism::None,
                n => gemm::Parallelism::Rayon(n),
            },
        }
    }
}

/// A strided matrix view: element (r, c) is at `ptr[r · rs + c · cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `c (m×n, row-major) = [c +] a (m×k) · b (k×n)`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    accumulate: bool,
    par: Par,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n) && c.len() >= m * n,
        "matmul shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the bounds of every operand were checked above; `c` is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par.gemm(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_textbook_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 1.0).collect();
        let mut c = vec![1.0f32; m * n];
        matmul(
            m,
            n,
            k,
            Mat::rows(&a, k),
            Mat::rows(&b, n),
            &mut c,
            true,
            Par::Single,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
        // a · bᵀ through a transposed view.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c2 = vec![0.0f32; m * n];
        matmul(
            m,
            n,
            k,
            Mat::rows(&a, k),
            Mat::transposed(&bt, k),
            &mut c2,
            false,
            Par::Pool,
        );
        for (x, y) in c.iter().zip(&c2) {
            assert!((x - 1.0 - y).abs() < 1e-5);
        }
    }
}
