//! Fused CPU kernels with hand-written backward passes for the training forward.
//!
//! candle 0.11.1's fused RMSNorm / softmax / RoPE kernels have no backward (they cut the graph,
//! see [`crate::model`]), and composing them from primitive tensor ops costs ~10 allocations and
//! passes each (the backward of one GRPO step was 3× slower that way). These custom ops run one
//! pass forward and one or two passes backward, parallelised over rows.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Shape, Tensor};

use crate::error::Result;

type CResult<T> = candle_core::Result<T>;

/// Contiguous f32 view of a storage.
fn view<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(Error::Msg(format!("{op}: input must be contiguous"))),
    }
}

/// Runs `f(row_index, out_row)` over output rows of length `row_len`, split across the
/// available cores.
fn par_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len() / row_len.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = rows.div_ceil(threads).max(1);
    if threads == 1 || rows < 64 {
        for (r, o) in out.chunks_mut(row_len.max(1)).enumerate() {
            f(r, o);
        }
        return;
    }
    std::thread::scope(|s| {
        for (c, chunk) in out.chunks_mut(per * row_len).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (k, o) in chunk.chunks_mut(row_len).enumerate() {
                    f(c * per + k, o);
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Causal softmax

/// `softmax(scale · x)` over the last dim of `(…, q_len, k_len)` scores, where query `i` sees
/// keys `j ≤ pos + i` (masked entries are exactly 0). `pos` is the number of cached positions
/// before the queries.
pub fn causal_softmax(scores: &Tensor, scale: f64, pos: usize) -> Result<Tensor> {
    let dims = scores.dims();
    if dims.len() < 2 {
        return Err(crate::GrpoError::invalid(
            "causal_softmax needs (…, q, k) scores",
        ));
    }
    let (q_len, k_len) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    Ok(scores.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
        pos,
        q_len,
        k_len,
    })?)
}

#[derive(Clone, Copy)]
struct CausalSoftmax {
    scale: f32,
    pos: usize,
    q_len: usize,
    k_len: usize,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "tg-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = view(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        let (n, q, scale, pos) = (self.k_len, self.q_len, self.scale, self.pos);
        par_rows(&mut out, n, |r, o| {
            let row = &x[r * n..(r + 1) * n];
            let visible = (pos + r % q + 1).min(n);
            let max = row[..visible]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
            let mut sum = 0f32;
            for (oj, &xj) in o[..visible].iter_mut().zip(&row[..visible]) {
                *oj = (xj * scale - max).exp();
                sum += *oj;
            }
            let inv = 1.0 / sum;
            o[..visible].iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let g = grad.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(&g, &SoftmaxBwd(*self))?))
    }
}

/// dx = scale · y ⊙ (g − Σ_k g_k y_k), row-wise.
struct SoftmaxBwd(CausalSoftmax);

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "tg-causal-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let y = view(s1, l1, self.name())?;
        let g = view(s2, l2, self.name())?;
        let n = self.0.k_len;
        let scale = self.0.scale;
        let mut out = vec![0f32; y.len()];
        par_rows(&mut out, n, |r, o| {
            let (yr, gr) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((oj, &yj), &gj) in o.iter_mut().zip(yr).zip(gr) {
                *oj = scale * yj * (gj - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `x / sqrt(mean(x²) + eps) · w` over the last dim of `(rows, d)`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })?)
}

#[derive(Clone, Copy)]
struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "tg-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = view(s1, l1, self.name())?;
        let w = view(s2, l2, self.name())?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, d, |r, o| {
            let row = &x[r * d..(r + 1) * d];
            let inv = self.inv_rms(row);
            for ((oj, &xj), &wj) in o.iter_mut().zip(row).zip(w) {
                *oj = xj * inv * wj;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let gx = x.apply_op3_no_bwd(w, &g, &RmsNormBwdX(*self))?;
        let gw = x.apply_op2_no_bwd(&g, &RmsNormBwdW(*self))?;
        Ok((Some(gx), Some(gw)))
    }
}

/// dx = r · (g⊙w − x̂ · mean(g⊙w⊙x̂)), x̂ = x·r, r = 1/rms(x).
struct RmsNormBwdX(RmsNorm);

impl CustomOp3 for RmsNormBwdX {
    fn name(&self) -> &'static str {
        "tg-rms-norm-bwd-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = view(s1, l1, self.name())?;
        let w = view(s2, l2, self.name())?;
        let g = view(s3, l3, self.name())?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, d, |r, o| {
            let (xr, gr) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            let inv = self.0.inv_rms(xr);
            let dot = xr
                .iter()
                .zip(gr)
                .zip(w)
                .map(|((xj, gj), wj)| gj * wj * xj * inv)
                .sum::<f32>()
                / d as f32;
            for (((oj, &xj), &gj), &wj) in o.iter_mut().zip(xr).zip(gr).zip(w) {
                *oj = inv * (gj * wj - xj * inv * dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// dw = Σ_rows g ⊙ x̂.
struct RmsNormBwdW(RmsNorm);

impl CustomOp2 for RmsNormBwdW {
    fn name(&self) -> &'static str {
        "tg-rms-norm-bwd-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = view(s1, l1, self.name())?;
        let g = view(s2, l2, self.name())?;
        let d = *l1
            .shape()
            .dims()
            .last()
            .ok_or_else(|| Error::Msg("rms-norm-bwd-w: scalar input".into()))?;
        // f64 accumulation: the sum runs over every token of the micro-batch.
        let mut acc = vec![0f64; d];
        for (xr, gr) in x.chunks(d).zip(g.chunks(d)) {
            let inv = self.0.inv_rms(xr);
            for ((a, &xj), &gj) in acc.iter_mut().zip(xr).zip(gr) {
                *a += f64::from(gj * xj * inv);
            }
        }
        let out: Vec<f32> = acc.into_iter().map(|v| v as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from(d)))
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

/// Half-split ("neox") RoPE of `(batch, heads, seq, head_dim)`: pairs `i` and `i + head_dim/2`
/// rotate by the angle whose cos/sin are `cos[t, i]`, `sin[t, i]` (`(seq, head_dim/2)`).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { inverse: false },
    )?)
}

#[derive(Clone, Copy)]
struct Rope {
    /// Rotate by −angle (the backward pass: a rotation's transpose is its inverse).
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "tg-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = view(s1, l1, self.name())?;
        let cos = view(s2, l2, self.name())?;
        let sin = view(s3, l3, self.name())?;
        let dims = l1.shape().dims();
        let (t, hd) = match dims {
            [_, _, t, hd] => (*t, *hd),
            _ => return Err(Error::Msg("tg-rope: expected (b, h, t, d)".into())),
        };
        let half = hd / 2;
        if cos.len() < t * half || sin.len() < t * half {
            return Err(Error::Msg("tg-rope: cos/sin tables too short".into()));
        }
        let sign = if self.inverse { -1.0f32 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, hd, |r, o| {
            let row = &x[r * hd..(r + 1) * hd];
            let p = (r % t) * half;
            let (o1, o2) = o.split_at_mut(half);
            for i in 0..half {
                let (c, s) = (cos[p + i], sign * sin[p + i]);
                let (a, b) = (row[i], row[i + half]);
                o1[i] = a * c - b * s;
                o2[i] = b * c + a * s;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inv = Rope {
            inverse: !self.inverse,
        };
        let gx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &inv)?;
        Ok((Some(gx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_add(0x9E3779B97F4A7C15);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Forward value and gradient of `Σ f(x) ⊙ probe` for the fused op and a composed
    /// reference built from differentiable primitives.
    fn check(
        fused: impl Fn(&Tensor) -> Tensor,
        reference: impl Fn(&Tensor) -> Tensor,
        x: Tensor,
        tol: f32,
    ) {
        let probe = rand(x.dims(), 99);
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let v = Var::from_tensor(&x).unwrap();
            let y = f(v.as_tensor());
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, g.get(v.as_tensor()).unwrap().clone())
        };
        let (y1, g1) = run(&fused);
        let (y2, g2) = run(&reference);
        assert!(max_diff(&y1, &y2) < tol, "forward {}", max_diff(&y1, &y2));
        assert!(max_diff(&g1, &g2) < tol, "backward {}", max_diff(&g1, &g2));
    }

    #[test]
    fn causal_softmax_matches_composed() {
        for pos in [0usize, 3] {
            let (q, k) = (5, 5 + pos);
            let mask: Vec<f32> = (0..q)
                .flat_map(|i| {
                    (0..k).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (q, k), &Device::Cpu).unwrap();
            check(
                |x| causal_softmax(x, 0.5, pos).unwrap(),
                |x| {
                    let s = (x * 0.5).unwrap().broadcast_add(&mask).unwrap();
                    candle_nn::ops::softmax(&s, D::Minus1).unwrap()
                },
                rand(&[2, 3, q, k], pos as u64),
                1e-5,
            );
        }
    }

    #[test]
    fn rms_norm_matches_composed_for_x_and_w() {
        let w = Var::from_tensor(&(rand(&[8], 5) + 1.5).unwrap()).unwrap();
        check(
            |x| rms_norm(x, w.as_tensor(), 1e-5).unwrap(),
            |x| {
                let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                x.broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(w.as_tensor())
                    .unwrap()
            },
            rand(&[6, 8], 1),
            1e-5,
        );
        // Gradient of the gain.
        let x = rand(&[6, 8], 2);
        let probe = rand(&[6, 8], 3);
        let gw = |f: &dyn Fn() -> Tensor| {
            let y = f();
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            g.get(w.as_tensor()).unwrap().clone()
        };
        let a = gw(&|| rms_norm(&x, w.as_tensor(), 1e-5).unwrap());
        let b = gw(&|| {
            let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            x.broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(w.as_tensor())
                .unwrap()
        });
        assert!(max_diff(&a, &b) < 1e-5);
    }

    #[test]
    fn rope_matches_candle_slow_rope_and_its_gradient() {
        let cos = rand(&[4, 3], 7);
        let sin = rand(&[4, 3], 8);
        check(
            |x| rope(x, &cos, &sin).unwrap(),
            |x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap(),
            rand(&[2, 3, 4, 6], 9),
            1e-5,
        );
        // Forward also agrees with candle's fused kernel.
        let x = rand(&[1, 2, 4, 6], 10);
        let a = rope(&x, &cos, &sin).unwrap();
        let b = candle_nn::rotary_emb::rope(&x, &cos, &sin).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }

    #[test]
    fn many_rows_take_the_threaded_path() {
        // > 64 rows so par_rows splits the work; results equal the serial reference.
        let x = rand(&[4, 9, 70, 70], 11);
        let a = causal_softmax(&x, 0.125, 0).unwrap();
        let b = candle_nn::ops::softmax(
            &(&x * 0.125)
                .unwrap()
                .broadcast_add(
                    &Tensor::from_vec(
                        (0..70)
                            .flat_map(|i| {
                                (0..70).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })
                            })
                            .collect::<Vec<f32>>(),
                        (70, 70),
                        &Device::Cpu,
                    )
                    .unwrap(),
                )
                .unwrap(),
            D::Minus1,
        )
        .unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }
}
