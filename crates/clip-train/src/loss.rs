//! CLIP's symmetric cross-entropy over the image–text similarity matrix (open_clip's `ClipLoss`).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean of the image→text and text→image cross-entropies, where the matching pairs are the
/// diagonal. `image` and `text` are `[N, D]` L2-normalised features; `scale` is `exp(logit_scale)`
/// as a `[1]` tensor.
pub fn clip_loss(image: Tensor<2>, text: Tensor<2>, scale: Tensor<1>) -> Tensor<1> {
    let n = image.dims()[0];
    let logits = image.matmul(text.transpose()) * scale.unsqueeze(); // [N, N] logits_per_image
    let eye = Tensor::<2>::eye(n, &logits.device());
    let per_image = (log_softmax(logits.clone(), 1) * eye.clone()).sum(); // Σ log p(text_i | image_i)
    let per_text = (log_softmax(logits, 0) * eye).sum(); // Σ log p(image_i | text_i)
    (per_image + per_text) * (-0.5 / n as f64)
}
