//! ConVIRT's sentence sampling (Zhang et al. 2020), which CLIP dropped because its captions are
//! mostly one sentence: each visit to an image draws one of its captions at random, so an epoch
//! is one pass over the images. The default data order instead visits every (image, caption)
//! pair, so images with more captions are seen more often.

use clip_data::Rgb8;
use clip_data::image::load_rgb;
use clip_data::manifest::Manifest;
use clip_data::rng::Rng;

use crate::trainer::PairSource;

/// A manifest's images, each with all of its captions.
pub struct SentenceSampled {
    images: Vec<(std::path::PathBuf, Vec<String>)>,
    alpha: clip_data::image::Alpha,
    seed: u64,
}

impl SentenceSampled {
    /// Group `m`'s pairs by image (in first-appearance order); `seed` drives the caption draws.
    pub fn new(m: &Manifest, seed: u64) -> SentenceSampled {
        let mut images: Vec<(std::path::PathBuf, Vec<String>)> = Vec::new();
        let mut at = std::collections::HashMap::new();
        for (path, caption) in &m.pairs {
            let i = *at.entry(path.clone()).or_insert_with(|| {
                images.push((path.clone(), Vec::new()));
                images.len() - 1
            });
            images[i].1.push(caption.clone());
        }
        SentenceSampled {
            images,
            alpha: m.alpha,
            seed,
        }
    }

    /// The caption drawn for the `visit`-th use of image `i` (a pure function of the seed).
    pub fn caption(&self, i: usize, visit: u64) -> &str {
        let caps = &self.images[i].1;
        let mut rng =
            Rng::new(self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9) ^ visit.rotate_left(32));
        &caps[rng.below(caps.len())]
    }
}

impl PairSource for SentenceSampled {
    fn len(&self) -> Option<u64> {
        Some(self.images.len() as u64)
    }

    fn pair(&self, index: u64) -> Result<(Rgb8, String), String> {
        self.pair_at(index, index)
    }

    /// Image `index` with the caption drawn for data position `position` (every visit draws anew).
    fn pair_at(&self, index: u64, position: u64) -> Result<(Rgb8, String), String> {
        let i = (index % self.images.len().max(1) as u64) as usize;
        let (path, _) = self.images.get(i).ok_or("the manifest has no images")?;
        let img = load_rgb(path, self.alpha).map_err(|e| e.to_string())?;
        Ok((img, self.caption(i, position).to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_visit_draws_one_of_the_image_s_captions() {
        let m = Manifest {
            pairs: vec![
                ("a.png".into(), "one".into()),
                ("b.png".into(), "solo".into()),
                ("a.png".into(), "two".into()),
                ("a.png".into(), "three".into()),
            ],
            alpha: clip_data::image::Alpha::FlattenOnWhite,
        };
        let s = SentenceSampled::new(&m, 0);
        assert_eq!(s.len(), Some(2), "an epoch is one pass over the images");
        let drawn: std::collections::BTreeSet<&str> = (0..60).map(|v| s.caption(0, v)).collect();
        assert_eq!(
            drawn.into_iter().collect::<Vec<_>>(),
            ["one", "three", "two"]
        );
        assert!((0..10).all(|v| s.caption(1, v) == "solo"));
        assert_eq!(s.caption(0, 7), s.caption(0, 7));
    }
}
