use burn::prelude::*;
use std::time::Instant;
fn main() {
    let d = clip_model::cpu();
    for (m, k, n) in [(160, 512, 2048), (800, 768, 3072), (800, 768, 2304), (800, 3072, 768)] {
        let a = Tensor::<2>::random([m, k], burn::tensor::Distribution::Default, &d);
        let b = Tensor::<2>::random([k, n], burn::tensor::Distribution::Default, &d);
        let _ = a.clone().matmul(b.clone()).into_data();
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps { let c = a.clone().matmul(b.clone()); std::hint::black_box(c.into_data()); }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!("burn {m}x{k}x{n}: {:.1} GFLOP/s", 2.0 * (m * k * n) as f64 / s / 1e9);
    }
}
