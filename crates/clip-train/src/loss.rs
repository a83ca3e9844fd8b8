//! The contrastive objectives over the image–text similarity matrix: CLIP's symmetric
//! cross-entropy (open_clip's `ClipLoss`) and SigLIP's pairwise sigmoid loss (Zhai et al. 2023,
//! open_clip's `SigLipLoss`).

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};

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

/// SigLIP's loss: every (image, text) pair is an independent binary classification, positive on
/// the diagonal: `-Σ log σ(yᵢⱼ · (s · imgᵢ·txtⱼ + b)) / N` with `y = 2I - 1`. `image` and `text`
/// are `[N, D]` L2-normalised features; `scale` is `exp(logit_scale)` and `bias` the logit bias,
/// both `[1]` tensors.
pub fn sigmoid_loss(
    image: Tensor<2>,
    text: Tensor<2>,
    scale: Tensor<1>,
    bias: Tensor<1>,
) -> Tensor<1> {
    let n = image.dims()[0];
    let logits = image.matmul(text.transpose()) * scale.unsqueeze() + bias.unsqueeze(); // [N, N]
    let labels = Tensor::<2>::eye(n, &logits.device()) * 2.0 - 1.0;
    log_sigmoid(labels * logits).sum() * (-1.0 / n as f64)
}

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// CLIP's softmax contrastive loss
    #[default]
    Clip,
    /// SigLIP's sigmoid loss (needs the model's logit bias)
    Siglip,
}

impl Objective {
    /// The loss of a batch of normalised features. The sigmoid loss uses the model's logit bias
    /// (a training config for it always builds one; without, the bias is 0).
    pub fn loss(
        self,
        image: Tensor<2>,
        text: Tensor<2>,
        scale: Tensor<1>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<1> {
        match self {
            Objective::Siglip => {
                let bias = bias.unwrap_or_else(|| scale.zeros_like());
                sigmoid_loss(image, text, scale, bias)
            }
            Objective::Clip => clip_loss(image, text, scale),
        }
    }
}
